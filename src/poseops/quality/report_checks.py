"""`poseops validate-report`: Great Expectations checks on the evaluation metrics
(suite `expectations/report.json`, run by poseops.quality.gx).

Tables given to the suite (built by :func:`report_tables`, pure):
    metrics     one row: ``<split>_<metric>`` for every headline number (``test_rmse_px``,
                ``gap_train_test_gap_pct``, ``test_median_likelihood``, ...)
    headline    long: ``metric, value`` for the headline metrics that must not be NaN
    conditions  ``stratum, n``: per condition with rows in the errors table, its labeled
                keypoints with a prediction (a condition expected but absent has no row)
    bodyparts   ``stratum, n``: the same per bodypart
    cohorts     ``cohort, rmse_px, test_rmse_px, rmse_drop_pct``: per generalisation cohort
                (split.cohorts; only when there are cohorts), checked against
                ``evaluate.max_cohort_drop_pct`` (null: skipped, recorded only)
``poseops.commands.validate_report`` writes the results to `validate_report.out` and tags them on
the training's MLflow run (:func:`tag_run`); a failure stops
the pipeline (or only warns when `validate_report.fail_on_error` is false) naming the failed
expectation and its observed value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.quality import DEFAULT_HEADLINE, ValidateReportParams
from poseops.core import schema as S

log = logging.getLogger(__name__)

def report_tables(
    headline: Mapping[str, Mapping[str, float]],
    errors: pd.DataFrame,
    headline_metrics: Sequence[str] = DEFAULT_HEADLINE,
    presence_split: str | None = None,
) -> dict[str, pd.DataFrame]:
    """The tables the report suite checks (see the module docstring); the expected condition and
    bodypart sets are suite parameters (``expected.*``)."""
    flat = {f"{split}_{k}": _f(v) for split, d in headline.items() for k, v in d.items()}
    metrics = pd.DataFrame([flat])
    rows = []
    for split in S.SPLITS:
        d = headline.get(split)
        if d is None:
            rows += [{"metric": f"{split}_{m}", "value": np.nan} for m in headline_metrics]
            continue
        rows += [{"metric": f"{split}_{m}", "value": _f(d.get(m))} for m in headline_metrics]
    gap = (headline.get("gap") or {}).get("train_test_gap_pct")
    rows.append({"metric": "gap_train_test_gap_pct", "value": _f(gap)})
    e = errors if presence_split is None else errors[errors[S.SPLIT] == presence_split]
    labeled = e[np.isfinite(e[S.ERROR_PX].to_numpy(float))]

    def counts(col: str) -> pd.DataFrame:
        if col not in e.columns:
            return pd.DataFrame({"stratum": pd.Series(dtype=str), "n": pd.Series(dtype=int)})
        n = labeled[col].astype(str).value_counts()
        cats = sorted(set(e[col].dropna().astype(str)))
        return pd.DataFrame({"stratum": cats, "n": [int(n.get(c, 0)) for c in cats]})

    tables = {
        "metrics": metrics,
        "headline": pd.DataFrame(rows),
        "conditions": counts(S.CONDITION),
        "bodyparts": counts(S.BODYPART),
    }
    cohorts = cohort_drops(headline)
    if len(cohorts):
        tables["cohorts"] = cohorts
    return tables


def cohort_drops(headline: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """``cohort, rmse_px, test_rmse_px, rmse_drop_pct``: one row per generalisation cohort
    (headline entries ``cohort:<name>``, split.cohorts), empty without cohorts."""
    test = _f((headline.get(S.TEST) or {}).get("rmse_px"))
    rows = [{"cohort": k[len(S.COHORT_PREFIX):], "rmse_px": _f(d.get("rmse_px")),
             "test_rmse_px": test, "rmse_drop_pct": _f(d.get("rmse_drop_pct"))}
            for k, d in headline.items() if S.is_cohort(k)]
    return pd.DataFrame(rows, columns=["cohort", "rmse_px", "test_rmse_px", "rmse_drop_pct"])


def _f(v: Any) -> float:
    return float(v) if v is not None and pd.notna(v) else float("nan")


def validate(
    params: ValidateReportParams,
    headline: Mapping[str, Mapping[str, float]],
    errors: pd.DataFrame,
    expected_conditions: Sequence[str],
    expected_bodyparts: Sequence[str],
    all_params: Mapping[str, Any] | None = None,
    max_cohort_drop_pct: float | None = None,
) -> Any:
    """Run the suite; returns poseops.quality.gx.ValidationResult (not raising: call ``.check``).
    ``max_cohort_drop_pct`` (``evaluate.max_cohort_drop_pct``): the largest allowed
    ``rmse_drop_pct`` of a generalisation cohort (None: the expectation is skipped, the drops
    are only recorded)."""
    from poseops.quality import gx

    tables = report_tables(headline, errors, params.headline, params.presence_split)
    p = {**(all_params or {}), "validate_report": asdict(params),
         "expected": {"conditions": sorted(map(str, expected_conditions)),
                      "bodyparts": sorted(map(str, expected_bodyparts))},
         "cohorts": {"max_drop_pct": max_cohort_drop_pct,
                     "check_drop": max_cohort_drop_pct is not None}}
    return gx.validate_tables(params.suite, tables, p)


def tag_run(run_id: str, result: Any) -> None:
    """Tag the MLflow run with the validation outcome (and the failure message)."""
    from mlflow import MlflowClient

    from poseops.tracking.runs import quiet_env, tracking_uri

    quiet_env()
    client = MlflowClient(tracking_uri=tracking_uri())
    client.set_tag(run_id, "validate_report", "passed" if result.success else "failed")
    client.set_tag(run_id, "validate_report_message", result.message()[:4000])
