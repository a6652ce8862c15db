"""The report's "did refinement make trajectories steadier?" subsection (under "Trajectories and
behaviour"), from ``poseops compare --trajectories``' output in ``compare.out``:

- ``trajectories_videos.csv``: per video the reference point's (``centroid``) jitter before (the
  baseline model) and after (the candidate), raw and filtered, with the video's condition;
- ``trajectories.csv``: the paired test over videos (median difference, bootstrap CI, Wilcoxon
  p, rank-biserial, status) of the reference point's label-free metrics;
- a figure: each video's jitter before -> after (one line per video, coloured by condition).

Shown only when ``trajectories.csv`` exists (the per-video table and figure also need
``trajectories_videos.csv``). Pure pandas + matplotlib; the numbers are the CSVs' (the page
rounds them with :mod:`poseops.report.fmt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.report.figures import _plt, _png

TESTS_FILE = "trajectories.csv"  # poseops.refine.trajectories (compare --trajectories)
VIDEOS_FILE = "trajectories_videos.csv"
REFERENCE = "centroid"
BEFORE, AFTER, DIFF = "jitter px (before)", "jitter px (after)", "jitter px (after - before)"
TEST_COLUMNS = {"metric": "metric", "filtered": "filtered", "n_videos": "n_videos",
                "median_baseline": "median before", "median_candidate": "median after",
                "median_diff": "median diff", "ci_low": "CI low", "ci_high": "CI high",
                "wilcoxon_p": "Wilcoxon p", "rank_biserial": "rank-biserial",
                "status": "status"}


@dataclass
class TrajectoriesSection:
    """compare --trajectories' tables for the page."""

    path: Path
    tests: pd.DataFrame  # the reference point's paired tests (one row per metric x filtered)
    videos: pd.DataFrame = field(default_factory=pd.DataFrame)  # per video jitter before/after
    figure: str | None = None  # base64 PNG


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PoseopsError(f"report: cannot read CSV: {e}", file=path) from e


def _need(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise PoseopsError(f"report: not compare --trajectories' table: missing column(s) "
                           f"{missing}", file=path)


def tests_table(tests: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """The reference point's rows of trajectories.csv (raw first), columns renamed for reading
    (``filtered`` as raw / filtered)."""
    t = tests[tests[S.BODYPART].astype(str) == reference].copy()
    t["filtered"] = t["filtered"].map(_flag)
    t = t.sort_values("filtered", key=lambda s: s.eq("filtered"), kind="stable")
    return t[list(TEST_COLUMNS)].rename(columns=TEST_COLUMNS).reset_index(drop=True)


def videos_table(videos: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per video (and raw / filtered): condition, the reference point's jitter before, after and
    after - before (px)."""
    v = videos[videos[S.BODYPART].astype(str) == reference].copy()
    v["filtered"] = v["filtered"].map(_flag)
    cond = [S.CONDITION] if S.CONDITION in v.columns else []
    ind = [S.INDIVIDUAL] if S.INDIVIDUAL in v.columns else []
    out = v[[S.VIDEO, *ind, *cond, "filtered", "jitter_px_baseline", "jitter_px_candidate",
             "jitter_px_diff"]].rename(columns={"jitter_px_baseline": BEFORE,
                                                "jitter_px_candidate": AFTER,
                                                "jitter_px_diff": DIFF})
    return out.sort_values(["filtered", S.VIDEO, *ind], kind="stable").reset_index(drop=True)


def _flag(v: object) -> str:
    return "filtered" if str(v).strip().lower() in ("true", "1", "1.0") else "raw"


def fig_before_after(videos: pd.DataFrame) -> str | None:
    """Each video's reference jitter before -> after (a line per video, colour = condition),
    one panel per raw / filtered; None when there is nothing to draw."""
    if videos.empty:
        return None
    plt = _plt()
    kinds = [k for k in ("raw", "filtered") if (videos["filtered"] == k).any()]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.2), squeeze=False)
    conds = list(dict.fromkeys(videos[S.CONDITION])) if S.CONDITION in videos.columns else [None]
    colours = {c: f"C{i}" for i, c in enumerate(conds)}
    for ax, k in zip(axes[0], kinds, strict=True):
        seen: set = set()
        for _, r in videos[videos["filtered"] == k].iterrows():
            c = r[S.CONDITION] if S.CONDITION in videos.columns else None
            ax.plot([0, 1], [r[BEFORE], r[AFTER]], "o-", color=colours[c], alpha=0.8,
                    label=None if c in seen or c is None else str(c))
            seen.add(c)
        ax.set_xticks([0, 1], ["before (baseline)", "after (candidate)"], fontsize=8)
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"{REFERENCE} jitter, {k} (px)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _png(fig)


def load_trajectories(folder: str | Path | None) -> TrajectoriesSection | None:
    """compare --trajectories' output in ``folder`` (compare.out), None when absent."""
    if folder is None or not (Path(folder) / TESTS_FILE).is_file():
        return None
    folder = Path(folder)
    tests = _read(folder / TESTS_FILE)
    _need(tests, [S.BODYPART, *TEST_COLUMNS], folder / TESTS_FILE)
    sec = TrajectoriesSection(folder, tests_table(tests))
    if (folder / VIDEOS_FILE).is_file():
        videos = _read(folder / VIDEOS_FILE)
        _need(videos, [S.VIDEO, S.BODYPART, "filtered", "jitter_px_baseline",
                       "jitter_px_candidate", "jitter_px_diff"], folder / VIDEOS_FILE)
        sec.videos = videos_table(videos)
        sec.figure = fig_before_after(sec.videos)
    return sec
