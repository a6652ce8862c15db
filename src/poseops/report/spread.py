"""The report's run-to-run spread (issue 24): when an ablation / seed-ensemble result exists
(``reports/ablation``: ``spread.csv`` + ``summary.json``), the first screen shows every headline
number of the baseline arm (the current config) as mean ± SD over its seeds (SD ddof 1, as
``spread.csv``), with the number of seeds: how much one training's numbers move by its seed
alone. Pure: a :class:`~poseops.report.sections.FolderSection` in, a dict for the template out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poseops.report.fmt import fmt, kind_of
from poseops.report.sections import FolderSection

SPREAD_CSV = "spread.csv"
SKIP = {"dlc_rmse_px", "dlc_rmse_pcutoff_px"}  # = mean_px, mean_px_pcutoff
FIRST = ["rmse_px", "mean_px", "median_px", "p95_px"]  # then spread.csv's order
LABELS = {"rmse_px": "RMSE", "mean_px": "mean error (DLC 'rmse')", "median_px": "median error",
          "p95_px": "95th percentile error"}


def _text(metric: str, mean: float, sd: float) -> str:
    unit = " px" if kind_of(metric) in ("px",) else ""
    return f"{fmt(metric, mean)} ± {fmt(metric, sd)}{unit}"


def seed_spread_summary(ablation: FolderSection | None) -> dict[str, Any] | None:
    """``{arm, split, n_seeds, items: [{metric, label, text, n_seeds}], source}`` for the
    baseline arm of the ablation's ``spread.csv`` (``summary.json`` ``baseline``; else its only
    arm); None without a spread table, or with fewer than 2 seeds. Counts (``n``) are left out:
    they do not vary with the seed."""
    if ablation is None:
        return None
    spread = next((df for name, df in ablation.tables if name == SPREAD_CSV), None)
    need = {"arm", "metric", "n_seeds", "mean", "sd"}
    if spread is None or spread.empty or not need <= set(spread.columns):
        return None
    arms = list(dict.fromkeys(spread["arm"].astype(str)))
    arm = str(ablation.summary.get("baseline") or (arms[0] if len(arms) == 1 else ""))
    rows = spread[(spread["arm"].astype(str) == arm)
                  & (pd.to_numeric(spread["n_seeds"], errors="coerce") >= 2)]
    rows = rows[~rows["metric"].isin(SKIP) & (rows["metric"].map(kind_of) != "count")]
    if rows.empty:
        return None
    order = {m: i for i, m in enumerate(FIRST)}
    rows = rows.assign(_o=rows["metric"].map(lambda m: order.get(m, len(FIRST)))).sort_values(
        "_o", kind="stable")
    split = str(ablation.summary.get("split") or "test")
    items = [{"metric": str(r["metric"]),
              "label": f"{split} {LABELS.get(str(r['metric']), str(r['metric']).replace('_', ' '))}",
              "text": _text(str(r["metric"]), float(r["mean"]), float(r["sd"])),
              "n_seeds": int(r["n_seeds"])} for _, r in rows.iterrows()
             if np.isfinite(float(r["mean"]))]
    n = sorted({it["n_seeds"] for it in items})
    return {"arm": arm, "split": split, "n_seeds": n[0] if len(n) == 1 else n, "items": items,
            "source": str(ablation.path / SPREAD_CSV)}
