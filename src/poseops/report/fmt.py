"""Numbers rounded for reading, and tables as the templates draw them.

One rule per column (or metric) name, so every table of the page reads the same: pixel errors
with 2 decimals (``2.74``), shares as percentages (``87.3 %``: PCK, pcutoff coverage, NaN share,
precision/recall, rates), percentages already in % (``*_pct``) with one decimal, counts as
integers, likelihoods with 2 decimals; anything else 3 decimals (or 3 significant digits when
small). The CSVs keep full precision: only the page rounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

COUNT_COLUMNS = {"n", "k", "n_pcutoff", "frames", "n_frames", "n_labeled", "n_units", "total"}
# errors over predictions with likelihood >= pcutoff: empty (NaN / JSON null) when none passes
PCUTOFF_ERROR_COLUMNS = {"mean_px_pcutoff", "rmse_px_pcutoff", "median_px_pcutoff"}
NO_PCUTOFF = "no prediction above pcutoff"
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
SHARE_WORDS = ("coverage", "share", "fraction", "rate", "precision", "recall")


def fmt_plain(v: Any) -> str:
    """The generic number format (3 decimals, 3 significant digits below 0.01); text as is."""
    if v is None:  # JSON null: a number that could not be computed
        return "NaN"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        return "NaN" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.3f}"
    return str(v)


def kind_of(name: str) -> str:
    """How a column / metric named ``name`` is shown: count, pct, share, px, likelihood, plain."""
    k = str(name).lower()  # a flattened key (nan_share.snout): its parents name the unit too
    last = k.rsplit(".", 1)[-1]
    if last in COUNT_COLUMNS or last.startswith("n_") or last.endswith("_frames"):
        return "count"
    if last.endswith("_pct") or last.endswith("%"):
        return "pct"
    if "auc" in last:
        return "plain"
    words = set(re.split(r"[^a-z0-9%]+", k))
    if last.startswith("pck") or words & set(SHARE_WORDS):
        return "share"
    if "px" in words:
        return "px"
    if "likelihood" in words:
        return "likelihood"
    return "plain"


def _number(v: Any) -> float | None:
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return None
    return float(v)


def fmt(name: str, v: Any) -> str:
    """``v`` shown as the column / metric ``name`` reads (see the module docstring)."""
    x = _number(v)
    if x is None or not np.isfinite(x):
        return fmt_plain(v)
    kind = kind_of(name)
    if kind == "count" and float(x).is_integer():
        return str(int(x))
    if kind == "pct":
        return f"{x:.1f} %"
    if kind == "share":
        return f"{100 * x:.1f} %"
    if kind in ("px", "likelihood"):
        return f"{x:.2f}"
    return fmt_plain(v)


def fmt_px(v: Any) -> str:
    """A pixel value with its unit, for sentences: ``2.74 px``."""
    x = _number(v)
    return "NaN" if x is None or not np.isfinite(x) else f"{x:.2f} px"


def fmt_share(v: Any) -> str:
    x = _number(v)
    return "NaN" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


@dataclass
class Table:
    """A table as the template draws it: header cells, rows of text cells, rows left out."""

    headers: list[str]
    rows: list[list[str]]
    ident: str | None = None
    more: int = 0  # rows not shown (they are in the CSV)
    classes: list[str] = field(default_factory=list)  # per column: "text" (left) or "num"

    @property
    def empty(self) -> bool:
        return not self.rows


def table(df: pd.DataFrame | None, max_rows: int = 60, ident: str | None = None,
          row_formats: bool = False, unit: str | None = None) -> Table:
    """``df`` as a :class:`Table` with every cell rounded by its column name; ``row_formats``:
    format by the first cell of each row instead (a transposed table: metric, split1, ...);
    ``unit`` (e.g. "px"): every cell but the first column formatted as that unit."""
    if df is None or df.empty:
        return Table([], [], ident)
    shown = df.head(max_rows)
    cols = [str(c) for c in shown.columns]
    rows = []
    for rec in shown.itertuples(index=False):
        key = str(rec[0])
        rows.append([_cell(unit if unit and i else key if row_formats and i else c, v)
                     for i, (c, v) in enumerate(zip(cols, rec, strict=True))])
    classes = ["text" if not pd.api.types.is_numeric_dtype(shown[c]) else "num"
               for c in shown.columns]
    return Table(cols, rows, ident, max(0, len(df) - max_rows), classes)


def _cell(name: str, v: Any) -> str:
    if (isinstance(v, str) and (name == "value" or kind_of(name) != "plain")
            and NUMBER.fullmatch(v.strip())):  # a number in a mixed CSV column read back
        x = float(v)
        v = int(x) if x.is_integer() and abs(x) < 1e15 else x
    if name in PCUTOFF_ERROR_COLUMNS and (v is None or (isinstance(v, float | np.floating)
                                                        and np.isnan(v))):
        return NO_PCUTOFF
    return fmt(name, v)
