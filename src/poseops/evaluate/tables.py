"""Everything the evaluate stage computes after inference, as tables (pure: no I/O, no DLC
inference): the errors table, the stratified table, headline numbers per split, condition-bias
tests, the PCK curve, the loss-curve diagnosis, multi-animal identity counts and DLC's mAP / mAR,
and the wide tables of the DVC plots. ``poseops.commands.evaluate`` predicts, calls
:func:`evaluate_tables`, writes the files and logs to MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.evaluate import DEFAULT_STRATA, EvaluateParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.evaluate import diagnose as D
from poseops.evaluate import matching as MA
from poseops.evaluate import metrics as M
from poseops.evaluate.common import Pcutoff

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything the evaluate stage computes (tables as documented in poseops.evaluate.metrics
    and poseops.evaluate.matching)."""

    predictions: pd.DataFrame
    errors: pd.DataFrame
    stratified: pd.DataFrame
    headline: dict[str, dict[str, float]]
    bias: pd.DataFrame
    pck: pd.DataFrame
    curves: pd.DataFrame
    diagnosis: D.Diagnosis
    context: dict[str, Any]
    identity: pd.DataFrame | None = None  # multi-animal: per image (matching.identity_table)
    visibility: pd.DataFrame | None = None  # per split x bodypart (metrics.visibility_table)
    cohorts: pd.DataFrame | None = None  # split.cohorts: test + each cohort, drops (cohort_table)


def metric_spec(params: EvaluateParams, config_pcutoff: float = 0.6) -> M.MetricSpec:
    """The metrics of ``params`` (``pcutoff`` None: the DLC config's ``config_pcutoff``)."""
    pcut = config_pcutoff if params.pcutoff is None else params.pcutoff
    return M.MetricSpec(
        pcutoff=dict(pcut) if isinstance(pcut, Mapping) else float(pcut),
        pck_px=tuple(float(t) for t in params.pck_thresholds_px),
        pck_fractions=tuple(float(f) for f in params.pck_fractions),
    )


def evaluate_tables(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    split: pd.DataFrame,
    learning_stats: pd.DataFrame | None,
    params: EvaluateParams,
    config_pcutoff: float = 0.6,
    individuals: list[str] | None = None,
    metadata_file: str | None = None,
) -> Evaluation:
    """Everything after inference: errors, stratified table, headline, bias, PCK, diagnosis.
    Multi-animal ``labels`` (with ``individual``): predictions are matched to the labeled
    animals first; ``individuals`` is DLC's config order (it breaks ties as DLC does).
    ``params.strata`` / ``params.bias_factors`` name columns of the labels (:func:`check_strata`;
    ``metadata_file`` is named in the error). Split values ``cohort:<name>`` (``split.cohorts``)
    are scored like the splits, with their drop vs ``test`` (:func:`cohort_table`)."""
    spec = metric_spec(params, config_pcutoff)
    identity = None
    if MA.is_multianimal(labels):
        predictions = MA.match_predictions(labels, predictions, individuals)
    errors = M.compute_errors(labels, predictions, split, params.reference_bodyparts)
    strata = check_strata(labels, errors, params.strata, params.bias_factors, metadata_file)
    stratified = M.stratified_table(errors, spec, strata)
    headline = M.headline_metrics(stratified)
    cohorts = cohort_table(stratified, errors)
    add_cohort_drops(headline, cohorts)
    if MA.is_multianimal(labels):
        identity = MA.identity_table(errors, predictions)
        add_multianimal_headline(headline, labels, predictions, errors, identity, spec.pcutoff,
                                 individuals)
    thresholds = np.arange(0, params.pck_curve_max_px + 1e-9, params.pck_curve_step_px)
    pck = M.pck_curve(errors, thresholds)
    visibility = M.visibility_table(errors, spec.pcutoff)
    M.add_curve_headline(headline, M.pck_auc(pck), visibility)
    if not MA.is_multianimal(labels):  # multi-animal: DLC's mAP / mAR above
        for split_name, oks in M.dlc_oks_metrics(errors, spec.pcutoff).items():
            headline.get(split_name, {}).update(oks)
    factors = [f for f in params.bias_factors if f in errors.columns]  # checked above
    bias = M.condition_bias(errors, factors, unit=params.bias_unit)
    th = D.Thresholds(**params.diagnosis)
    if learning_stats is not None and len(learning_stats):
        curves = D.curves_from_learning_stats(learning_stats)
    else:
        curves = pd.DataFrame(columns=[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS], dtype=float)
    diagnosis = D.diagnose(curves, th, errors_px=D.split_errors(headline))
    return Evaluation(
        predictions=predictions, errors=errors, stratified=stratified, headline=headline,
        bias=bias, pck=pck, curves=curves, diagnosis=diagnosis, identity=identity,
        visibility=visibility, cohorts=cohorts,
        context={"pcutoff": spec.pcutoff, "pck_thresholds_px": list(spec.pck_px),
                 "pck_fractions": list(spec.pck_fractions),
                 "reference_bodyparts": params.reference_bodyparts},
    )


def _columns(stratum: str | Sequence[str]) -> tuple[str, ...]:
    return (stratum,) if isinstance(stratum, str) else tuple(stratum)


def check_strata(
    labels: pd.DataFrame, errors: pd.DataFrame, strata: Sequence[str | Sequence[str]],
    bias_factors: Sequence[str] = (), metadata_file: str | None = None,
) -> list[str | tuple[str, ...]]:
    """``evaluate.strata`` as :func:`poseops.evaluate.metrics.stratified_table` takes them
    (crossed strata as tuples). A column of the default strata (:data:`DEFAULT_STRATA`: the
    multi-animal ``individual`` and ``animals_in_frame`` on a single-animal project) or of the
    default bias factors is skipped where the table lacks it, as before; any other column that is
    not in the errors table is a PoseopsError naming it and the metadata columns there are."""
    optional = {c for s in DEFAULT_STRATA for c in _columns(s)} | {S.CONDITION, S.ANIMAL}
    out: list[str | tuple[str, ...]] = []
    for key, items in (("strata", strata), ("bias_factors", [[f] for f in bias_factors])):
        for stratum in items:
            cols = _columns(stratum)
            if not cols or not all(isinstance(c, str) and c for c in cols):
                raise PoseopsError(f"evaluate.{key}: {stratum!r} is not a column name or a list "
                                   "of column names")
            for col in cols:
                if col not in errors.columns and col not in optional:
                    meta = [c for c in S.metadata_columns(labels) if c not in _NOT_METADATA]
                    raise PoseopsError(
                        f"evaluate.{key}: column {col!r} is not in the labels (metadata "
                        f"columns: {meta}); add it to the metadata CSV or remove it from "
                        f"evaluate.{key}", file=metadata_file)
            if key == "strata" and all(c in errors.columns for c in cols):
                out.append(cols[0] if len(cols) == 1 else cols)
    return out


_NOT_METADATA = {S.WIDTH, S.HEIGHT, S.LABELED, *S.KEYPOINT_COLUMNS}
COHORT_METRICS = ("n", "mean_px", "rmse_px", "median_px", "p95_px", "mean_px_pcutoff",
                  "rmse_px_pcutoff", "pcutoff_coverage")


def cohort_table(stratified: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame | None:
    """Generalisation cohorts (split values ``cohort:<name>``) beside the standard test set:
    one row for ``test`` and one per cohort, ``cohort, split, n_images, n_videos`` and the
    ``all`` row's metrics (:data:`COHORT_METRICS`, PCK), then the drop vs ``test``:
    ``rmse_drop_px`` = cohort rmse_px - test rmse_px, ``rmse_drop_pct`` = 100 * that / test
    rmse_px, and the same for ``mean_px`` (``mean_drop_px``, ``mean_drop_pct``). None without
    cohorts. Positive drop: the cohort's error is larger (the model generalises worse)."""
    names = sorted(s for s in errors[S.SPLIT].unique() if S.is_cohort(s))
    if not names:
        return None
    rows = stratified[stratified[M.STRATUM_TYPE] == M.ALL].set_index(S.SPLIT)
    metrics = [c for c in rows.columns if c in COHORT_METRICS or c.startswith("pck_")]
    labeled = errors[np.isfinite(errors[S.ERROR_PX].to_numpy(float))]
    out = []
    for split_name in [S.TEST, *names]:
        part = labeled[labeled[S.SPLIT] == split_name]
        row: dict[str, Any] = {
            "cohort": split_name[len(S.COHORT_PREFIX):] if S.is_cohort(split_name) else S.TEST,
            S.SPLIT: split_name, "n_images": int(part[S.IMAGE].nunique()),
            "n_videos": int(part[S.VIDEO].nunique()) if S.VIDEO in part else 0}
        for m in metrics:
            row[m] = rows.at[split_name, m] if split_name in rows.index else np.nan
        out.append(row)
    table = pd.DataFrame(out)
    for m, name in (("rmse_px", "rmse"), ("mean_px", "mean")):
        test = float(table[m].iloc[0]) if len(table) else np.nan
        table[f"{name}_drop_px"] = table[m] - test
        table[f"{name}_drop_pct"] = [M.gap_pct(test, v) for v in table[m]]
    return table


def add_cohort_drops(headline: dict[str, dict[str, float]], cohorts: pd.DataFrame | None) -> None:
    """Each cohort's headline entry (``cohort:<name>``) gains its drop vs ``test``
    (``rmse_drop_px``, ``rmse_drop_pct``, ``mean_drop_px``, ``mean_drop_pct``), in place."""
    if cohorts is None:
        return
    drops = [c for c in cohorts.columns if c.endswith(("_drop_px", "_drop_pct"))]
    for _, row in cohorts.iloc[1:].iterrows():
        headline.setdefault(row[S.SPLIT], {}).update({c: float(row[c]) for c in drops})


def add_multianimal_headline(
    headline: dict[str, dict[str, float]], labels: pd.DataFrame, predictions: pd.DataFrame,
    errors: pd.DataFrame, identity: pd.DataFrame, pcutoff: Pcutoff,
    individuals: list[str] | None = None,
) -> None:
    """Per split: DLC's own ``mAP``, ``mAR``, ``dlc_rmse_px``, ``dlc_rmse_pcutoff_px``
    (``compute_metrics`` on the split's images) and the identity counts
    (:func:`poseops.evaluate.matching.identity_summary`), into ``headline`` in place."""
    ident = MA.identity_summary(identity)
    for split_name, d in headline.items():
        if split_name not in S.SPLITS and not S.is_cohort(split_name):
            continue
        images = sorted(errors.loc[errors[S.SPLIT] == split_name, S.IMAGE].unique())
        dlc = MA.dlc_multianimal_metrics(labels, predictions, images, pcutoff, individuals)
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
