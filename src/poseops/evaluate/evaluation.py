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
                          missed / false positive / identity swaps (poseops.evaluate.metrics.identity_table)
Multi-animal projects (consensus with an ``individual`` column): predictions are every assembly
the model returns (``assembly``; -1 the unique bodyparts), matched to labeled animals as DLC's
``evaluate_network`` matches them (``individual``, ``oks``); the headline adds DLC's own ``mAP``,
``mAR``, ``dlc_rmse_px`` (after matching) and the identity counts per split.
`evaluate.metrics` (reports/metrics.json): headline numbers per split (DVC metrics).
`evaluate.plots` (reports/plots/): loss_curves.csv, pck_curve.csv, error_by_bodypart.csv,
error_by_condition.csv (DVC plots, see dvc.yaml).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json, write_parquet
from poseops.evaluate import diagnose as D
from poseops.evaluate import metrics as M

log = logging.getLogger(__name__)


@dataclass
class EvaluateParams:
    """params.yaml `evaluate:` section."""

    pcutoff: float | dict[str, float] | None = None  # None: the DLC config's pcutoff
    pck_thresholds_px: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0])
    pck_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    reference_bodyparts: list[str] | None = field(default_factory=lambda: ["snout", "tailbase"])
    pck_curve_max_px: float = 20.0
    pck_curve_step_px: float = 0.5
    bias_factors: list[str] = field(default_factory=lambda: [S.CONDITION, S.ANIMAL])
    bias_unit: str = S.VIDEO  # condition-bias tests on per-video means; "image": per frame (optimistic)
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    snapshot: str | None = None  # a snapshot path; None: the training's selected snapshot
    diagnosis: dict[str, Any] = field(default_factory=dict)  # poseops.evaluate.diagnose.Thresholds keys
    out: str = "data/eval"
    metrics: str = "reports/metrics.json"
    plots: str = "reports/plots"
    log_mlflow: bool = True

    def spec(self, config_pcutoff: float = 0.6) -> M.MetricSpec:
        pcut = config_pcutoff if self.pcutoff is None else self.pcutoff
        return M.MetricSpec(
            pcutoff=dict(pcut) if isinstance(pcut, Mapping) else float(pcut),
            pck_px=tuple(float(t) for t in self.pck_thresholds_px),
            pck_fractions=tuple(float(f) for f in self.pck_fractions),
        )


@dataclass
class Evaluation:
    """Everything the evaluate stage computes (tables as documented in poseops.evaluate.metrics)."""

    predictions: pd.DataFrame
    errors: pd.DataFrame
    stratified: pd.DataFrame
    headline: dict[str, dict[str, float]]
    bias: pd.DataFrame
    pck: pd.DataFrame
    curves: pd.DataFrame
    diagnosis: D.Diagnosis
    context: dict[str, Any]
    identity: pd.DataFrame | None = None  # multi-animal: per image (metrics.identity_table)


# ------------------------------------------------------------------------------- inference


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict(
    pytorch_config: str | Path,
    snapshot: str | Path,
    project_dir: str | Path,
    images: list[str],
    *,
    batch_size: int = 8,
    device: str = "auto",
    chunk: int = 64,
    multi_animal: bool = False,
) -> pd.DataFrame:
    """DeepLabCut inference of ``snapshot`` on ``images`` (DLC relative paths under
    ``project_dir``). Returns the predictions table ``image, bodypart, x, y, likelihood,
    snapshot`` (single animal: the first individual). ``multi_animal``: every assembly, one row
    per (image, assembly, bodypart) with ``assembly`` = its index in the runner's output (an
    unordered animal; -1 = the unique bodyparts), as the runner returns it (score -1: none)."""
    snapshot, pytorch_config = Path(snapshot), Path(pytorch_config)
    if not snapshot.is_file():
        raise PoseopsError("snapshot not found (train first, or fix evaluate.snapshot)",
                           file=snapshot)
    if not pytorch_config.is_file():
        raise PoseopsError("pytorch_config.yaml not found", file=pytorch_config)
    missing = [i for i in images if not (Path(project_dir) / i).is_file()]
    if missing:
        raise PoseopsError(f"{len(missing)} image(s) missing, e.g. {missing[0]!r}",
                           file=Path(project_dir) / missing[0])
    import yaml
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner

    cfg = yaml.safe_load(pytorch_config.read_text())
    bodyparts = list(cfg["metadata"]["bodyparts"])
    if multi_animal and str(cfg.get("method", "bu")).lower() != "bu":
        raise PoseopsError(
            f"evaluating a {cfg.get('method')!r} (top-down) multi-animal model needs a detector "
            "or ground-truth boxes: not supported yet; use a bottom-up net_type (dekr_w18, "
            "resnet_50 with PAF, ...)", file=pytorch_config)
    runner = get_pose_inference_runner(
        model_config=cfg, snapshot_path=str(snapshot), batch_size=batch_size,
        device=resolve_device(device),
    )
    from poseops.tracking.runs import inference_by_size

    xs: list[np.ndarray] = []
    outs: list[dict[str, Any]] = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        out = inference_by_size(runner, [str(Path(project_dir) / i) for i in part])
        if multi_animal:
            outs.extend(out)
        else:
            xs.extend(np.asarray(o["bodyparts"], float)[0, :, :3] for o in out)
        log.info("predicted %d / %d images", min(start + chunk, len(images)), len(images))
    if multi_animal:
        table = multianimal_predictions(images, outs, bodyparts,
                                        list(cfg["metadata"].get("unique_bodyparts") or []))
        return table.assign(**{S.SNAPSHOT: snapshot.name})
    arr = np.stack(xs) if xs else np.zeros((0, len(bodyparts), 3))
    n_img, n_bp = len(images), len(bodyparts)
    return pd.DataFrame({
        S.IMAGE: np.repeat(images, n_bp),
        S.BODYPART: np.tile(bodyparts, n_img),
        S.X: arr[:, :, 0].ravel(),
        S.Y: arr[:, :, 1].ravel(),
        S.LIKELIHOOD: arr[:, :, 2].ravel(),
        S.SNAPSHOT: snapshot.name,
    })


def multianimal_predictions(images: list[str], outputs: list[Mapping[str, Any]],
                            bodyparts: list[str], unique_bodyparts: list[str]) -> pd.DataFrame:
    """The runner's per-image outputs (``bodyparts``: (assemblies, bodyparts, >=3) x, y, score;
    ``unique_bodyparts``: (1, unique, 3)) as the multi-animal predictions table ``image,
    assembly, bodypart, x, y, likelihood`` (unique bodyparts: assembly -1)."""
    parts = []
    for image, o in zip(images, outputs, strict=True):
        arr = np.asarray(o["bodyparts"], float)[..., :3]
        n_asm = arr.shape[0]
        parts.append(pd.DataFrame({
            S.IMAGE: image, S.ASSEMBLY: np.repeat(np.arange(n_asm), len(bodyparts)),
            S.BODYPART: np.tile(bodyparts, n_asm), S.X: arr[..., 0].ravel(),
            S.Y: arr[..., 1].ravel(), S.LIKELIHOOD: arr[..., 2].ravel()}))
        if unique_bodyparts and o.get("unique_bodyparts") is not None:
            u = np.asarray(o["unique_bodyparts"], float)[..., :3].reshape(-1, 3)
            parts.append(pd.DataFrame({
                S.IMAGE: image, S.ASSEMBLY: -1, S.BODYPART: unique_bodyparts,
                S.X: u[: len(unique_bodyparts), 0], S.Y: u[: len(unique_bodyparts), 1],
                S.LIKELIHOOD: u[: len(unique_bodyparts), 2]}))
    if not parts:
        return pd.DataFrame(columns=M.MA_PREDICTION_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out[S.ASSEMBLY] = out[S.ASSEMBLY].astype(int)
    return out


# ------------------------------------------------------------------------------- pure core


def evaluate_tables(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    split: pd.DataFrame,
    learning_stats: pd.DataFrame | None,
    params: EvaluateParams,
    config_pcutoff: float = 0.6,
    individuals: list[str] | None = None,
) -> Evaluation:
    """Everything after inference: errors, stratified table, headline, bias, PCK, diagnosis.
    Multi-animal ``labels`` (with ``individual``): predictions are matched to the labeled
    animals first; ``individuals`` is DLC's config order (it breaks ties as DLC does)."""
    spec = params.spec(config_pcutoff)
    identity = None
    if M.is_multianimal(labels):
        predictions = M.match_predictions(labels, predictions, individuals)
    errors = M.compute_errors(labels, predictions, split, params.reference_bodyparts)
    stratified = M.stratified_table(errors, spec)
    headline = M.headline_metrics(stratified)
    if M.is_multianimal(labels):
        identity = M.identity_table(errors, predictions)
        add_multianimal_headline(headline, labels, predictions, errors, identity, spec.pcutoff,
                                 individuals)
    thresholds = np.arange(0, params.pck_curve_max_px + 1e-9, params.pck_curve_step_px)
    pck = M.pck_curve(errors, thresholds)
    bias = M.condition_bias(errors, params.bias_factors, unit=params.bias_unit)
    th = D.Thresholds(**params.diagnosis)
    if learning_stats is not None and len(learning_stats):
        curves = D.curves_from_learning_stats(learning_stats)
    else:
        curves = pd.DataFrame(columns=[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS], dtype=float)
    diagnosis = D.diagnose(curves, th, errors_px=D.split_errors(headline))
    return Evaluation(
        predictions=predictions, errors=errors, stratified=stratified, headline=headline,
        bias=bias, pck=pck, curves=curves, diagnosis=diagnosis, identity=identity,
        context={"pcutoff": spec.pcutoff, "pck_thresholds_px": list(spec.pck_px),
                 "pck_fractions": list(spec.pck_fractions),
                 "reference_bodyparts": params.reference_bodyparts},
    )


def add_multianimal_headline(
    headline: dict[str, dict[str, float]], labels: pd.DataFrame, predictions: pd.DataFrame,
    errors: pd.DataFrame, identity: pd.DataFrame, pcutoff: M.Pcutoff,
    individuals: list[str] | None = None,
) -> None:
    """Per split: DLC's own ``mAP``, ``mAR``, ``dlc_rmse_px``, ``dlc_rmse_pcutoff_px``
    (``compute_metrics`` on the split's images) and the identity counts
    (:func:`poseops.evaluate.metrics.identity_summary`), into ``headline`` in place."""
    ident = M.identity_summary(identity)
    for split_name, d in headline.items():
        if split_name not in S.SPLITS:
            continue
        images = sorted(errors.loc[errors[S.SPLIT] == split_name, S.IMAGE].unique())
        dlc = M.dlc_multianimal_metrics(labels, predictions, images, pcutoff, individuals)
        if np.isfinite(dlc["dlc_rmse_px"]) and abs(dlc["dlc_rmse_px"] - d["mean_px"]) > 1e-6:
            log.warning("%s: DLC's rmse %.4f px differs from the errors table's mean %.4f px",
                        split_name, dlc["dlc_rmse_px"], d["mean_px"])
        d.update(dlc)
        d.update(ident.get(split_name, {}))


def flat_metrics(headline: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"test.rmse_px": ..., "gap.train_test_gap_pct": ...}`` for MLflow / the registry."""
    return {f"{split}.{k}": float(v) for split, d in headline.items() for k, v in d.items()}


def plot_tables(ev: Evaluation) -> dict[str, pd.DataFrame]:
    """The DVC plot data, wide (one column per line/bar series, as DVC's templates want):
    loss_curves (epoch, train_loss, val_loss), pck_curve (threshold_px, train, val, test),
    error_by_bodypart / error_by_condition (long: stratum, split, label "snout (test)", mean_px,
    rmse_px; one bar per label)."""
    loss = ev.curves[[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS]].copy()
    pck = ev.pck.pivot_table(index="threshold_px", columns=S.SPLIT, values="pck").reset_index()
    pck = pck[["threshold_px"] + [s for s in S.SPLITS if s in pck.columns]]
    st = ev.stratified
    out = {"loss_curves.csv": loss, "pck_curve.csv": pck}
    for st_type in (S.BODYPART, S.CONDITION):
        sub = st[st[M.STRATUM_TYPE] == st_type]
        out[f"error_by_{st_type}.csv"] = pd.DataFrame({
            st_type: sub[M.STRATUM].to_numpy(),
            S.SPLIT: sub[S.SPLIT].to_numpy(),
            "label": (sub[M.STRATUM] + " (" + sub[S.SPLIT] + ")").to_numpy(),
            "mean_px": sub["mean_px"].to_numpy(),
            "rmse_px": sub["rmse_px"].to_numpy(),
        })
    return out


# ------------------------------------------------------------------------------------ I/O


def write_outputs(ev: Evaluation, params: EvaluateParams) -> dict[str, Path]:
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
        "metrics": write_json(ev.headline, params.metrics),
    }
    for name, df in plot_tables(ev).items():
        paths[name] = write_csv(df, Path(params.plots) / name)
    return paths


def log_to_mlflow(ev: Evaluation, paths: Mapping[str, Path], run_id: str,
                  registered_model: str | None = None, model_version: str | None = None) -> None:
    """Log tables, metrics and the diagnosis to the training run; test metrics to the model."""
    import mlflow

    from poseops.tracking.runs import add_test_metrics, quiet_env, tracking_uri

    quiet_env()
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(ev.stratified, artifact_file="eval/stratified.json")
        mlflow.log_table(ev.bias, artifact_file="eval/condition_bias.json")
        for key in ("stratified", "condition_bias", "diagnosis", "summary", "identity"):
            if key not in paths:
                continue
            mlflow.log_artifact(str(paths[key]), artifact_path="eval")
        mlflow.log_artifact(str(paths["errors"]), artifact_path="eval")
        mlflow.set_tags({"diagnosis": ev.diagnosis.kind,
                         "diagnosis_reason": ev.diagnosis.reason[:500]})
        metrics = flat_metrics(ev.headline)
        mlflow.log_metrics({k: v for k, v in metrics.items()
                            if k.startswith((f"{S.TRAIN}.", f"{S.VAL}.")) and np.isfinite(v)})
    # test errors (and the gap) also go on the registered model version
    held_out = {k: v for k, v in metrics.items() if k.startswith((f"{S.TEST}.", "gap."))}
    add_test_metrics(run_id, held_out, model_name=registered_model, model_version=model_version)


def _config_pcutoff(config_path: Path) -> float:
    import yaml

    cfg = yaml.safe_load(Path(config_path).read_text()) or {}
    return float(cfg.get("pcutoff", 0.6))


def _config_individuals(config_path: Path) -> list[str] | None:
    """DLC's config order of the individuals (multi-animal projects), None if not listed."""
    import yaml

    cfg = yaml.safe_load(Path(config_path).read_text()) or {}
    inds = cfg.get("individuals")
    return [str(i) for i in inds] if inds else None


def run(params_file: str | None = None) -> Evaluation:
    """The DVC stage: data/train (selected snapshot) + consensus + split -> data/eval + reports."""
    from poseops.config.loader import load_params, section
    from poseops.train.trainer import TrainParams, _single_scorer, load_result

    params = section("evaluate", EvaluateParams, params_file)
    allp = load_params(params_file)
    # the diagnosis judges the train-test gap by the metric validation's limits (same numbers)
    params.diagnosis = {**D.thresholds_from_validate_report(allp.get("validate_report")),
                        **params.diagnosis}
    tparams = section("train", TrainParams, params_file)
    labels_path = Path((allp.get("consensus") or {}).get("out", "data/interim/consensus.parquet"))
    split_path = Path((allp.get("split") or {}).get("out", "data/processed/split.csv"))
    for p in (labels_path, split_path):
        if not p.exists():
            raise PoseopsError("input missing (run the earlier stages: dvc repro)", file=p)
    tr = load_result(tparams.workdir)
    snapshot = Path(params.snapshot) if params.snapshot else tr.snapshot
    if snapshot is None:
        raise PoseopsError("the training has no snapshot", file=tr.model_dir)
    labels = _single_scorer(pd.read_parquet(labels_path))
    split = pd.read_csv(split_path)
    images = sorted({i for s in S.SPLITS for i in (tr.images.get(s) or [])})
    if not images:
        raise PoseopsError("the training lists no images (run.json)", file=tr.workdir)
    log.info("predicting %d images with %s", len(images), snapshot)
    multi = M.is_multianimal(labels)
    preds = predict(tr.pytorch_config_path, snapshot, tr.config_path.parent, images,
                    batch_size=params.batch_size, device=params.device, multi_animal=multi)
    ev = evaluate_tables(labels, preds, split, tr.learning_stats, params,
                         _config_pcutoff(tr.config_path),
                         _config_individuals(tr.config_path) if multi else None)
    ev.context.update(snapshot=str(snapshot), project_dir=str(tr.config_path.parent),
                      run_id=tr.run_id, pytorch_config=str(tr.pytorch_config_path),
                      train_workdir=str(tr.workdir))
    paths = write_outputs(ev, params)
    if params.log_mlflow and tr.run_id:
        log_to_mlflow(ev, paths, tr.run_id, tparams.registered_model, tr.model_version)
    elif params.log_mlflow:
        log.warning("no MLflow run id in the training (tracking was offline): not logged")
    t = ev.headline.get(S.TEST, {})
    log.info("test: rmse %.2f px, mean (DLC 'rmse') %.2f px; diagnosis %s",
             t.get("rmse_px", np.nan), t.get("mean_px", np.nan), ev.diagnosis.kind)
    if multi:
        log.info("test: mAP %.1f, mAR %.1f, identity swaps %d", t.get("mAP", np.nan),
                 t.get("mAR", np.nan), int(t.get("identity_swaps", 0)))
    return ev


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="errors of the selected snapshot, stratified")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    p.set_defaults(func=lambda a: (run(a.params), 0)[1])


def params_dict(params: EvaluateParams) -> dict[str, Any]:
    return asdict(params)
