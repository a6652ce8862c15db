"""validate-report: the GE suite expectations/report.json on synthetic evaluation outputs."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from support.tables import BODYPARTS, CONDITIONS, synthetic_tables

from poseops.config.quality import ValidateReportParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.evaluate import metrics as M
from poseops.quality.report_checks import report_tables, validate


@pytest.fixture(scope="module")
def evaluation():
    labels, preds, split = synthetic_tables()
    errors = M.compute_errors(labels, preds, split, ("snout", "tailbase"))
    headline = M.headline_metrics(M.stratified_table(errors, M.MetricSpec(pcutoff=0.3)))
    return errors, headline


def _params(repo_root, **kw):
    base = dict(suite=str(repo_root / "expectations" / "report.json"), max_test_rmse_px=100.0,
                max_gap_pct=1000.0, min_median_likelihood=0.1)
    return ValidateReportParams(**{**base, **kw})


def test_report_tables_shape(evaluation):
    errors, headline = evaluation
    bad = errors.copy()
    bad.loc[bad[S.CONDITION] == "low_dose", S.ERROR_PX] = np.nan
    t = report_tables(headline, bad)
    assert t["metrics"].shape[0] == 1
    assert t["metrics"]["test_rmse_px"].iloc[0] == headline["test"]["rmse_px"]
    assert t["metrics"]["gap_train_test_gap_pct"].iloc[0] == headline["gap"]["train_test_gap_pct"]
    cond = t["conditions"].set_index("stratum")["n"]
    assert cond["low_dose"] == 0  # rows but nothing labeled -> n = 0, caught by the suite
    labeled = errors[errors[S.ERROR_PX].notna()]
    assert cond["vehicle"] == (labeled[S.CONDITION] == "vehicle").sum()
    assert len(t["headline"]) == 3 * 6 + 1


def test_passes_on_good_metrics(evaluation, repo_root):
    errors, headline = evaluation
    res = validate(_params(repo_root), headline, errors, CONDITIONS, BODYPARTS)
    assert res.success, res.message()
    assert int(res.results["success"].eq(True).sum()) == 8


def test_test_rmse_above_threshold_fails_naming_expectation_and_value(evaluation, repo_root):
    errors, headline = evaluation
    observed = headline["test"]["rmse_px"]
    res = validate(_params(repo_root, max_test_rmse_px=observed / 2), headline, errors,
                   CONDITIONS, BODYPARTS)
    assert not res.success
    assert list(res.failures()["name"]) == ["test_rmse_max"]
    msg = res.message()
    assert "test_rmse_max" in msg
    shown = [float(x) for x in re.findall(r"\d+\.\d+", msg)]
    assert any(abs(v - observed) < 1e-3 for v in shown), msg
    with pytest.raises(PoseopsError, match="test_rmse_max"):
        res.check(fail_on_error=True)


def test_fail_on_error_off_only_warns(evaluation, repo_root, caplog):
    errors, headline = evaluation
    res = validate(_params(repo_root, max_gap_pct=-1000.0), headline, errors, CONDITIONS,
                   BODYPARTS)
    assert list(res.failures()["name"]) == ["train_test_gap_max"]
    with caplog.at_level(logging.WARNING):
        res.check(fail_on_error=False)
    assert "train_test_gap_max" in caplog.text


def test_missing_condition_and_nan_headline_fail(evaluation, repo_root):
    errors, headline = evaluation
    bad = {k: dict(v) for k, v in headline.items()}
    bad["test"]["mean_px_pcutoff"] = np.nan
    res = validate(_params(repo_root), bad, errors, CONDITIONS + ["extra_dose"], BODYPARTS)
    failed = set(res.failures()["name"])
    assert failed == {"headline_not_nan", "every_condition_evaluated"}
    msg = res.message()
    assert "extra_dose" in msg and "test_mean_px_pcutoff" in msg


def test_condition_without_labeled_keypoints_fails(evaluation, repo_root):
    errors, headline = evaluation
    bad = errors.copy()
    bad.loc[bad[S.CONDITION] == "low_dose", S.ERROR_PX] = np.nan
    res = validate(_params(repo_root), headline, bad, CONDITIONS, BODYPARTS)
    assert list(res.failures()["name"]) == ["condition_n_at_least_1"]
    assert "low_dose" in res.message()


def test_low_likelihood_fails(evaluation, repo_root):
    errors, headline = evaluation
    res = validate(_params(repo_root, min_median_likelihood=0.99), headline, errors, CONDITIONS,
                   BODYPARTS)
    assert list(res.failures()["name"]) == ["test_median_likelihood_min"]
