"""The report's first screen: the answer before the evidence.

Headline numbers with their units (test RMSE in px, the validation RMSE that chose the snapshot,
PCK, mAP for multi-animal projects, the train-test gap), the Great Expectations verdicts (metric
validation and dataset validation), the diagnosis, the three worst strata of the test set and
what to do next. Pure: dicts and tables in, a :class:`Summary` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate import metrics as M
from poseops.report.fmt import fmt, fmt_plain, fmt_px, fmt_share

MIN_STRATUM_N = 3  # keypoints: a smaller test cell is noise, not a "worst stratum"
WORST_FACTOR = 1.25  # a worst stratum this much above the overall test RMSE gets a next step


@dataclass
class Card:
    """One headline number: label, value with unit, a line of context, an element id."""

    label: str
    value: str
    note: str = ""
    ident: str = ""


@dataclass
class Verdict:
    """One validation suite: ok True (passed) / False (failed) / None (not run)."""

    label: str
    ok: bool | None
    text: str


@dataclass
class Summary:
    cards: list[Card] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    kind: str = "unknown"
    reason: str = ""
    worst: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x


def headline_cards(headline: dict[str, dict[str, Any]]) -> list[Card]:
    """Test RMSE, validation RMSE, a PCK, PCK AUC / mAP where computed, the train-test gap."""
    test = headline.get(S.TEST) or {}
    val = headline.get(S.VAL) or {}
    cards = [Card("test RMSE", fmt_px(test.get("rmse_px")),
                  f"mean error (DLC's 'rmse') {fmt_px(test.get('mean_px'))}; "
                  f"{fmt('n', test.get('n'))} keypoints", "summary-test-rmse")]
    if val:
        cards.append(Card("validation RMSE", fmt_px(val.get("rmse_px")),
                          "the val split chose the snapshot", "summary-val-rmse"))
    pck = _pck_key(test)
    if pck:
        cards.append(Card(f"test PCK@{_pck_label(pck)}", fmt_share(test.get(pck)),
                          "keypoints within the threshold", "summary-test-pck"))
    auc = next((k for k in test if "auc" in k.lower()), None)
    if auc:
        cards.append(Card(f"test {auc.replace('_', ' ')}", fmt_plain(_num(test.get(auc))),
                          "area under the PCK curve, 0-1", "summary-test-auc"))
    m_ap = next((k for k in test if "map" in k.lower()), None)
    if m_ap:
        cards.append(Card(f"test {m_ap}", fmt_plain(_num(test.get(m_ap))),
                          "OKS mean average precision (DLC)", "summary-test-map"))
    gap = (headline.get("gap") or {}).get("train_test_gap_pct")
    if gap is not None and np.isfinite(_num(gap)):
        cards.append(Card("train-test gap", f"{_num(gap):.1f} %",
                          "test vs train RMSE", "summary-gap"))
    return cards


def _pck_key(d: dict[str, Any]) -> str | None:
    px = [k for k in d if k.startswith("pck_") and k.endswith("px")]
    if "pck_5px" in px:
        return "pck_5px"
    return px[0] if px else next((k for k in d if k.startswith("pck_")), None)


def _pck_label(key: str) -> str:
    t = key[len("pck_"):]
    if t.endswith("px"):
        return f"{t[:-2].replace('_', '.')} px"
    return t.replace("_", ".").replace("ref", " x reference")


def verdict(label: str, v: dict[str, Any] | None) -> Verdict:
    """A suite's result as one line: passed / FAILED with the failed expectations / not run."""
    if not v:
        return Verdict(label, None, "not run")
    results = v.get("results") or []
    failed = [str(r.get("name")) for r in results if r.get("success") is False]
    n = sum(r.get("success") is not None for r in results)
    if v.get("success"):
        return Verdict(label, True, f"passed ({n - len(failed)}/{n} expectations)")
    names = ", ".join(failed[:4]) + (" ..." if len(failed) > 4 else "")
    return Verdict(label, False, f"FAILED ({len(failed)} of {n} expectations failed: {names})")


def worst_strata(stratified: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The ``n`` worst test strata by RMSE, one per stratum type (bodypart, condition, bodypart
    x condition, animal, video...), cells with at least MIN_STRATUM_N keypoints."""
    need = {M.STRATUM_TYPE, M.STRATUM, S.SPLIT, "rmse_px", M.N}
    if stratified is None or stratified.empty or not need <= set(stratified.columns):
        return pd.DataFrame(columns=sorted(need))
    t = stratified[(stratified[S.SPLIT] == S.TEST) & (stratified[M.STRATUM_TYPE] != M.ALL)]
    t = t[pd.to_numeric(t[M.N], errors="coerce") >= MIN_STRATUM_N].dropna(subset=["rmse_px"])
    t = t.sort_values("rmse_px", ascending=False, kind="stable")
    return t.drop_duplicates(M.STRATUM_TYPE).head(n)


def stratum_text(stratum_type: str, stratum: str) -> str:
    """``bodypart_x_condition``, ``tailbase|high_dose`` -> ``tailbase × high_dose (bodypart ×
    condition)``."""
    return (f"{str(stratum).replace(M.CELL_SEP, ' × ')} "
            f"({str(stratum_type).replace('_x_', ' × ')})")


def build_summary(headline: dict[str, dict[str, Any]], stratified: pd.DataFrame,
                  diagnosis: dict[str, Any], validation: dict[str, Any] | None,
                  dataset_validation: dict[str, Any] | None) -> Summary:
    """The first screen of the report."""
    overall = _num((headline.get(S.TEST) or {}).get("rmse_px"))
    worst = worst_strata(stratified)
    lines = [f"{stratum_text(r[M.STRATUM_TYPE], r[M.STRATUM])}: RMSE {fmt_px(r['rmse_px'])} "
             f"({int(r[M.N])} keypoints; overall {fmt_px(overall)})"
             for _, r in worst.iterrows()]
    verdicts = [verdict("metric validation", validation),
                verdict("dataset validation", dataset_validation)]
    return Summary(cards=headline_cards(headline), verdicts=verdicts,
                   kind=str(diagnosis.get("kind", "unknown")),
                   reason=str(diagnosis.get("reason", "")), worst=lines,
                   next_steps=next_steps(verdicts, diagnosis, worst, overall))


def next_steps(verdicts: list[Verdict], diagnosis: dict[str, Any], worst: pd.DataFrame,
               overall: float) -> list[str]:
    """Failed suites first, then the diagnosis' first actions, then the worst stratum when it
    stands out (at most 4 lines)."""
    steps = [f"Fix what the {v.label} flags: {v.text.split(': ', 1)[-1].rstrip(')')}."
             for v in verdicts if v.ok is False]
    steps += [str(a) for a in (diagnosis.get("actions") or [])[:2]]
    if len(worst) and np.isfinite(overall) and overall > 0:
        r = worst.iloc[0]
        if float(r["rmse_px"]) > WORST_FACTOR * overall:
            steps.append(f"Label more frames of {stratum_text(r[M.STRATUM_TYPE], r[M.STRATUM])} "
                         f"({fmt_px(r['rmse_px'])} vs {fmt_px(overall)} overall): "
                         "poseops outliers, relabel, poseops merge.")
    return steps[:4]
