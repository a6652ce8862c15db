"""Helpers shared by the training tests (single- and multi-animal): the small demo's tables, tiny
CPU params, the check that MLflow's history equals DLC's learning_stats.csv, and a training killed
after its first complete snapshot (to test resume)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.train import TrainParams
from poseops.tracking.runs import learning_stats_as_mlflow


def small_tables(small_demo_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(consensus labels, split, DLC project) of the small demo (``small_demo_root`` fixture):
    a 60/20/20 split without stratification."""
    from poseops.config.data import SplitParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split

    project = small_demo_root / "raw" / "demo"
    labels = build_consensus(ingest_project(project, small_demo_root / "metadata" / "videos.csv"))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    return labels, split, project


def tiny(epochs: int = 3, **kw: object) -> TrainParams:
    """Random init on the CPU, a snapshot every epoch, a short wait for MLflow."""
    base = dict(
        epochs=epochs, batch_size=8, pretrained=False, device="cpu", save_epochs=1,
        experiment="t", registered_model="t-model", tracking_timeout_s=5.0,
    )
    base.update(kw)
    return TrainParams(**base)  # type: ignore[arg-type]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_history_equals_stats(client, run_id: str, stats: pd.DataFrame) -> None:
    """One MLflow point per epoch for every learning_stats.csv column, same value."""
    named = learning_stats_as_mlflow(stats)
    steps = named["step"].astype(int).tolist()
    assert steps == list(range(1, len(steps) + 1))
    for col in named.columns.drop("step"):
        hist = history(client, run_id, col)
        assert [s for s, _ in hist] == steps, col
        expected = named[col].to_numpy(float)
        np.testing.assert_allclose([v for _, v in hist], expected, rtol=1e-6, equal_nan=True)


_CHILD = """
import sys, json, pandas as pd
from pathlib import Path
from poseops.config.train import TrainParams
from poseops.train.trainer import train_model
a = json.loads(sys.argv[1])
train_model(TrainParams(**a["params"]), pd.read_parquet(a["labels"]), pd.read_csv(a["split"]),
            Path(a["project"]), Path(a["workdir"]), tracking_uri=a["uri"])
"""


def _readable(path: Path) -> bool:
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
        return True
    except Exception:  # noqa: BLE001 - still being written
        return False


def train_killed_after_first_snapshot(
    params: TrainParams, labels: pd.DataFrame, split: pd.DataFrame, project: Path, tmp_path: Path,
    timeout_s: float = 300,
) -> tuple[Path, str, pd.DataFrame]:
    """Train in a child process and SIGKILL it once a snapshot is complete.

    Returns (workdir, tracking uri, learning_stats.csv at the kill), after checking the kill came
    before the last epoch and left run.json saying "running"."""
    labels.to_parquet(tmp_path / "labels.parquet")
    split.to_csv(tmp_path / "split.csv", index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "train"
    arg = {
        "params": dataclasses.asdict(params), "labels": str(tmp_path / "labels.parquet"),
        "split": str(tmp_path / "split.csv"), "project": str(project), "workdir": str(work),
        "uri": uri,
    }
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(arg)], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and child.poll() is None:  # kill once a snapshot is complete
        snaps = list(work.glob("project/dlc-models-pytorch/*/*/train/snapshot-*.pt"))
        if snaps and _readable(snaps[0]):
            break
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait()
    stats = pd.read_csv(next(work.glob("project/dlc-models-pytorch/*/*/train/learning_stats.csv")))
    assert 1 <= stats["step"].max() < params.epochs, "the kill came too late to test a resume"
    assert json.loads((work / "run.json").read_text())["status"] == "running"
    return work, uri, stats


def evaluate_store_copy(trained_demo, tmp_path: Path, monkeypatch) -> tuple[str, object, dict]:
    """Copy the ``trained_demo`` fixture's MLflow store (the session fixture stays untouched),
    point MLFLOW_TRACKING_URI at the copy and compute evaluate's tables and outputs for the
    selected snapshot under ``tmp_path``: (uri, Evaluation, written paths)."""
    import shutil

    import poseops.commands.evaluate as E
    from poseops.config.evaluate import EvaluateParams
    from poseops.core import schema as S
    from poseops.dlc.inference import predict
    from poseops.evaluate.tables import evaluate_tables

    db = tmp_path / "mlflow.db"
    src_db = Path(trained_demo.tracking_uri.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src_db}{suffix}").exists():
            shutil.copy(f"{src_db}{suffix}", f"{db}{suffix}")
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tr = trained_demo.result
    params = EvaluateParams(out=str(tmp_path / "eval"), metrics=str(tmp_path / "metrics.json"),
                            plots=str(tmp_path / "plots"), device="cpu")
    images = sorted({i for s in S.SPLITS for i in tr.images[s]})
    preds = predict(tr.pytorch_config_path, tr.snapshot, tr.config_path.parent, images)
    ev = evaluate_tables(trained_demo.labels, preds, trained_demo.split, tr.learning_stats, params)
    return uri, ev, E.write_outputs(ev, params)
