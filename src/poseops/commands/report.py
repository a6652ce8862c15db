"""`poseops report`: one self-contained HTML page per iteration (reports/report.html), built by
:func:`poseops.report.html.build_html` from the evaluate / validate-report / composition / train
outputs named in params.yaml, also logged to the training's MLflow run."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.config.train import TrainParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_text
from poseops.evaluate import diagnose as D
from poseops.report.html import ReportInputs, build_html
from poseops.report.sections import load_folder, load_iterations
from poseops.report.trajectories import load_trajectories
from poseops.train.record import read_run_json

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="one self-contained HTML report for the iteration")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.params)
    return 0


def run(params_file: str | None = None) -> Path:
    """The DVC stage: the stage outputs -> ``report.out``; the page also goes to MLflow."""
    cfg = PipelineParams.load(params_file)
    rp = cfg.report
    inp = load_inputs(cfg, rp.title)
    page = build_html(inp, rp.example_frames, rp.max_table_rows)
    path = write_text(page, rp.out)
    log.info("report: %s (%d kB)", path, len(page) // 1024)
    run_id = inp.context.get("run_id")
    if rp.log_mlflow and run_id:
        import mlflow

        from poseops.tracking.runs import quiet_env, tracking_uri

        quiet_env()
        mlflow.set_tracking_uri(tracking_uri())
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(path), artifact_path="report")
    return path


def load_inputs(cfg: PipelineParams, title: str | None = None) -> ReportInputs:
    """Read the evaluate / validate-report / validate / composition / train outputs named in
    params.yaml, and the optional inputs of ``report:`` (iterations, behaviour, ablation) that
    exist."""
    ep = cfg.evaluate
    out = Path(ep.out)
    need = [out / "summary.json", out / "errors.parquet", out / "stratified.csv",
            out / "diagnosis.json"]
    for p in need:
        if not p.exists():
            raise PoseopsError("evaluation output missing (run `poseops evaluate`)", file=p)
    summary = json.loads((out / "summary.json").read_text())
    curves, pck = _read_plots(Path(ep.plots))
    comp = cfg.composition
    comp_table, comp_metrics = Path(comp.table), Path(comp.metrics)
    vpath = Path(cfg.validate_report.out)
    tp = cfg.train
    run_info = read_run_json(Path(tp.workdir))
    bias = out / "condition_bias.csv"
    return ReportInputs(
        headline=summary["headline"],
        stratified=pd.read_csv(out / "stratified.csv"),
        errors=pd.read_parquet(out / "errors.parquet"),
        curves=curves,
        diagnosis=json.loads((out / "diagnosis.json").read_text()),
        pck=pck,
        bias=pd.read_csv(bias).fillna({"note": ""}) if bias.exists() else pd.DataFrame(),
        composition=pd.read_csv(comp_table) if comp_table.exists() else pd.DataFrame(),
        composition_metrics=json.loads(comp_metrics.read_text()) if comp_metrics.exists() else {},
        training=_training(summary, tp, run_info),
        validation=json.loads(vpath.read_text()) if vpath.exists() else None,
        project_dir=Path(summary["project_dir"]) if summary.get("project_dir") else None,
        title=f"{title or 'poseops iteration report'} (iteration {run_info.get('iteration', '?')})",
        context=summary,
        dataset_validation=_json_or_none(Path(cfg.validate.out)),
        visibility=pd.read_csv(out / "visibility.csv") if (out / "visibility.csv").exists()
        else pd.DataFrame(),
        iterations=load_iterations(cfg.report.iterations),
        behaviour=load_folder(cfg.report.behaviour),
        trajectories=load_trajectories(cfg.compare.out),  # compare --trajectories, if run
        ablation=load_folder(cfg.report.ablation),
    )


def _json_or_none(path: Path) -> dict[str, Any] | None:
    """An optional JSON input: None when absent, one-line error naming it when unreadable."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PoseopsError(f"report: cannot read JSON: {e}", file=path) from e


def _read_plots(plots: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The loss curves (epoch, train_loss, val_loss) and the PCK curve, long (split,
    threshold_px, pck), from the evaluate stage's DVC plot files (empty tables when absent)."""
    curves = pd.DataFrame(columns=[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS])
    if (plots / "loss_curves.csv").exists():
        curves = pd.read_csv(plots / "loss_curves.csv")
    pck = pd.DataFrame()
    if (plots / "pck_curve.csv").exists():
        wide = pd.read_csv(plots / "pck_curve.csv")
        pck = wide.melt(id_vars="threshold_px", var_name=S.SPLIT, value_name="pck")
    return curves, pck


def _training(summary: dict[str, Any], tp: TrainParams, run_info: dict[str, Any]
              ) -> dict[str, Any]:
    """The page's training table: setting -> value."""
    return {
        "run id": summary.get("run_id"),
        "snapshot": Path(str(summary.get("snapshot", ""))).name,
        "net type": tp.net_type, "epochs": tp.epochs, "batch size": tp.batch_size,
        "learning rate": tp.lr, "optimizer": tp.optimizer, "key metric": tp.key_metric,
        "pretrained": tp.pretrained, "dlc iteration": run_info.get("iteration"),
        "dataset version": run_info.get("dataset_version"),
        "selected epoch": (run_info.get("metrics") or {}).get("selected_epoch"),
        "frames train/val/test": "/".join(str(len((run_info.get("images") or {}).get(s, [])))
                                          for s in S.SPLITS),
    }
