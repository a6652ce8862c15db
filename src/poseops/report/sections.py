"""The report's tables beyond the summary: composition as compact pivots, cohorts, and the
optional sections other stages feed (a folder of summary.json + PNG figures + CSV tables:
``reports/behaviour/``, ``reports/ablation/``; the iteration history ``reports/iterations.csv``).
Pure functions over tables and dicts, plus :func:`load_folder` (reads one optional folder)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.report.figures import png_file_b64
from poseops.report.fmt import fmt_px, fmt_share

log = logging.getLogger(__name__)

TOTAL = "total"


# ------------------------------------------------------------------------------ composition


def frames_per_video_split(errors: pd.DataFrame) -> pd.DataFrame:
    """Evaluated frames per video x split (every split frame is evaluated), with totals."""
    if errors is None or errors.empty or not {S.VIDEO, S.SPLIT, S.IMAGE} <= set(errors.columns):
        return pd.DataFrame()
    counts = errors.groupby([S.VIDEO, S.SPLIT], observed=True)[S.IMAGE].nunique()
    return _with_totals(counts.unstack(fill_value=0), S.VIDEO)


def frames_per_condition_split(composition_metrics: dict[str, Any],
                               errors: pd.DataFrame) -> pd.DataFrame:
    """Frames per condition x split: composition.json's split record, else the errors table."""
    per = ((composition_metrics or {}).get("split") or {}).get(f"frames_per_{S.CONDITION}")
    if isinstance(per, dict) and per:
        wide = pd.DataFrame(per).fillna(0).astype(int)
    elif errors is not None and {S.CONDITION, S.SPLIT, S.IMAGE} <= set(errors.columns):
        wide = errors.groupby([S.CONDITION, S.SPLIT], observed=True)[S.IMAGE].nunique().unstack(
            fill_value=0)
    else:
        return pd.DataFrame()
    return _with_totals(wide.sort_index(), S.CONDITION)


def _with_totals(wide: pd.DataFrame, index_name: str) -> pd.DataFrame:
    order = [s for s in S.SPLITS if s in wide.columns]
    wide = wide[order + sorted(c for c in wide.columns if c not in order)]
    wide[TOTAL] = wide.sum(axis=1)
    wide.index = wide.index.astype(str)
    wide.loc[TOTAL] = wide.sum(axis=0)
    wide.index.name = index_name
    wide.columns.name = None
    return wide.astype(int).reset_index()


def _split_pair(pair: str, names: Counter) -> tuple[str, str]:
    """``"alice-bob"`` -> (alice, bob); a scorer name with a dash: the cut whose halves are
    the names seen most often across pairs."""
    cuts = [(pair[:i], pair[i + 1:]) for i, ch in enumerate(pair) if ch == "-"]
    return max(cuts, key=lambda ab: names[ab[0]] + names[ab[1]]) if cuts else (pair, "")


def labeler_matrix(composition_metrics: dict[str, Any]) -> pd.DataFrame:
    """Labeler agreement as a symmetric matrix: mean pairwise distance (px) per scorer pair."""
    per_pair = ((composition_metrics or {}).get("labeler_agreement") or {}).get("per_pair")
    if not isinstance(per_pair, dict) or not per_pair:
        return pd.DataFrame()
    names: Counter = Counter()
    for pair in per_pair:
        for i, ch in enumerate(pair):
            if ch == "-":
                names.update([pair[:i], pair[i + 1:]])
    cells = {_split_pair(p, names): v for p, v in per_pair.items()}
    scorers = sorted({s for ab in cells for s in ab if s})
    m = pd.DataFrame(np.nan, index=scorers, columns=scorers, dtype=float)
    for (a, b), v in cells.items():
        if a and b:
            m.loc[a, b] = m.loc[b, a] = np.nan if v is None else float(v)
    m.index.name = "scorer (px)"
    return m.reset_index()


def composition_facts(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The labeled set in a line: frames, videos, animals, conditions, scorers, NaN share, pose
    variance (label, value with unit)."""
    if not m:
        return []
    out = [(k.replace("_", " ").replace("n ", "", 1), str(m[k]))
           for k in ("total_frames", "n_videos", "n_animals", "n_sessions", "n_conditions",
                     "n_scorers") if m.get(k) is not None]
    if m.get("nan_share_overall") is not None:
        out.append(("keypoints not labeled", fmt_share(m["nan_share_overall"])))
    if m.get("pose_variance_index_px") is not None:
        out.append(("pose variance", fmt_px(m["pose_variance_index_px"])))
    mean = (m.get("labeler_agreement") or {}).get("mean_pairwise_px")
    if mean is not None:
        out.append(("labeler agreement (mean pairwise)", fmt_px(mean)))
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def flat_table(d: dict[str, Any], key: str = "metric") -> pd.DataFrame:
    """A nested dict as rows ``metric, value`` (lists as text)."""
    rows = [{key: k, "value": v if not isinstance(v, list | tuple) else ", ".join(map(str, v))}
            for k, v in flatten(d or {}).items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------- cohorts


def cohort_table(headline: dict[str, dict[str, Any]], extra: dict[str, Any] | None = None
                 ) -> pd.DataFrame:
    """Generalisation cohorts beside the standard test set: every headline entry that is not a
    standard split (or the gap: evaluate writes ``cohort:<name>``), plus a ``cohorts`` mapping,
    with ``rmse_drop_pct`` = 100 * (cohort RMSE - test RMSE) / test RMSE."""
    entries = {k: v for k, v in (headline or {}).items()
               if k not in (*S.SPLITS, "gap") and isinstance(v, dict)
               and ("rmse_px" in v or "mean_px" in v)}
    for k, v in (extra or {}).items():
        if isinstance(v, dict):
            entries.setdefault(k, v)
    if not entries:
        return pd.DataFrame()
    test = float((headline.get(S.TEST) or {}).get("rmse_px") or np.nan)
    rows = []
    for name, d in entries.items():
        rmse = d.get("rmse_px")
        rmse = np.nan if rmse is None else float(rmse)
        row = {"cohort": str(name).removeprefix("cohort:"), "n": d.get("n"), "rmse_px": rmse,
               "mean_px": d.get("mean_px"),
               "rmse_drop_pct": 100 * (rmse - test) / test if test and np.isfinite(test)
               else np.nan}
        row |= {k: v for k, v in d.items() if k.startswith("pck_") and k.endswith("px")}
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------- optional folders


@dataclass
class FolderSection:
    """What a stage left in one folder: summary.json, PNG figures, CSV tables."""

    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (name, base64 PNG)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


def load_folder(path: str | Path | None) -> FolderSection | None:
    """The folder's summary.json, *.png and *.csv (sorted by name); None when the folder or
    all three are absent. An unreadable summary.json or CSV is an error naming the file."""
    if path is None or not Path(path).is_dir():
        return None
    folder = Path(path)
    sec = FolderSection(folder)
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            sec.summary = json.loads(summary.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PoseopsError(f"report: cannot read {summary.name}: {e}", file=summary) from e
    sec.figures = [(p.stem, png_file_b64(p)) for p in sorted(folder.glob("*.png"))]
    for p in sorted(folder.glob("*.csv")):
        try:
            sec.tables.append((p.name, pd.read_csv(p)))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise PoseopsError(f"report: cannot read CSV: {e}", file=p) from e
    if not (sec.summary or sec.figures or sec.tables):
        return None
    return sec


def load_iterations(path: str | Path | None) -> pd.DataFrame:
    """``reports/iterations.csv`` (one row per refinement iteration), or empty when absent; it
    must have an ``iteration`` column."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame()
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PoseopsError(f"report: cannot read CSV: {e}", file=path) from e
    if "iteration" not in df.columns:
        raise PoseopsError(f"report: the iteration history needs a column 'iteration'; has "
                           f"{list(df.columns)}", file=path)
    return df
