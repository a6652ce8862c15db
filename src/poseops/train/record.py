"""What a training leaves behind, read back for later stages: ``<workdir>/run.json``, DLC's
snapshots and learning_stats.csv, as a :class:`TrainResult`.

run.json (written atomically by the trainer) holds the MLflow run id, the model URI/version,
the working project's paths, the images per split, the status (running | interrupted | failed |
pruned | complete), the resume fingerprint and the validation metrics of the selected snapshot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json

log = logging.getLogger(__name__)

RUN_JSON = "run.json"


@dataclass
class TrainResult:
    """What a training produced. Snapshots are DLC .pt files in ``model_dir/train``; ``metrics``
    are the validation metrics (MLflow names, e.g. val.rmse, val.total_loss) at the selected
    snapshot's epoch, plus ``selected_epoch``."""

    config_path: Path
    shuffle: int
    trainset_index: int
    model_dir: Path
    pytorch_config_path: Path
    best_snapshot: Path | None
    last_snapshot: Path | None
    learning_stats: pd.DataFrame = field(repr=False)  # DLC's learning_stats.csv (step + metrics)
    run_id: str | None
    metrics: dict[str, float]  # validation metrics at the selected snapshot (MLflow names)
    images: dict[str, list[str]] = field(repr=False)  # split -> image paths (train, val, test)
    model_uri: str | None = None
    model_version: str | None = None
    workdir: Path | None = None
    tracking_pending: int = 0  # MLflow operations still buffered (server unreachable)
    timings: dict[str, float] = field(default_factory=dict)  # prepare_s, train_s, finalize_s

    @property
    def snapshot(self) -> Path | None:
        """The snapshot wrapped as the MLflow model (best, else last)."""
        return self.best_snapshot or self.last_snapshot


def single_scorer(labels: pd.DataFrame) -> pd.DataFrame:
    """The labels of one scorer: the table itself when it has one, else its ``consensus`` rows
    (labels table: image, bodypart, x, y, scorer, ...)."""
    scorers = labels[S.SCORER].unique()
    if len(scorers) == 1:
        return labels
    if S.CONSENSUS_SCORER in scorers:
        return labels[labels[S.SCORER] == S.CONSENSUS_SCORER]
    raise PoseopsError(
        f"labels table has several scorers {sorted(scorers)} and no {S.CONSENSUS_SCORER!r}: "
        "run the consensus stage first"
    )


def read_run_json(workdir: Path) -> dict[str, Any]:
    """``<workdir>/run.json`` as a dict; {} when missing or unreadable (a kill while writing)."""
    path = Path(workdir) / RUN_JSON
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def write_run_json(info: dict[str, Any], workdir: Path) -> None:
    """Write ``<workdir>/run.json`` atomically."""
    write_json(info, Path(workdir) / RUN_JSON)


def find_snapshots(train_dir: Path) -> tuple[Path | None, Path | None]:
    """(best, last) DLC snapshot in a train folder; None where there is none."""
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    snaps = list_snapshots(train_dir, "snapshot", best_in_last=False)
    bests = [s for s in snaps if s.best]
    best = bests[-1].path if bests else None
    last = max(snaps, key=lambda s: s.epochs).path if snaps else None
    return best, last


def read_learning_stats(train_dir: Path) -> pd.DataFrame:
    """DLC's learning_stats.csv (one row per epoch: step + losses/metrics); empty when absent."""
    path = Path(train_dir) / "learning_stats.csv"
    if not path.exists():
        return pd.DataFrame({"step": pd.Series(dtype=int)})
    return pd.read_csv(path)


def metrics_at(stats: pd.DataFrame, epoch: int) -> dict[str, float]:
    """The validation metrics (MLflow names, ``val.*``) of learning_stats' row for ``epoch``."""
    from poseops.tracking.runs import mlflow_key

    rows = stats[stats["step"] == epoch]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    return {mlflow_key(k): float(v) for k, v in row.items() if k != "step" and pd.notna(v) and "val." in mlflow_key(k)}


def load_result(workdir: str | Path) -> TrainResult:
    """The TrainResult of a finished training, from `<workdir>/run.json` (for later stages)."""
    workdir = Path(workdir)
    info = read_run_json(workdir)
    if not info:
        raise PoseopsError("no training here (run.json missing): run `poseops train`", file=workdir / RUN_JSON)
    train_dir = Path(info["pytorch_config_path"]).parent
    best, last = find_snapshots(train_dir)
    return TrainResult(
        config_path=Path(info["config_path"]),
        shuffle=int(info["shuffle"]),
        trainset_index=int(info["trainset_index"]),
        model_dir=Path(info["model_dir"]),
        pytorch_config_path=Path(info["pytorch_config_path"]),
        best_snapshot=best,
        last_snapshot=last,
        learning_stats=read_learning_stats(train_dir),
        run_id=info.get("run_id"),
        metrics=info.get("metrics") or {},
        images=info.get("images") or {},
        model_uri=info.get("model_uri"),
        model_version=info.get("model_version"),
        workdir=workdir,
        tracking_pending=int(info.get("tracking_pending") or 0),
    )
