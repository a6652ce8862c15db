"""The refinement history: one row per iteration in ``reports/iterations.csv`` (+ a PNG figure,
a DVC plot) and the stop rule.

``poseops compare`` adds (or replaces) the rows of the baseline and candidate iterations, with
errors on the fixed test set (the keypoints both models predicted), so every row is measured on
the same frames. Columns: ``iteration, test_rmse_px, test_mean_px, n_keypoints,
test_rmse_px_<condition>`` (one per condition), ``frames_added`` (relabeled frames merged into
this iteration, from merge's report), ``outliers_found`` (frames the round's outliers manifest
listed), ``change_pct`` (test RMSE change from the previous row, %), ``stop_refining`` (|change|
below ``compare.stop_change_pct``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.refine.common import rmse

log = logging.getLogger(__name__)

HEAD = ["iteration", "test_rmse_px", "test_mean_px", "n_keypoints"]
TAIL = ["frames_added", "outliers_found", "change_pct", "stop_refining"]
COND_PREFIX = "test_rmse_px_"


def iteration_row(iteration: int, errors: pd.Series, conditions: pd.Series | None = None
                  ) -> dict:
    """One history row from one model's test errors (px per keypoint) and their conditions."""
    row: dict = {"iteration": int(iteration), "test_rmse_px": rmse(errors.to_numpy()),
                 "test_mean_px": float(np.nanmean(errors.to_numpy(float))),
                 "n_keypoints": int(np.isfinite(errors.to_numpy(float)).sum())}
    if conditions is not None:
        for cond, part in errors.groupby(conditions.astype(str).to_numpy(), sort=True):
            row[f"{COND_PREFIX}{cond}"] = rmse(part.to_numpy())
    return row


def merge_counts(report: dict | None, iteration: int) -> dict:
    """frames_added / outliers_found of ``iteration`` from merge's report (when it made it)."""
    if not report or int(report.get("iteration", -1)) != int(iteration):
        return {}
    added = int(report.get("frames_added", 0))
    found = report.get("outliers_picked", added + int(report.get("frames_skipped", 0)))
    return {"frames_added": added, "outliers_found": int(found)}


def upsert(history: pd.DataFrame, rows: list[dict], stop_change_pct: float) -> pd.DataFrame:
    """``history`` with ``rows`` added (a row of an iteration already there replaces it, keeping
    its counts when the new row has none), sorted by iteration, change_pct and stop_refining
    recomputed."""
    old = history.set_index("iteration") if len(history) else pd.DataFrame()
    for row in rows:
        it = int(row["iteration"])
        new = pd.Series({k: v for k, v in row.items() if k != "iteration"}, dtype=object)
        if it in old.index:
            keep = old.loc[it]
            new = new.combine_first(keep[[c for c in ("frames_added", "outliers_found")
                                          if c in keep.index and pd.notna(keep[c])]])
            old = old.drop(index=it)
        old = pd.concat([old, new.to_frame(it).T])
    out = old.sort_index().rename_axis("iteration").reset_index()
    for c in ("frames_added", "outliers_found"):
        if c not in out.columns:
            out[c] = np.nan
    rmse = out["test_rmse_px"].astype(float)
    out["change_pct"] = 100 * (rmse - rmse.shift(1)) / rmse.shift(1)
    out["stop_refining"] = out["change_pct"].abs() < stop_change_pct
    conds = sorted(c for c in out.columns if c.startswith(COND_PREFIX))
    return out[HEAD + conds + TAIL]


def plot(history: pd.DataFrame, path: Path) -> Path:
    """Test RMSE (overall and per condition) vs iteration, with frames added / outliers found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poseops.core.fileio import atomic_path

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    it = history["iteration"].astype(int)
    ax.plot(it, history["test_rmse_px"].astype(float), "o-", color="black", lw=2, label="all")
    for c in (c for c in history.columns if c.startswith(COND_PREFIX)):
        ax.plot(it, history[c].astype(float), "o--", label=c[len(COND_PREFIX):])
    ax.set_ylabel("test RMSE (px, fixed test set)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    w = 0.38
    ax2.bar(it - w / 2, history["outliers_found"].astype(float).fillna(0), w,
            label="outliers found")
    ax2.bar(it + w / 2, history["frames_added"].astype(float).fillna(0), w, label="frames added")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("frames")
    ax2.set_xticks(list(it))
    ax2.legend(fontsize=8)
    last = history.iloc[-1]
    if len(history) > 1 and bool(last["stop_refining"]):
        ax.set_title(f"stop refining: last round changed test RMSE {last['change_pct']:+.1f} %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def update_history(path: str | Path, paired: pd.DataFrame, iterations: tuple[int, int],
                   stop_change_pct: float, merge_report: str | Path | None = None) -> pd.DataFrame:
    """Add the baseline's and candidate's rows (from compare's paired table: error_baseline,
    error_candidate, condition) to the history CSV at ``path``; write it and ``<path>.png``."""
    from poseops.core.fileio import write_csv

    path = Path(path)
    cond = paired[S.CONDITION] if S.CONDITION in paired.columns else None
    report = None
    if merge_report and Path(merge_report).is_file():
        report = json.loads(Path(merge_report).read_text())
    rows = []
    for it, col in zip(iterations, ("error_baseline", "error_candidate"), strict=True):
        rows.append({**iteration_row(it, paired[col], cond), **merge_counts(report, it)})
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    hist = upsert(old, rows, stop_change_pct)
    write_csv(hist, path)
    plot(hist, path.with_suffix(".png"))
    last = hist.iloc[-1]
    if len(hist) > 1 and not math.isnan(float(last["change_pct"])):
        log.info("history: iteration %d test RMSE %.2f px (%+.1f %%)%s -> %s",
                 int(last["iteration"]), float(last["test_rmse_px"]), float(last["change_pct"]),
                 ": stop refining" if bool(last["stop_refining"]) else "", path)
    return hist
