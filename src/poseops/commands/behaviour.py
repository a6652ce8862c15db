"""`poseops behaviour`: analyzed videos -> trajectory quality, behavioural endpoints, agreement
with a manual scoring and condition effects (issue 23).

Reads params ``behaviour`` (what and how), ``analyze`` (the model that analyzed the videos) and
``project.metadata`` (conditions); the work is :func:`poseops.behaviour.stage.run_behaviour`.
Logs the tables, figures and headline metrics to the model's MLflow run (``behaviour/``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from poseops.behaviour.stage import Model, run_behaviour
from poseops.behaviour.tables import BehaviourTables
from poseops.config.behaviour import FILTER_TYPES
from poseops.config.pipeline import PipelineParams

log = logging.getLogger(__name__)


def _model(cfg: PipelineParams) -> tuple[Model | None, str | None]:
    """(the analyzing model, the training's MLflow run id) from params analyze / run.json."""
    a = cfg.analyze
    info: dict = {}
    run_json = Path(a.train_workdir) / "run.json"
    if run_json.is_file():
        info = json.loads(run_json.read_text())
    config = a.config or info.get("config_path")
    shuffle = a.shuffle if a.shuffle is not None else info.get("shuffle")
    model = Model(Path(config), int(shuffle)) if config and shuffle is not None else None
    return model, info.get("run_id")


def run(params_file: str | Path | None = None, filter: str | None = None,
        out: str | None = None, log_mlflow: bool | None = None) -> BehaviourTables:
    """params.yaml ``behaviour`` (``filter`` ("none" = no filter), ``out``, ``log_mlflow``
    override it) -> :func:`run_behaviour`. Returns the tables."""
    cfg = PipelineParams.load(params_file)
    params = cfg.behaviour
    if filter is not None:
        params.filter = None if filter == "none" else filter  # type: ignore[assignment]
    if out is not None:
        params.out = out
    if log_mlflow is not None:
        params.log_mlflow = log_mlflow
    meta = None
    if cfg.project.metadata is not None and Path(cfg.project.metadata).is_file():
        from poseops.data.metadata import read_metadata

        meta = read_metadata(cfg.project.metadata)
    model, run_id = _model(cfg)
    tables = run_behaviour(params, meta, model)
    if params.log_mlflow and run_id:
        _log_mlflow(tables, Path(params.out), run_id)
    elif params.log_mlflow:
        log.info("behaviour: no training run id (run.json): nothing logged to MLflow")
    return tables


def _log_mlflow(t: BehaviourTables, out: Path, run_id: str) -> None:
    """Tables and figures as artifacts ``behaviour/`` of the model's run, headline metrics."""
    import mlflow

    from poseops.tracking.runs import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    metrics: dict[str, float] = {}
    for name in ("quality_raw", "quality_filtered"):
        for k, v in (t.summary.get(name) or {}).items():
            if v is not None:
                metrics[f"behaviour.{name}.{k}"] = float(v)
    for e, vals in (t.summary.get("agreement") or {}).items():
        for k in ("icc2_1", "icc3_1", "ba_bias"):
            if vals.get(k) is not None:
                metrics[f"behaviour.{e}.{k}"] = float(vals[k])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(out), artifact_path="behaviour")
        mlflow.log_metrics(metrics)
        mlflow.set_tag("behaviour.filter", str(t.summary.get("filter")))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("behaviour", help="trajectory quality, behavioural endpoints, agreement "
                       "with manual scoring, condition effects")
    p.add_argument("--filter", choices=["none", *FILTER_TYPES],
                   help="DLC filter (default: params behaviour.filter)")
    p.add_argument("--out", help="output folder (default: params behaviour.out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.params_file, filter=args.filter, out=args.out,
        log_mlflow=False if args.no_mlflow else None)
    return 0
