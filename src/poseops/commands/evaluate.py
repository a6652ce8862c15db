"""`poseops evaluate`: predictions of the selected snapshot for every train/val/test image, the
per-keypoint error table, the stratified error table, condition-bias tests, loss-curve diagnosis,
DVC metrics/plots and MLflow logging.

Outputs (`evaluate.out`, default data/eval/):
    predictions.parquet   image, bodypart, x, y, likelihood, snapshot
    errors.parquet        one row per (image, bodypart): poseops.evaluate.metrics errors table
    stratified.csv        long table (stratum_type, stratum, split, n, mean_px, rmse_px, ...)
    condition_bias.csv    ANOVA / Kruskal-Wallis of test error by condition, animal, on
                          per-video means (evaluate.bias_unit; n_units, n_frames, note)
    diagnosis.json        diagnosis from the loss curves and the train/val/test errors (kind,
                          reason, actions, stats)
    summary.json          headline metrics + context (snapshot, project, run id) for the report
    identity.csv          multi-animal only: per image, animals labeled / predicted / matched /
                          missed / false positive / identity swaps
                          (poseops.evaluate.matching.identity_table)
    visibility.csv        per split x bodypart (and bodypart ``all``): keypoints predicted above
                          pcutoff vs labeled (tp, fp, fn, tn, precision, recall)
    cohorts.csv           split.cohorts only: the test set and each generalisation cohort (split
                          ``cohort:<name>``) side by side, with the drop vs test (rmse_drop_px,
                          rmse_drop_pct, mean_drop_px, mean_drop_pct; poseops.evaluate.tables.
                          cohort_table); metrics.json gains a ``cohort:<name>`` entry per cohort
Multi-animal projects (consensus with an ``individual`` column): predictions are every assembly
the model returns (``assembly``; -1 the unique bodyparts), matched to labeled animals as DLC's
``evaluate_network`` matches them (``individual``, ``oks``); the headline adds DLC's own ``mAP``,
``mAR``, ``dlc_rmse_px`` (after matching) and the identity counts per split.
`evaluate.metrics` (reports/metrics.json): headline numbers per split (DVC metrics), among them
``pck_auc`` (normalised area under the PCK curve), ``visibility_precision`` /
``visibility_recall`` and DLC's OKS ``mAP`` / ``mAR`` (single- and multi-animal).
`evaluate.plots` (reports/plots/): loss_curves.csv, pck_curve.csv, error_by_bodypart.csv,
error_by_condition.csv (DVC plots, see dvc.yaml).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.evaluate import EvaluateParams
from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json, write_parquet
from poseops.dlc.inference import predict_with_cohorts, project_individuals, project_pcutoff
from poseops.evaluate import diagnose as D
from poseops.evaluate.matching import is_multianimal
from poseops.evaluate.tables import Evaluation, evaluate_tables, flat_metrics, plot_tables
from poseops.train.record import TrainResult, load_result, single_scorer

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="errors of the selected snapshot, stratified")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.params)
    return 0


def run(params_file: str | None = None) -> Evaluation:
    """The DVC stage: data/train (selected snapshot) + consensus + split -> data/eval + reports."""
    cfg = PipelineParams.load(params_file)
    params = cfg.evaluate
    # the diagnosis judges the train-test gap by the metric validation's limits (same numbers)
    vr = cfg.validate_report
    params.diagnosis = {**D.thresholds_from_validate_report(asdict(vr)), **params.diagnosis}
    tparams = cfg.train
    labels_path = Path(cfg.consensus.out)
    split_path = Path(cfg.split.out)
    for p in (labels_path, split_path):
        if not p.exists():
            raise PoseopsError("input missing (run the earlier stages: dvc repro)", file=p)
    tr = load_result(tparams.workdir)
    snapshot = Path(params.snapshot) if params.snapshot else tr.snapshot
    if snapshot is None:
        raise PoseopsError("the training has no snapshot", file=tr.model_dir)
    labels = single_scorer(pd.read_parquet(labels_path))
    split = pd.read_csv(split_path)
    multi = is_multianimal(labels)
    preds = predict_images(tr, snapshot, split, cfg.project.path, params, multi)
    ev = evaluate_tables(labels, preds, split, tr.learning_stats, params,
                         project_pcutoff(tr.config_path),
                         project_individuals(tr.config_path) if multi else None,
                         metadata_file=cfg.project.metadata)
    ev.context.update(snapshot=str(snapshot), project_dir=str(tr.config_path.parent),
                      run_id=tr.run_id, pytorch_config=str(tr.pytorch_config_path),
                      train_workdir=str(tr.workdir))
    paths = write_outputs(ev, params)
    if params.log_mlflow and tr.run_id:
        log_to_mlflow(ev, paths, tr.run_id, tparams.registered_model, tr.model_version,
                      model_uri=tr.model_uri, frames=held_out_frames(labels, tr.images))
    elif params.log_mlflow:
        log.warning("no MLflow run id in the training (tracking was offline): not logged")
    _log_summary(ev, multi)
    return ev


def predict_images(tr: TrainResult, snapshot: Path, split: pd.DataFrame, source_project: str | Path,
                   params: EvaluateParams, multi: bool = False) -> pd.DataFrame:
    """Predictions of the training's train / val / test images (in its working project) and of
    the generalisation cohorts' images (split values ``cohort:<name>``: never in the working
    project, read from ``source_project``, the labeled project)."""
    held = sorted(split.loc[split[S.SPLIT].map(S.is_cohort), S.IMAGE])  # split.cohorts
    images = sorted({i for s in S.SPLITS for i in (tr.images.get(s) or [])} - set(held))
    if not images:
        raise PoseopsError("the training lists no images (run.json)", file=tr.workdir)
    log.info("predicting %d images with %s", len(images), snapshot)
    return predict_with_cohorts(tr.pytorch_config_path, snapshot, tr.config_path.parent, images,
                                held, source_project, batch_size=params.batch_size,
                                device=params.device, multi_animal=multi)


def _log_summary(ev: Evaluation, multi: bool) -> None:
    t = ev.headline.get(S.TEST, {})
    log.info("test: rmse %.2f px, mean (DLC 'rmse') %.2f px; diagnosis %s",
             t.get("rmse_px", np.nan), t.get("mean_px", np.nan), ev.diagnosis.kind)
    if multi:
        log.info("test: mAP %.1f, mAR %.1f, identity swaps %d", t.get("mAP", np.nan),
                 t.get("mAR", np.nan), int(t.get("identity_swaps", 0)))


def write_outputs(ev: Evaluation, params: EvaluateParams) -> dict[str, Path]:
    """The stage's files (see the module docstring); returns name -> path."""
    out = Path(params.out)
    paths = {
        "predictions": write_parquet(ev.predictions, out / "predictions.parquet"),
        "errors": write_parquet(ev.errors, out / "errors.parquet"),
        "stratified": write_csv(ev.stratified, out / "stratified.csv"),
        "condition_bias": write_csv(ev.bias, out / "condition_bias.csv"),
        "diagnosis": write_json(ev.diagnosis.as_dict(), out / "diagnosis.json"),
        "summary": write_json({"headline": ev.headline, **ev.context}, out / "summary.json"),
        **({"identity": write_csv(ev.identity, out / "identity.csv")}
           if ev.identity is not None else {}),
        **({"visibility": write_csv(ev.visibility, out / "visibility.csv")}
           if ev.visibility is not None else {}),
        **({"cohorts": write_csv(ev.cohorts, out / "cohorts.csv")}
           if ev.cohorts is not None else {}),
        "metrics": write_json(ev.headline, params.metrics),
    }
    for name, df in plot_tables(ev).items():
        paths[name] = write_csv(df, Path(params.plots) / name)
    return paths


def held_out_frames(labels: pd.DataFrame, images: Mapping[str, list[str]]) -> dict[str, pd.DataFrame]:
    """The val and test frames' labels (image, video, bodypart, x, y): MLflow evaluation
    datasets, their digest changes when a frame or a label does."""
    cols = [c for c in (S.IMAGE, S.VIDEO, S.INDIVIDUAL, S.BODYPART, S.X, S.Y) if c in labels]
    out = {}
    for split in (S.VAL, S.TEST):
        rows = labels[labels[S.IMAGE].isin(set(images.get(split) or []))]
        if len(rows):
            out[split] = rows[cols].sort_values(cols[:-2]).reset_index(drop=True)
    return out


def log_to_mlflow(ev: Evaluation, paths: Mapping[str, Path], run_id: str,
                  registered_model: str | None = None, model_version: str | None = None,
                  model_uri: str | None = None,
                  frames: Mapping[str, pd.DataFrame] | None = None) -> None:
    """Log tables, metrics and the diagnosis to the training run; val and test metrics also to
    the LoggedModel (``model_id``) and their evaluation datasets, test metrics to the version."""
    import mlflow
    from mlflow import MlflowClient

    from poseops.tracking.runs import add_test_metrics, logged_model_id, quiet_env, tracking_uri

    quiet_env()
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(ev.stratified, artifact_file="eval/stratified.json")
        mlflow.log_table(ev.bias, artifact_file="eval/condition_bias.json")
        for key in ("stratified", "condition_bias", "diagnosis", "summary", "identity",
                    "visibility", "cohorts"):
            if key not in paths:
                continue
            mlflow.log_artifact(str(paths[key]), artifact_path="eval")
        mlflow.log_artifact(str(paths["errors"]), artifact_path="eval")
        mlflow.set_tags({"diagnosis": ev.diagnosis.kind,
                         "diagnosis_reason": ev.diagnosis.reason[:500]})
        metrics = flat_metrics(ev.headline)
        mlflow.log_metrics({k: v for k, v in metrics.items()
                            if k.startswith(f"{S.TRAIN}.") and np.isfinite(v)})
    # val/test errors go on the run, linked to the model and the frames they were measured on;
    # test errors (and the gap) also go on the registered model version
    model_id = logged_model_id(MlflowClient(tracking_uri()), run_id, model_uri)
    held_out = {k: v for k, v in metrics.items()
                if k.startswith((f"{S.VAL}.", f"{S.TEST}.", "gap.", S.COHORT_PREFIX))}
    add_test_metrics(run_id, held_out, model_name=registered_model, model_version=model_version,
                     model_id=model_id, datasets=dict(frames or {}))
