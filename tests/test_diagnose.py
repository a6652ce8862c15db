"""diagnose: synthetic loss curves of every kind in the guide's Table 1 get the right diagnosis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.curves import healthy, overfitting, plateau, underfitting, volatile

from poseops.core.errors import PoseopsError
from poseops.evaluate import diagnose as D

CASES = {
    D.HEALTHY: healthy,
    D.OVERFITTING: overfitting,
    D.UNDERFITTING: underfitting,
    D.PLATEAU: plateau,
    D.VOLATILE: volatile,
}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_is_recognised(kind, seed):
    diag = D.diagnose(CASES[kind](seed))
    assert diag.kind == kind, diag.reason
    assert diag.actions == D.ACTIONS[kind] and diag.reason and diag.pattern


def test_actions_follow_the_guide():
    text = {k: " ".join(v).lower() for k, v in D.ACTIONS.items()}
    assert "regularisation" in text[D.OVERFITTING] and "labeled set" in text[D.OVERFITTING]
    assert "capacity" in text[D.UNDERFITTING] and "epochs" in text[D.UNDERFITTING]
    assert "learning-rate schedule" in text[D.PLATEAU]
    assert "audit the validation set" in text[D.VOLATILE] and "lower the learning rate" in text[
        D.VOLATILE]


def test_validation_only_every_few_epochs_is_supported():
    c = overfitting(0)
    c.loc[c[D.EPOCH] % 3 != 0, D.VAL_LOSS] = np.nan  # DLC evaluates every eval_interval epochs
    assert D.diagnose(c).kind == D.OVERFITTING


def test_too_few_epochs_is_insufficient():
    c = healthy(0).head(3)
    d = D.diagnose(c)
    assert d.kind == D.INSUFFICIENT and "3 validation point" in d.reason


def test_scale_free():
    c = overfitting(1)
    c[[D.TRAIN_LOSS, D.VAL_LOSS]] *= 1e-3
    assert D.diagnose(c).kind == D.OVERFITTING


def test_curves_from_dlc_learning_stats_keep_last_row_per_step():
    stats = pd.DataFrame({
        "step": [1, 1, 2, 2],
        "losses/train.total_loss": [1.0, np.nan, 0.8, np.nan],
        "losses/eval.total_loss": [np.nan, 1.2, np.nan, 0.9],
        "metrics/test.rmse": [np.nan, 5.0, np.nan, 4.0],
    })
    # a logger may write train and eval of one epoch as two rows; DLC's CSV merges them
    merged = stats.groupby("step", as_index=False).first()
    for table in (stats, merged):
        curves = D.curves_from_learning_stats(table)
        assert curves[D.EPOCH].tolist() == [1, 2]
        assert curves[D.TRAIN_LOSS].tolist() == [1.0, 0.8]
        assert curves[D.VAL_LOSS].tolist() == [1.2, 0.9]


def test_missing_columns_are_errors():
    with pytest.raises(PoseopsError, match="losses/train.total_loss"):
        D.curves_from_learning_stats(pd.DataFrame({"step": [1]}))
    with pytest.raises(PoseopsError, match="val_loss"):
        D.diagnose(pd.DataFrame({D.EPOCH: [1], D.TRAIN_LOSS: [1.0]}))


# ------------------------------------------------------- the evaluated errors take part


def test_healthy_curves_with_a_large_train_test_gap_are_overfitting():
    """The demo: the curves look healthy, yet train RMSE 3.7 px, test 10.2 px (gap 176 %) fails
    validate_report's max_gap_pct. The diagnosis must not call that healthy."""
    curves = healthy(0)
    assert D.diagnose(curves).kind == D.HEALTHY  # the curves alone
    d = D.diagnose(curves, errors_px={"train": 3.7, "val": 8.1, "test": 10.2})
    assert d.kind == D.OVERFITTING and d.source == "errors" and d.curve_kind == D.HEALTHY
    assert d.reason.startswith("overfitting: test error 10.2 px is 176 % above train error 3.7 px")
    assert "loss curves alone: healthy" in d.reason
    assert d.actions == D.ACTIONS[D.OVERFITTING] and d.pattern == D.ERROR_PATTERNS[D.OVERFITTING]
    assert d.stats["train_test_gap_pct"] == pytest.approx(100 * (10.2 - 3.7) / 3.7)
    assert d.stats["test_rmse_px"] == 10.2 and "train_drop" in d.stats  # curve stats kept


def test_high_train_error_is_underfitting_whatever_the_curves_say():
    d = D.diagnose(healthy(1), errors_px={"train": 12.5, "val": 13.0, "test": 13.4})
    assert d.kind == D.UNDERFITTING and d.source == "errors"
    assert d.reason.startswith("underfit: train error 12.5 px is itself above 10 px")


def test_small_gap_leaves_the_curve_diagnosis():
    d = D.diagnose(healthy(2), errors_px={"train": 3.7, "val": 4.0, "test": 4.1})
    assert d.kind == D.HEALTHY and d.source == "curves"
    d = D.diagnose(plateau(0), errors_px={"train": 3.7, "test": 4.1})
    assert d.kind == D.PLATEAU
    # no test error: the train-validation gap decides
    d = D.diagnose(healthy(2), errors_px={"train": 3.0, "val": 6.0})
    assert d.kind == D.OVERFITTING and "validation error 6.0 px is 100 % above" in d.reason


def test_errors_alone_diagnose_without_curves():
    empty = pd.DataFrame(columns=[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS], dtype=float)
    d = D.diagnose(empty, errors_px={"train": 3.7, "test": 10.2})
    assert d.kind == D.OVERFITTING and d.curve_kind == D.INSUFFICIENT
    assert D.diagnose(empty, errors_px={"train": 3.7, "test": 3.9}).kind == D.INSUFFICIENT


def test_gap_threshold_is_validate_reports():
    """Same defaults as validate_report (and params.yaml); evaluate reads them from there."""
    import yaml

    from poseops.config.quality import ValidateReportParams

    th, vr = D.Thresholds(), ValidateReportParams()
    assert th.max_gap_pct == vr.max_gap_pct and th.max_train_rmse_px == vr.max_test_rmse_px
    repo = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "params.yaml"))
    section = repo["validate_report"]
    assert D.thresholds_from_validate_report(section) == {
        "max_gap_pct": section["max_gap_pct"], "max_train_rmse_px": section["max_test_rmse_px"]}
    loose = D.Thresholds(**D.thresholds_from_validate_report({"max_gap_pct": 200.0}))
    assert D.diagnose(healthy(0), loose, {"train": 3.7, "test": 10.2}).kind == D.HEALTHY


def test_split_errors_reads_the_true_rmse_per_split():
    headline = {"train": {"rmse_px": 3.7, "mean_px": 3.0}, "test": {"rmse_px": 10.2},
                "gap": {"train_test_gap_pct": 176.0}}
    assert D.split_errors(headline) == {"train": 3.7, "test": 10.2}
