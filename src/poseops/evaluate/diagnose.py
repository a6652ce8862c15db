"""Training diagnosis: the loss curves as the field guide reads them, checked against the
evaluated train/val/test errors.

Follows the guide's "Diagnosing and Fixing Common DeepLabCut Training Set Pitfalls" (Table 1
patterns, Table 2 adjustments, Diagram 1 order): overfitting, underfitting, plateau, volatile
validation; otherwise healthy. Too few epochs to judge gives ``insufficient``.

The curves alone can look healthy while the model generalises badly (the demo: train RMSE 3.7 px,
test 10.2 px). So when the evaluated errors are given (``errors_px``: true RMSE per split), they
decide first: train error above ``max_train_rmse_px`` is underfitting (the model does not fit
even its own training frames); a train-test (else train-val) gap above ``max_gap_pct`` is
overfitting. Both thresholds default to the metric validation's (``validate_report.max_test_rmse_px``
10 px and ``validate_report.max_gap_pct`` 15 %), and ``poseops evaluate`` reads them from there,
so the diagnosis and the validation agree. Otherwise the curves decide, as before.

Pure functions over a curves table: one row per epoch, columns ``epoch, train_loss, val_loss``
(``val_loss`` NaN on epochs without validation). No I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

EPOCH, TRAIN_LOSS, VAL_LOSS = "epoch", "train_loss", "val_loss"

HEALTHY, OVERFITTING, UNDERFITTING = "healthy", "overfitting", "underfitting"
PLATEAU, VOLATILE, INSUFFICIENT = "plateau", "volatile_validation", "insufficient"
KINDS = (HEALTHY, OVERFITTING, UNDERFITTING, PLATEAU, VOLATILE, INSUFFICIENT)

# The guide's recommended actions (Q1-Q4 action protocols and Table 2), per diagnosis.
ACTIONS: dict[str, list[str]] = {
    OVERFITTING: [
        "Increase the size and diversity of the labeled set (more varied frames: lighting, "
        "animals, postures, backgrounds).",
        "Apply or increase regularisation (dropout, L2 weight decay); consider a slightly lower "
        "learning rate.",
        "Stop early (select the snapshot at the validation minimum).",
        "Reduce model complexity (smaller backbone) or moderate extreme augmentations.",
    ],
    UNDERFITTING: [
        "Increase model capacity (a deeper backbone or decoder).",
        "Train for significantly more epochs; a larger learning rate or batch size can help.",
        "Reduce regularisation (lower dropout / weight decay).",
        "Check preprocessing and make sure the labels cover the full pose variation.",
    ],
    PLATEAU: [
        "Use a learning-rate schedule: reduce the learning rate (e.g. by 10x) when the loss "
        "stops improving, then continue training.",
        "Re-inspect training and validation frames for labeling inconsistencies.",
        "Add challenging edge-case frames (outliers) to the labeled set.",
        "Try another optimiser (e.g. SGD with Nesterov momentum).",
    ],
    VOLATILE: [
        "Audit the validation set: preprocessing, representativeness, corrupted or anomalous "
        "frames.",
        "Lower the learning rate by an order of magnitude.",
        "Increase the batch size; consider gradient clipping (max norm ~1.0).",
    ],
    HEALTHY: ["No change needed for training; refine the labeled set where errors are largest."],
    INSUFFICIENT: ["Train for more epochs (with validation each epoch) to diagnose the curves."],
}

TABLE1: dict[str, str] = {
    OVERFITTING: "Diverging curves: training loss low and falling, validation loss rising.",
    UNDERFITTING: "High parallel curves: both losses high and decreasing slowly.",
    PLATEAU: "Plateaued curves: after an initial decrease both losses barely change.",
    VOLATILE: "Volatile validation: training loss decreasing, validation loss with sharp peaks.",
    HEALTHY: "Both losses decrease and the validation loss follows the training loss.",
    INSUFFICIENT: "Too few epochs with validation to judge the curves.",
}

# The same kinds read from the evaluated errors (train vs held-out frames) instead of the curves.
ERROR_PATTERNS: dict[str, str] = {
    OVERFITTING: "Large generalisation gap: the error on held-out frames is far above the error "
    "on the training frames.",
    UNDERFITTING: "High training error: the model does not fit even the frames it was trained on.",
}


@dataclass(frozen=True)
class Thresholds:
    """Knobs of the classifier (relative to the loss scale, so they work for any loss)."""

    min_points: int = 5  # validation points needed to judge
    overfit_rise: float = 0.10  # smoothed val rises >= 10 % above its minimum ...
    overfit_min_position: float = 0.8  # ... reached before 80 % of training
    underfit_drop: float = 0.5  # train loss fell by < 50 % of its first value
    plateau_window: float = 0.3  # the last 30 % of epochs ...
    plateau_change: float = 0.02  # ... change the losses by < 2 % of their first value
    volatile_spike: float = 0.25  # val point > 25 % above its rolling median ...
    volatile_spikes: int = 2  # ... at least this many times (train stays smooth)
    smooth_window: int = 5  # rolling-median window for the validation curve
    # evaluated errors (true RMSE, px); defaults = validate_report's max_gap_pct / max_test_rmse_px
    max_gap_pct: float = 15.0  # 100 * (test - train) / train above this: overfitting
    max_train_rmse_px: float = 10.0  # train RMSE above this: underfitting


@dataclass
class Diagnosis:
    kind: str
    reason: str
    actions: list[str]
    pattern: str
    stats: dict[str, float] = field(default_factory=dict)
    curve_kind: str = ""  # what the loss curves alone say (may differ from kind)
    source: str = "curves"  # what decided kind: "curves" or "errors" (the evaluated errors)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def curves_from_learning_stats(stats: pd.DataFrame) -> pd.DataFrame:
    """DLC's ``learning_stats.csv`` (``step, losses/train.total_loss, losses/eval.total_loss,
    metrics/...``) to the curves table ``epoch, train_loss, val_loss`` (last row per step)."""
    if "step" not in stats.columns or "losses/train.total_loss" not in stats.columns:
        raise PoseopsError(
            f"learning stats: need columns 'step' and 'losses/train.total_loss', have "
            f"{list(stats.columns)}"
        )
    s = stats.groupby("step", sort=True).last()
    val = s["losses/eval.total_loss"] if "losses/eval.total_loss" in s else np.nan
    return pd.DataFrame(
        {EPOCH: s.index.astype(int), TRAIN_LOSS: s["losses/train.total_loss"].astype(float),
         VAL_LOSS: pd.Series(val, index=s.index, dtype=float)}
    ).reset_index(drop=True)


def _rolling_median(v: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(v).rolling(window, center=True, min_periods=1).median().to_numpy()


def curve_stats(curves: pd.DataFrame, th: Thresholds = Thresholds()) -> dict[str, float]:
    """Scale-free features of the curves (all relative to the first loss value)."""
    c = curves.sort_values(EPOCH)
    tr = c[TRAIN_LOSS].to_numpy(float)
    tr = tr[np.isfinite(tr)]
    vdf = c[np.isfinite(c[VAL_LOSS].to_numpy(float))]
    v = vdf[VAL_LOSS].to_numpy(float)
    out: dict[str, float] = {"n_epochs": float(len(tr)), "n_val": float(len(v))}
    if len(tr) < 2 or len(v) < 2:
        return out
    t0, v0 = tr[0], v[0]
    vs = _rolling_median(v, th.smooth_window)
    i_min = int(np.argmin(vs))
    w_tr = max(2, int(round(len(tr) * th.plateau_window)))
    w_v = max(2, int(round(len(v) * th.plateau_window)))
    spikes = (v - vs) / np.maximum(vs, 1e-12)
    tr_s = _rolling_median(tr, th.smooth_window)
    tr_spikes = (tr - tr_s) / np.maximum(tr_s, 1e-12)
    # train loss at the epoch of the val minimum vs at the end: still falling after it?
    ep_min = vdf[EPOCH].to_numpy()[i_min]
    tr_at_min = float(np.interp(ep_min, c[EPOCH].to_numpy(float), c[TRAIN_LOSS].to_numpy(float)))
    out.update(
        train_drop=float((t0 - tr[-1]) / t0),
        val_drop=float((v0 - v.min()) / v0),
        val_rise=float((vs[-1] - vs[i_min]) / max(vs[i_min], 1e-12)),
        val_min_position=float(i_min / (len(v) - 1)),
        train_after_val_min=float((tr_at_min - tr[-1]) / t0),
        train_late_change=float(abs(tr[-w_tr] - tr[-1]) / t0),
        val_late_change=float(abs(vs[-w_v] - vs[-1]) / v0),
        val_spikes=float((spikes > th.volatile_spike).sum()),
        train_spikes=float((tr_spikes > th.volatile_spike).sum()),
        gap_end=float((vs[-1] - tr_s[-1]) / max(tr_s[-1], 1e-12)),
    )
    return out


def split_errors(headline: Mapping[str, Mapping[str, float]], metric: str = "rmse_px"
                 ) -> dict[str, float]:
    """``{split: true RMSE}`` from :func:`poseops.evaluate.metrics.headline_metrics` (for ``errors_px``)."""
    return {s: float(d[metric]) for s, d in headline.items()
            if s in ("train", "val", "test") and metric in d}


def thresholds_from_validate_report(section: Mapping[str, Any] | None) -> dict[str, float]:
    """The metric validation's limits as Thresholds keys (``max_gap_pct``, ``max_train_rmse_px``
    = ``max_test_rmse_px``), so the diagnosis and ``poseops validate-report`` agree."""
    section = section or {}
    out = {}
    if section.get("max_gap_pct") is not None:
        out["max_gap_pct"] = float(section["max_gap_pct"])
    if section.get("max_test_rmse_px") is not None:
        out["max_train_rmse_px"] = float(section["max_test_rmse_px"])
    return out


def _gap(train: float, other: float) -> float:
    if not (np.isfinite(train) and np.isfinite(other)) or train <= 0:
        return float("nan")
    return float(100.0 * (other - train) / train)


def error_diagnosis(errors_px: Mapping[str, float], th: Thresholds = Thresholds()
                    ) -> tuple[str | None, str, dict[str, float]]:
    """What the evaluated errors say: (kind or None, reason, stats). Train RMSE above
    ``max_train_rmse_px``: underfitting; else the train-test gap (train-val without a test
    error) above ``max_gap_pct``: overfitting; else None (the errors do not object)."""
    tr = float(errors_px.get("train", np.nan))
    va = float(errors_px.get("val", np.nan))
    te = float(errors_px.get("test", np.nan))
    st = {"train_rmse_px": tr, "val_rmse_px": va, "test_rmse_px": te,
          "train_test_gap_pct": _gap(tr, te), "train_val_gap_pct": _gap(tr, va)}
    if not np.isfinite(tr):
        return None, "", st
    held = [(name, e, g) for name, e, g in (("test", te, st["train_test_gap_pct"]),
                                            ("validation", va, st["train_val_gap_pct"]))
            if np.isfinite(e)]
    if tr > th.max_train_rmse_px:
        worst = f"; {held[0][0]} error {held[0][1]:.1f} px" if held else ""
        return UNDERFITTING, (f"underfit: train error {tr:.1f} px is itself above "
                              f"{th.max_train_rmse_px:g} px{worst}"), st
    for name, e, g in held[:1]:  # test when there is one, else validation
        if np.isfinite(g) and g > th.max_gap_pct:
            return OVERFITTING, (f"overfitting: {name} error {e:.1f} px is {g:.0f} % above "
                                 f"train error {tr:.1f} px (limit {th.max_gap_pct:g} %)"), st
    return None, "", st


def diagnose(curves: pd.DataFrame, th: Thresholds = Thresholds(),
             errors_px: Mapping[str, float] | None = None) -> Diagnosis:
    """Classify the training: the evaluated errors first (``errors_px``: true RMSE per split,
    see :func:`split_errors`; the reason then also says what the curves alone show), then the
    curves (Diagram 1 order: overfitting, underfitting, plateau, volatile)."""
    curve = diagnose_curves(curves, th)
    if not errors_px:
        return curve
    kind, reason, st = error_diagnosis(errors_px, th)
    stats = {**curve.stats, **st}
    if kind is None:
        return Diagnosis(curve.kind, curve.reason, curve.actions, curve.pattern, stats,
                         curve_kind=curve.kind, source="curves")
    if curve.kind != kind:
        reason += f" (the loss curves alone: {curve.kind}, {curve.reason})"
    else:
        reason += f"; the loss curves agree: {curve.reason}"
    return Diagnosis(kind=kind, reason=reason, actions=list(ACTIONS[kind]),
                     pattern=ERROR_PATTERNS[kind], stats=stats, curve_kind=curve.kind,
                     source="errors")


def diagnose_curves(curves: pd.DataFrame, th: Thresholds = Thresholds()) -> Diagnosis:
    """Classify the curves (Diagram 1 order: overfitting, underfitting, plateau, volatile)."""
    for col in (EPOCH, TRAIN_LOSS, VAL_LOSS):
        if col not in curves.columns:
            raise PoseopsError(f"loss curves: missing column {col!r}; have {list(curves.columns)}")
    st = curve_stats(curves, th)
    if st["n_val"] < th.min_points or st["n_epochs"] < th.min_points:
        return _make(INSUFFICIENT, f"{int(st['n_val'])} validation point(s) over "
                     f"{int(st['n_epochs'])} epoch(s); need >= {th.min_points}", st)
    if (
        st["val_rise"] >= th.overfit_rise
        and st["val_min_position"] <= th.overfit_min_position
        and st["train_after_val_min"] > 0
    ):
        return _make(OVERFITTING, f"validation loss rose {st['val_rise']:.0%} above its minimum "
                     f"(at {st['val_min_position']:.0%} of training) while training loss kept "
                     "falling", st)
    if st["train_drop"] < th.underfit_drop:
        return _make(UNDERFITTING, f"training loss fell only {st['train_drop']:.0%} of its first "
                     f"value (validation {st['val_drop']:.0%}): both stay high", st)
    if st["train_late_change"] < th.plateau_change and st["val_late_change"] < th.plateau_change:
        return _make(PLATEAU, f"after a {st['train_drop']:.0%} decrease, the losses changed by "
                     f"< {th.plateau_change:.0%} over the last {th.plateau_window:.0%} of epochs",
                     st)
    if st["val_spikes"] >= th.volatile_spikes and st["train_spikes"] < th.volatile_spikes:
        return _make(VOLATILE, f"{int(st['val_spikes'])} validation spike(s) > "
                     f"{th.volatile_spike:.0%} above the local median; training loss smooth", st)
    return _make(HEALTHY, f"training loss fell {st['train_drop']:.0%}, validation "
                 f"{st['val_drop']:.0%} and did not diverge", st)


def _make(kind: str, reason: str, st: dict[str, float]) -> Diagnosis:
    return Diagnosis(kind=kind, reason=reason, actions=list(ACTIONS[kind]), pattern=TABLE1[kind],
                     stats=st, curve_kind=kind, source="curves")
