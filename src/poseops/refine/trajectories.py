"""`poseops compare ... --trajectories BASE CAND`: did refinement make trajectories steadier?

A paired per-video comparison of two behaviour outputs' ``video_quality.csv`` (``poseops
behaviour`` on the same videos with the baseline's and the candidate's model): for each bodypart
(and the reference ``centroid``), raw or filtered, and each label-free metric, the per-video
difference candidate - baseline (negative = steadier), with :mod:`poseops.refine.compare`'s
statistics over videos: the Wilcoxon signed-rank test (rank-biserial effect size) and the
bootstrap CI of the median difference (each video one unit). Fewer than ``min_units`` paired
videos: NaN p-value / CI, with the reason. Pure pandas; the command writes the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine.compare import BASE, CAND, bootstrap_median_ci, wilcoxon_signed_rank

QUALITY_FILE = "video_quality.csv"
# lower is steadier for every one of them
METRICS = ["jitter_px", "jump_rate", "low_likelihood_share", "longest_low_run"]
KEYS = [S.VIDEO, S.BODYPART, "filtered"]


def read_quality(path: str | Path) -> pd.DataFrame:
    """A behaviour output's ``video_quality.csv`` (the file, or the folder holding it); a
    per-individual table (tracked multi-animal) is keyed ``<video>/<individual>``."""
    p = Path(path)
    p = p / QUALITY_FILE if p.is_dir() else p
    if not p.is_file():
        raise PoseopsError("no trajectory quality table: run `poseops behaviour` first", file=p)
    df = pd.read_csv(p)
    if S.INDIVIDUAL in df.columns:  # tracked multi-animal: each animal's track is one unit
        df = df.assign(**{S.VIDEO: df[S.VIDEO].astype(str) + "/" + df[S.INDIVIDUAL].astype(str)})
        df = df.drop(columns=S.INDIVIDUAL)
    missing = [c for c in KEYS + METRICS if c not in df.columns]
    if missing:
        raise PoseopsError(f"not a behaviour video_quality.csv: missing column(s) {missing}",
                           file=p)
    if df.duplicated(KEYS).any():
        row = int(np.flatnonzero(df.duplicated(KEYS))[0]) + 2
        raise PoseopsError("duplicate (video, bodypart, filtered) row", file=p, row=row)
    return df.assign(**{S.VIDEO: df[S.VIDEO].astype(str), S.BODYPART: df[S.BODYPART].astype(str),
                        "filtered": df["filtered"].astype(bool)})


def _status(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    return "steadier" if hi < 0 else "less steady" if lo > 0 else "unchanged"


def compare_quality(base: pd.DataFrame, cand: pd.DataFrame, n_boot: int = 5000,
                    ci: float = 0.95, seed: int = 0, min_units: int = 5) -> pd.DataFrame:
    """One row per (bodypart, filtered, metric): n_videos (paired), baseline / candidate median,
    median_diff (candidate - baseline, per video), ci_low / ci_high (bootstrap over videos),
    wilcoxon_p, rank_biserial, reason, status (steadier: the CI below 0; less steady: above;
    unchanged; undetermined: no CI). Only videos in both tables are paired; none in common is
    an error."""
    m = base[KEYS + METRICS].merge(cand[KEYS + METRICS], on=KEYS, suffixes=(f"_{BASE}",
                                                                             f"_{CAND}"))
    if m.empty:
        raise PoseopsError("the two trajectory quality tables have no (video, bodypart, "
                           "filtered) in common: analyze the same videos with both models")
    rows = []
    for (bp, filt), g in m.groupby([S.BODYPART, "filtered"], sort=True):
        for metric in METRICS:
            b, c = g[f"{metric}_{BASE}"].to_numpy(float), g[f"{metric}_{CAND}"].to_numpy(float)
            d = c - b
            ok = np.isfinite(d)
            test = wilcoxon_signed_rank(d[ok], min_n=min_units)
            med, lo, hi = bootstrap_median_ci(d[ok], n_boot, ci, seed, min_units=min_units)
            rows.append({
                S.BODYPART: bp, "filtered": bool(filt), "metric": metric,
                "n_videos": int(ok.sum()), f"median_{BASE}": float(np.median(b[ok])) if ok.any()
                else np.nan, f"median_{CAND}": float(np.median(c[ok])) if ok.any() else np.nan,
                "median_diff": med, "ci_low": lo, "ci_high": hi,
                "wilcoxon_p": test["p_value"], "rank_biserial": test["rank_biserial"],
                "reason": test["reason"], "status": _status(lo, hi)})
    return pd.DataFrame(rows)


def headline(table: pd.DataFrame, reference: str = "centroid") -> dict:
    """The reference point's raw jitter row (summary.json of compare), or {} when absent."""
    r = table[(table[S.BODYPART] == reference) & ~table["filtered"]
              & (table["metric"] == "jitter_px")]
    if r.empty:
        return {}
    r = r.iloc[0]
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}


VIDEOS_FILE = "trajectories_videos.csv"  # compare.out: the per-video pairs behind the table


def paired_videos(base: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """The per-video pairs behind :func:`compare_quality`: one row per (video, bodypart,
    filtered) in both tables, with the candidate's metadata columns (condition, dose, ...) and
    ``<metric>_baseline``, ``<metric>_candidate``, ``<metric>_diff`` (candidate - baseline)."""
    meta = [c for c in cand.columns if c not in KEYS + METRICS and c not in
            ("n_frames", "mean_likelihood")]
    m = base[KEYS + METRICS].merge(cand[KEYS + meta + METRICS], on=KEYS,
                                   suffixes=(f"_{BASE}", f"_{CAND}"))
    for metric in METRICS:
        m[f"{metric}_diff"] = m[f"{metric}_{CAND}"] - m[f"{metric}_{BASE}"]
    cols = [f"{metric}_{s}" for metric in METRICS for s in (BASE, CAND, "diff")]
    return m[KEYS + meta + cols].sort_values(KEYS, kind="stable").reset_index(drop=True)
