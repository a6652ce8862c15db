"""Everything the evaluate stage computes after inference, as tables (pure: no I/O, no DLC
inference): the errors table, the stratified table, headline numbers per split, condition-bias
tests, the PCK curve, the loss-curve diagnosis, multi-animal identity counts and DLC's mAP / mAR,
and the wide tables of the DVC plots. ``poseops.commands.evaluate`` predicts, calls
:func:`evaluate_tables`, writes the files and logs to MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.evaluate import EvaluateParams
from poseops.core import schema as S
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
) -> Evaluation:
    """Everything after inference: errors, stratified table, headline, bias, PCK, diagnosis.
    Multi-animal ``labels`` (with ``individual``): predictions are matched to the labeled
    animals first; ``individuals`` is DLC's config order (it breaks ties as DLC does)."""
    spec = metric_spec(params, config_pcutoff)
    identity = None
    if MA.is_multianimal(labels):
        predictions = MA.match_predictions(labels, predictions, individuals)
    errors = M.compute_errors(labels, predictions, split, params.reference_bodyparts)
    stratified = M.stratified_table(errors, spec)
    headline = M.headline_metrics(stratified)
    if MA.is_multianimal(labels):
        identity = MA.identity_table(errors, predictions)
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
    errors: pd.DataFrame, identity: pd.DataFrame, pcutoff: Pcutoff,
    individuals: list[str] | None = None,
) -> None:
    """Per split: DLC's own ``mAP``, ``mAR``, ``dlc_rmse_px``, ``dlc_rmse_pcutoff_px``
    (``compute_metrics`` on the split's images) and the identity counts
    (:func:`poseops.evaluate.matching.identity_summary`), into ``headline`` in place."""
    ident = MA.identity_summary(identity)
    for split_name, d in headline.items():
        if split_name not in S.SPLITS:
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
