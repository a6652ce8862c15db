"""`poseops consensus`: multi-labeler consensus labels and labeler quality control.

Reads params.yaml ``consensus`` and the labels table (``ingest.out``); writes the consensus parquet
(``consensus.out``), the labeler QC tables and heatmap under ``consensus.reports`` and the summary
JSON (DVC metrics); optionally logs the QC to MLflow. The computation is
:func:`poseops.data.consensus.analyse`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd

from poseops.config.data import ConsensusParams
from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.consensus import ConsensusResult, analyse
from poseops.data.labelers import plot_pairwise_heatmap

log = logging.getLogger(__name__)

REPORT_FILES = {
    "qc": "qc.csv",
    "pairwise": "pairwise.csv",
    "icc": "icc.csv",
    "drift": "drift.csv",
    "stop_rule": "stop_rule.csv",
}
HEATMAP = "pairwise_heatmap.png"
SWAPS_FILE = "identity_swaps.csv"  # multi-animal only


def write_outputs(res: ConsensusResult, p: ConsensusParams) -> dict[str, Path]:
    """Write the consensus parquet, the QC CSVs + heatmap under ``p.reports`` and the summary."""
    from poseops.core.fileio import write_csv, write_json, write_parquet

    paths = {"consensus": write_parquet(res.consensus, p.out)}
    reports = Path(p.reports)
    for name, fname in REPORT_FILES.items():
        paths[name] = write_csv(getattr(res, name), reports / fname)
    if res.identity_swaps is not None:
        paths["identity_swaps"] = write_csv(res.identity_swaps, reports / SWAPS_FILE)
    paths["heatmap"] = plot_pairwise_heatmap(res.pairwise, reports / HEATMAP)
    paths["summary"] = write_json(res.summary, p.summary)
    return paths


def log_to_mlflow(outputs: ConsensusResult | str | Path, summary: str | Path | None = None,
                  experiment: str | None = None) -> bool:
    """Log labeler QC to MLflow: summary numbers as metrics, the QC tables as artifacts
    (``labelers/``). ``outputs`` is a :class:`ConsensusResult` or the reports folder (then the
    summary JSON is read from ``summary``, default ``<reports>/../labelers_summary.json``).

    Logs into the active run; without one, into a new run (in ``experiment``, e.g. the training
    runs' ``train.experiment``, so it is listed beside them) only when ``MLFLOW_TRACKING_URI`` is
    set. Returns False (and logs nothing) when neither is the case.
    """
    import json
    import tempfile

    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    active = mlflow.active_run()
    if active is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        log.info("consensus: no MLflow run or tracking URI; labeler QC not logged")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(outputs, ConsensusResult):
            folder = Path(tmp)
            for name, fname in REPORT_FILES.items():
                getattr(outputs, name).to_csv(folder / fname, index=False)
            if outputs.identity_swaps is not None:
                outputs.identity_swaps.to_csv(folder / SWAPS_FILE, index=False)
            plot_pairwise_heatmap(outputs.pairwise, folder / HEATMAP)
            summ = outputs.summary
        else:
            folder = Path(outputs)
            spath = Path(summary) if summary else folder.parent / "labelers_summary.json"
            summ = json.loads(spath.read_text()) if spath.exists() else {}
        metrics = {
            f"labelers.{k}": float(v)
            for k, v in summ.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        run = active or mlflow.start_run(run_name="labeler-qc",
                                         experiment_id=_experiment_id(experiment))
        try:
            mlflow.log_metrics(metrics)
            mlflow.log_dict(summ, "labelers/summary.json")
            mlflow.log_artifacts(str(folder), artifact_path="labelers")
        finally:
            if active is None:
                mlflow.end_run()
    log.info("consensus: labeler QC logged to MLflow run %s", run.info.run_id)
    return True


def _experiment_id(name: str | None) -> str | None:
    """The id of experiment ``name`` (created like the training runs' one); None: MLflow's
    default. Not ``mlflow.set_experiment``: it leaves MLFLOW_EXPERIMENT_ID in the environment."""
    if not name:
        return None
    import mlflow

    from poseops.tracking.runs import ensure_experiment

    uri = mlflow.get_tracking_uri()
    return ensure_experiment(mlflow.tracking.MlflowClient(uri), name, uri)


def consensus_to_dlc(
    consensus: pd.DataFrame,
    project_dir: str | Path,
    scorer: str,
    bodyparts: list[str] | None = None,
    individuals: list[str] | None = None,
    unique_bodyparts: list[str] | None = None,
) -> list[Path]:
    """Write consensus labels as DLC ``labeled-data/<video>/CollectedData_<scorer>.h5`` (+ .csv)
    in ``project_dir``, one file per video (through poseops.dlc.files). DLC's training reads only the
    config scorer's file: pass that name. ``bodyparts`` fixes the column order (config order).
    Multi-animal consensus (an ``individual`` column) is written as DLC's 4-level frame;
    ``individuals`` and ``unique_bodyparts`` (config order) fix its columns. Returns the .h5
    paths written."""
    from poseops.dlc import files as dlcio

    S.require_columns(consensus, [S.IMAGE, S.VIDEO, S.BODYPART, S.X, S.Y], "consensus")
    df = consensus.drop(columns=[S.SCORER], errors="ignore")
    written = []
    for video, part in df.groupby(S.VIDEO, sort=True):
        wide = dlcio.labels_to_wide(
            part,
            scorer=scorer,
            bodyparts=bodyparts,
            individuals=individuals,
            unique_bodyparts=unique_bodyparts,
        )
        h5 = Path(project_dir) / "labeled-data" / str(video) / f"CollectedData_{scorer}.h5"
        written.append(dlcio.write_collected_data(wide, h5)[0])
    return written


def run(
    params: str | Path | None = None, labels: str | Path | None = None, mlflow: bool = False
) -> ConsensusResult:
    """Read the labels table, compute consensus + labeler QC, write every output; with
    ``mlflow`` also log the QC (see :func:`log_to_mlflow`; the train stage normally does it)."""
    cfg = PipelineParams.load(params)
    p = cfg.consensus
    path = Path(labels or cfg.ingest.out)
    if not path.exists():
        raise PoseopsError("labels table not found (run `poseops ingest` first)", file=path)
    res = analyse(pd.read_parquet(path), p)
    write_outputs(res, p)
    s = res.summary
    log.info(
        "consensus: %d images (%d multi-labeled), %d/%d annotations removed, ICC min %s, "
        "flagged bias %s, enough labelers: %s",
        s["n_images"],
        s["n_images_multi_labeled"],
        s["n_removed"],
        s["n_points_multi_labeled"],
        s["icc_min"],
        s["flagged_bias"] or "none",
        s["enough_labelers"],
    )
    if "n_identity_swaps" in s:
        log.info(
            "consensus: identity swaps re-matched per labeler %s -> %s",
            s["identity_swaps"],
            Path(p.reports) / SWAPS_FILE,
        )
    if mlflow:
        log_to_mlflow(res, experiment=cfg.train.experiment)
    return res


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "consensus", help="merge several labelers into consensus labels + labeler QC"
    )
    sp.add_argument("--params", default=None, help="params.yaml (default: ./params.yaml)")
    sp.add_argument("--labels", default=None, help="labels parquet (default: params ingest.out)")
    sp.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the labeler QC to MLflow (active run or MLFLOW_TRACKING_URI)",
    )
    sp.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params, a.labels, a.mlflow)
    return 0
