"""Multi-labeler consensus and labeler quality control (`poseops consensus`).

Reads the tidy labels table of ingest (one row per image, scorer, bodypart) and writes

- the consensus table: same columns with ``scorer == "consensus"``, one row per (image, bodypart),
  plus ``n_labelers`` (labelers kept after outlier removal), ``n_removed``, ``ila_px``
  (inter-labeler agreement: mean pairwise distance of the kept points, NaN when labeled once),
  ``disagreement`` (two labelers further apart than ``two_labeler_disagreement_px``),
  ``frame_ila_px`` (ILA of the whole frame) and ``sample_weight`` (see :func:`sample_weights`);
- labeler QC tables under ``reports/labelers/`` (qc, pairwise, icc, drift, stop_rule, heatmap)
  and a summary JSON (DVC metrics).

The aggregation follows the field guide (FAQ A3): per (image, bodypart), points further than
``mad_k`` x MAD from the median position are removed, the consensus is the median of the rest.

- Median position = coordinate-wise median of x and of y (not the geometric median): it is what
  the guide describes, it is exact and vectorises; for 1-3 points both agree closely.
- MAD = median over labelers of the Euclidean distance to that median position (the 2-D analogue
  of the median absolute deviation; no 1.4826 normal-consistency factor, as in the guide).
- Scale = max(MAD, ``min_scale_px``): identical labels (MAD = 0) remove nothing unless a point is
  further than ``mad_k * min_scale_px`` away.
- Two labelers: nobody can tell who is wrong, so both are kept (consensus = mean = median) and
  the pair is flagged when further apart than ``two_labeler_disagreement_px``.
- Three or more: the rule above; since MAD is a median distance, at most half the points can go.
- A labeler with NaN for a bodypart is ignored for that bodypart; frames labeled once pass through.

Multi-animal labels (an ``individual`` column): one consensus point per (image, individual,
bodypart). Labelers name the animals of a frame independently, so before any median each
labeler's individuals are matched by position to a reference labeler's (:func:`match_identities`:
gold scorer, else the labeler with most keypoints on the image; Hungarian assignment on the mean
keypoint distance); a better assignment by more than ``swap_margin_px`` is an identity swap: the
labeler's individuals are renamed for the consensus and every QC table, and the swap is reported
(``identity_swaps.csv``, ``n_identity_swaps`` in qc.csv's "all" rows and in the summary). Unique
bodyparts (individual ``single``) are never renamed. Per-bodypart QC (bias, ICC, pairwise, stop
rule) pools the individuals: a bodypart's ICC has one target per (image, individual).
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

# Column names added by this stage (consensus table and QC tables).
N_LABELERS = "n_labelers"
N_REMOVED = "n_removed"
ILA_PX = "ila_px"
FRAME_ILA_PX = "frame_ila_px"
SAMPLE_WEIGHT = "sample_weight"
DISAGREEMENT = "disagreement"
ALL = "all"  # bodypart value of the per-labeler rows that pool every bodypart


@dataclass
class ConsensusParams:
    """The ``consensus:`` section of params.yaml."""

    out: str = "data/interim/consensus.parquet"
    reports: str = "reports/labelers"  # qc.csv, pairwise.csv, icc.csv, drift.csv, ...
    summary: str = "reports/labelers_summary.json"  # DVC metrics
    mad_k: float = 3.0
    min_scale_px: float = 2.0  # floor of the MAD scale (identical labels: MAD = 0)
    two_labeler_disagreement_px: float = 5.0
    gold_scorer: str | None = None
    stop_rule_px: float = 0.5  # "enough labelers" when adding one moves the consensus less
    min_icc: float = 0.85  # guide: > 0.85 good
    excellent_icc: float = 0.95  # guide: > 0.95 excellent
    icc_min_frames: int = 5  # frames labeled by every rater needed for an ICC
    max_removed_share: float = 0.1  # per labeler (GE expectation on labeler_qc)
    bias_flag_px: float = 2.0  # flag a labeler whose offset exceeds this ...
    bias_min_t: float = 3.0  # ... and this many standard errors
    drift_by: str | None = None  # batch column; null: batch, else session, else video
    drift_sd: float = 2.0
    labeler_order: list[str] | None = None  # stop rule order; null: gold first, then most labels
    weight_scale_px: float = 5.0  # sample_weight = 1 / (1 + (frame_ila_px / scale)^2)
    # multi-animal: a labeler's individuals are renamed (identity swap) when matching them to the
    # reference labeler's by position lowers their mean distance by more than this
    swap_margin_px: float = 5.0

    def __post_init__(self) -> None:
        # k >= 1 guarantees at most half the points of a group are removed (MAD is a median)
        checks = {
            "mad_k": self.mad_k >= 1,
            "min_scale_px": self.min_scale_px >= 0,
            "stop_rule_px": self.stop_rule_px > 0,
            "weight_scale_px": self.weight_scale_px > 0,
            "swap_margin_px": self.swap_margin_px >= 0,
            "max_removed_share": 0 <= self.max_removed_share <= 1,
            "min_icc": self.min_icc <= self.excellent_icc,
            "icc_min_frames": self.icc_min_frames >= 2,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            rules = "mad_k >= 1, min_scale_px >= 0, stop_rule_px > 0, weight_scale_px > 0, "
            rules += "0 <= max_removed_share <= 1, min_icc <= excellent_icc, icc_min_frames >= 2, "
            rules += "swap_margin_px >= 0"
            raise PoseopsError(f"consensus: invalid {bad} (need {rules})")


# --------------------------------------------------------------------------------------------
# the label cube: one row per (image, bodypart) group, one column per labeler


@dataclass
class LabelCube:
    """Labels pivoted to arrays. ``x``, ``y``: shape (groups, labelers), NaN = not labeled.

    ``keys`` has one row per group: image, [individual], bodypart (same row order as the arrays).
    """

    keys: pd.DataFrame
    scorers: list[str]
    x: np.ndarray
    y: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.x) & np.isfinite(self.y)

    def col(self, scorer: str) -> int:
        return self.scorers.index(scorer)


def group_keys(labels: pd.DataFrame) -> list[str]:
    """(image, [individual], bodypart): one consensus point per key."""
    return S.keypoint_keys(labels)


def label_cube(labels: pd.DataFrame) -> LabelCube:
    """Pivot the labels table (one row per image, scorer, bodypart) to a :class:`LabelCube`."""
    S.require_columns(labels, [S.IMAGE, S.SCORER, S.BODYPART, S.X, S.Y], "labels")
    if labels.empty:
        raise PoseopsError("labels: the table is empty (nothing to build a consensus from)")
    keys = group_keys(labels)
    idx = keys + [S.SCORER]
    dup = labels.duplicated(idx)
    if dup.any():
        row = labels[dup].iloc[0]
        raise PoseopsError(
            f"labels: scorer {row[S.SCORER]!r} labels this point twice",
            file=row[S.IMAGE],
            bodypart=row[S.BODYPART],
        )
    wide = labels.set_index(idx)[[S.X, S.Y]].astype(float).unstack(S.SCORER)
    scorers = [str(s) for s in wide[S.X].columns]
    return LabelCube(
        keys=wide.index.to_frame(index=False),
        scorers=scorers,
        x=wide[S.X].to_numpy(dtype=float),
        y=wide[S.Y].to_numpy(dtype=float),
    )


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN rows are expected (nobody labeled) -> NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


# --------------------------------------------------------------------------------------------
# robust aggregation (pure numpy)


@dataclass
class Robust:
    """Result of :func:`robust_consensus`; arrays of shape (groups,) or (groups, labelers)."""

    cx: np.ndarray
    cy: np.ndarray
    removed: np.ndarray  # bool (groups, labelers)
    kept: np.ndarray  # bool (groups, labelers)
    n_points: np.ndarray  # finite points before removal
    n_kept: np.ndarray
    ila_px: np.ndarray  # mean pairwise distance of kept points (NaN with < 2)
    pair_sum: np.ndarray  # sum and count of those pairwise distances (for frame-level ILA)
    pair_count: np.ndarray


def robust_consensus(
    x: np.ndarray, y: np.ndarray, mad_k: float = 3.0, min_scale_px: float = 2.0
) -> Robust:
    """Median + MAD outlier removal per row. ``x``, ``y``: (groups, labelers), NaN = missing."""
    ok = np.isfinite(x) & np.isfinite(y)
    x = np.where(ok, x, np.nan)
    y = np.where(ok, y, np.nan)
    n = ok.sum(axis=1)
    mx, my = _nanmedian(x, 1), _nanmedian(y, 1)
    d = np.hypot(x - mx[:, None], y - my[:, None])
    scale = np.fmax(_nanmedian(d, 1), min_scale_px)  # fmax: NaN MAD (empty row) -> floor
    with np.errstate(invalid="ignore"):
        removed = ok & (n[:, None] >= 3) & (d > mad_k * scale[:, None])
    kept = ok & ~removed
    xk, yk = np.where(kept, x, np.nan), np.where(kept, y, np.nan)
    pair_sum = np.zeros(len(x))
    pair_count = np.zeros(len(x), dtype=int)
    n_lab = x.shape[1]
    for i in range(n_lab):  # few labelers: loop over pairs, vectorised over groups
        for j in range(i + 1, n_lab):
            dij = np.hypot(xk[:, i] - xk[:, j], yk[:, i] - yk[:, j])
            fin = np.isfinite(dij)
            pair_sum += np.where(fin, dij, 0.0)
            pair_count += fin
    with np.errstate(invalid="ignore", divide="ignore"):
        ila = np.where(pair_count > 0, pair_sum / np.maximum(pair_count, 1), np.nan)
    return Robust(
        cx=_nanmedian(xk, 1),
        cy=_nanmedian(yk, 1),
        removed=removed,
        kept=kept,
        n_points=n,
        n_kept=kept.sum(axis=1),
        ila_px=ila,
        pair_sum=pair_sum,
        pair_count=pair_count,
    )


def sample_weights(frame_ila_px: pd.Series | np.ndarray, scale_px: float) -> np.ndarray:
    """Per-frame training weight from the frame's ILA: ``1 / (1 + (ila / scale_px)^2)``.

    Frames where labelers agree get ~1, frames whose ILA equals ``scale_px`` get 0.5; frames
    labeled once (ILA NaN: no evidence of ambiguity) get 1.
    """
    ila = np.asarray(frame_ila_px, dtype=float)
    w = 1.0 / (1.0 + (ila / scale_px) ** 2)
    return np.where(np.isfinite(ila), w, 1.0)


def build_consensus(
    labels: pd.DataFrame, p: ConsensusParams | None = None, match: bool = True
) -> pd.DataFrame:
    """Consensus table: labels columns with scorer "consensus", one row per (image, bodypart)
    (multi-animal: per (image, individual, bodypart)), plus n_labelers, n_removed, ila_px,
    disagreement, frame_ila_px, sample_weight. Multi-animal labels are first re-matched by
    position (:func:`match_identities`) unless ``match`` is False (already done)."""
    p = p or ConsensusParams()
    if match and S.INDIVIDUAL in labels.columns:
        labels, _ = match_identities(labels, p)
    cube = label_cube(labels)
    r = robust_consensus(cube.x, cube.y, p.mad_k, p.min_scale_px)
    keys = group_keys(labels)
    out = cube.keys.copy()
    out[S.X] = r.cx
    out[S.Y] = r.cy
    out[N_LABELERS] = r.n_kept.astype(int)
    out[N_REMOVED] = r.removed.sum(axis=1).astype(int)
    out[ILA_PX] = r.ila_px
    out[DISAGREEMENT] = (r.n_kept == 2) & (np.nan_to_num(r.ila_px) > p.two_labeler_disagreement_px)
    # frame ILA: mean of every kept pairwise distance in the frame (all bodyparts)
    frame = pd.DataFrame({S.IMAGE: out[S.IMAGE], "s": r.pair_sum, "c": r.pair_count})
    frame = frame.groupby(S.IMAGE, sort=False)[["s", "c"]].sum()
    frame_ila = (frame["s"] / frame["c"].where(frame["c"] > 0)).rename(FRAME_ILA_PX)
    out = out.merge(frame_ila, left_on=S.IMAGE, right_index=True, how="left")
    out[SAMPLE_WEIGHT] = sample_weights(out[FRAME_ILA_PX], p.weight_scale_px)
    # every other column (video, frame, width, height, metadata) is per image: take it from
    # any scorer's row of the same key
    other = [c for c in labels.columns if c not in {S.X, S.Y, S.SCORER, S.LABELED, *keys}]
    meta = labels.drop_duplicates(keys)[keys + other]
    out = out.merge(meta, on=keys, how="left")
    out[S.SCORER] = S.CONSENSUS_SCORER
    out[S.LABELED] = np.isfinite(out[S.X]) & np.isfinite(out[S.Y])
    first = [c for c in S.LABEL_COLUMNS if c in out.columns]
    if S.INDIVIDUAL in out.columns:
        first.insert(first.index(S.BODYPART), S.INDIVIDUAL)
    rest = [c for c in out.columns if c not in first]
    return out[first + rest].sort_values(keys, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# labeler QC (pure functions over the cube)


def leave_one_out(cube: LabelCube, p: ConsensusParams) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of each labeler against the consensus of the others (same robust rule).

    Returns dx, dy of shape (groups, labelers); NaN where the labeler or all others are missing.
    """
    dx = np.full_like(cube.x, np.nan)
    dy = np.full_like(cube.y, np.nan)
    for j in range(len(cube.scorers)):
        others = np.ones(len(cube.scorers), dtype=bool)
        others[j] = False
        r = robust_consensus(cube.x[:, others], cube.y[:, others], p.mad_k, p.min_scale_px)
        dx[:, j] = cube.x[:, j] - r.cx
        dy[:, j] = cube.y[:, j] - r.cy
    return dx, dy


def labeler_effects(
    v: np.ndarray, ref: int | None = None, max_iter: int = 1000, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Additive labeler offsets on one coordinate: ``v[i, j] = t_i + b_j + noise``.

    ``v``: (groups, labelers), NaN = missing; only rows with >= 2 points inform ``b``. Least
    squares by alternating means; the free constant is fixed by ``b[ref] = 0`` (gold scorer) or,
    without one, by median(b) = 0 (the majority of labelers is unbiased). Unlike leave-one-out
    offsets, an unbiased labeler does not inherit half of a biased colleague's offset.
    Returns (b, residual SD per labeler).
    """
    ok = np.isfinite(v)
    rows = ok.sum(axis=1) >= 2
    v, ok = v[rows], ok[rows]
    n_lab = v.shape[1]
    b = np.zeros(n_lab)
    has = ok.any(axis=0)
    if not rows.any():
        return np.full(n_lab, np.nan), np.full(n_lab, np.nan)
    for _ in range(max_iter):
        t = _nanmean(v - b, 1)
        b_new = np.where(has, np.nan_to_num(_nanmean(v - t[:, None], 0)), 0.0)
        b_new -= b_new[ref] if ref is not None and has[ref] else np.median(b_new[has])
        done = np.max(np.abs(b_new - b)) < tol
        b = b_new
        if done:
            break
    t = _nanmean(v - b, 1)
    resid = v - t[:, None] - b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(resid, axis=0, ddof=1)
    return np.where(has, b, np.nan), sd


def labeler_qc(cube: LabelCube, p: ConsensusParams) -> pd.DataFrame:
    """Per (scorer, bodypart), plus one ``bodypart == "all"`` row per scorer.

    Columns: scorer, bodypart, n (points on frames labeled by >= 2 labelers), n_single (points
    nobody else labeled), dx_loo, dy_loo, dist_loo (mean offset / distance vs the consensus of
    the others), bias_x, bias_y, bias_px, bias_se (additive offset model, see
    :func:`labeler_effects`), gold_n, gold_dx, gold_dy, gold_dist (vs ``gold_scorer``),
    n_removed, share_removed, flagged_bias, flagged_removed.
    """
    ok = cube.ok
    multi = ok.sum(axis=1) >= 2
    r = robust_consensus(cube.x, cube.y, p.mad_k, p.min_scale_px)
    dx, dy = leave_one_out(cube, p)
    gold = None
    if p.gold_scorer is not None:
        if p.gold_scorer not in cube.scorers:
            raise PoseopsError(
                f"consensus.gold_scorer {p.gold_scorer!r} labeled nothing; scorers: {cube.scorers}"
            )
        gold = cube.col(p.gold_scorer)
    bodyparts = cube.keys[S.BODYPART].to_numpy()
    rows = []
    for bp in list(pd.unique(bodyparts)) + [ALL]:
        sel = np.ones(len(bodyparts), bool) if bp == ALL else bodyparts == bp
        if bp != ALL:
            bx, sx = labeler_effects(cube.x[sel], gold)
            by, sy = labeler_effects(cube.y[sel], gold)
        for j, scorer in enumerate(cube.scorers):
            m = sel & multi & ok[:, j]
            loo = m & np.isfinite(dx[:, j])
            row: dict[str, Any] = {
                S.SCORER: scorer,
                S.BODYPART: bp,
                "n": int(m.sum()),
                "n_single": int((sel & ok[:, j] & ~multi).sum()),
                "dx_loo": _mean(dx[loo, j]),
                "dy_loo": _mean(dy[loo, j]),
                "dist_loo": _mean(np.hypot(dx[loo, j], dy[loo, j])),
                "n_removed": int(r.removed[m, j].sum()),
            }
            row["share_removed"] = row["n_removed"] / row["n"] if row["n"] else np.nan
            if bp != ALL:
                n_eff = int(m.sum())
                row["bias_x"], row["bias_y"] = bx[j], by[j]
                row["bias_px"] = float(np.hypot(bx[j], by[j]))
                row["bias_se"] = (
                    float(np.hypot(sx[j], sy[j]) / np.sqrt(n_eff)) if n_eff > 1 else np.nan
                )
            if gold is not None and j != gold:
                g = sel & ok[:, j] & ok[:, gold]
                gdx, gdy = cube.x[g, j] - cube.x[g, gold], cube.y[g, j] - cube.y[g, gold]
                row.update(
                    gold_n=int(g.sum()),
                    gold_dx=_mean(gdx),
                    gold_dy=_mean(gdy),
                    gold_dist=_mean(np.hypot(gdx, gdy)),
                )
            rows.append(row)
    qc = pd.DataFrame(rows)
    for c in [
        "bias_x",
        "bias_y",
        "bias_px",
        "bias_se",
        "gold_n",
        "gold_dx",
        "gold_dy",
        "gold_dist",
    ]:
        if c not in qc:
            qc[c] = np.nan
    per_bp = qc[S.BODYPART] != ALL
    qc["flagged_bias"] = (
        per_bp
        & (qc["bias_px"] > p.bias_flag_px)
        & (qc["bias_px"] > p.bias_min_t * qc["bias_se"].fillna(np.inf))
    )
    any_bias = qc[per_bp].groupby(S.SCORER)["flagged_bias"].any()
    qc.loc[~per_bp, "flagged_bias"] = qc.loc[~per_bp, S.SCORER].map(any_bias).fillna(False)
    qc["flagged_removed"] = qc["share_removed"].fillna(0) > p.max_removed_share
    cols = [S.SCORER, S.BODYPART, "n", "n_single", "dx_loo", "dy_loo", "dist_loo", "bias_x"]
    cols += ["bias_y", "bias_px", "bias_se", "gold_n", "gold_dx", "gold_dy", "gold_dist"]
    cols += ["n_removed", "share_removed", "flagged_bias", "flagged_removed"]
    return qc[cols]


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")


def pairwise_distances(cube: LabelCube) -> pd.DataFrame:
    """Mean distance between two labelers on the points both labeled (raw, before removal).

    Columns: bodypart, scorer_a, scorer_b, n, mean_px, median_px; both orders, a != b, plus
    ``bodypart == "all"`` rows pooling every bodypart.
    """
    bodyparts = cube.keys[S.BODYPART].to_numpy()
    rows = []
    for a, sa in enumerate(cube.scorers):
        for b, sb in enumerate(cube.scorers):
            if a == b:
                continue
            d = np.hypot(cube.x[:, a] - cube.x[:, b], cube.y[:, a] - cube.y[:, b])
            fin = np.isfinite(d)
            frame = pd.DataFrame({S.BODYPART: bodyparts[fin], "d": d[fin]})
            for bp, g in list(frame.groupby(S.BODYPART, sort=False)) + [(ALL, frame)]:
                if len(g):
                    rows.append(
                        {
                            S.BODYPART: bp,
                            "scorer_a": sa,
                            "scorer_b": sb,
                            "n": len(g),
                            "mean_px": float(g["d"].mean()),
                            "median_px": float(g["d"].median()),
                        }
                    )
    cols = [S.BODYPART, "scorer_a", "scorer_b", "n", "mean_px", "median_px"]
    return pd.DataFrame(rows, columns=cols)


def icc2(m: np.ndarray) -> tuple[float, float]:
    """ICC(2,1) and ICC(2,k) (Shrout & Fleiss; McGraw & Wong "A,1"/"A,k"): two-way random
    effects, absolute agreement. ``m``: (targets, raters), complete."""
    n, k = m.shape
    grand = m.mean()
    ssr = k * ((m.mean(axis=1) - grand) ** 2).sum()
    ssc = n * ((m.mean(axis=0) - grand) ** 2).sum()
    sse = ((m - grand) ** 2).sum() - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    single = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    average = (msr - mse) / (msr + (msc - mse) / n)
    return float(single), float(average)


def icc_table(cube: LabelCube, p: ConsensusParams) -> pd.DataFrame:
    """ICC per bodypart on x and on y.

    ICC(2,1): labelers are a sample of the labelers who could have labeled, and a constant offset
    is an error (absolute agreement); single-rater form, because most frames are labeled once.
    ICC(2,k) is the reliability of the k-labeler mean. Frames: those labeled by every rater
    (complete cases, as pingouin's nan_policy="omit"); when fewer than ``icc_min_frames``, the
    labeler with the fewest points is dropped until enough remain (>= 2 raters).
    Columns: bodypart, coord, icc, icc_k, n_frames, n_raters, raters, quality, ok.
    """
    ok = cube.ok
    bodyparts = cube.keys[S.BODYPART].to_numpy()
    rows = []
    for bp in pd.unique(bodyparts):
        sel = bodyparts == bp
        raters = [j for j in range(len(cube.scorers)) if ok[sel, j].any()]
        while True:
            complete = sel & ok[:, raters].all(axis=1) if raters else sel & False
            if complete.sum() >= p.icc_min_frames or len(raters) <= 2:
                break
            raters.remove(min(raters, key=lambda j: (ok[sel, j].sum(), j)))
        for coord, arr in ((S.X, cube.x), (S.Y, cube.y)):
            single = average = np.nan
            if len(raters) >= 2 and complete.sum() >= max(2, p.icc_min_frames):
                single, average = icc2(arr[complete][:, raters])
            rows.append(
                {
                    S.BODYPART: bp,
                    "coord": coord,
                    "icc": single,
                    "icc_k": average,
                    "n_frames": int(complete.sum()) if len(raters) >= 2 else 0,
                    "n_raters": len(raters),
                    "raters": ",".join(cube.scorers[j] for j in raters),
                    "quality": _icc_quality(single, p),
                }
            )
    cols = [S.BODYPART, "coord", "icc", "icc_k", "n_frames", "n_raters", "raters", "quality"]
    return pd.DataFrame(rows, columns=cols)


def _icc_quality(icc: float, p: ConsensusParams) -> str:
    if not np.isfinite(icc):
        return "n/a"
    if icc >= p.excellent_icc:
        return "excellent"
    return "good" if icc >= p.min_icc else "insufficient"


def drift_column(labels: pd.DataFrame, p: ConsensusParams) -> str:
    """Column defining QC batches: ``drift_by``, else batch, else session, else video."""
    if p.drift_by is not None:
        if p.drift_by not in labels.columns:
            raise PoseopsError(f"consensus.drift_by: no column {p.drift_by!r} in the labels table")
        return p.drift_by
    for c in ("batch", S.SESSION):
        if c in labels.columns and labels[c].nunique() > 1:
            return c
    return S.VIDEO


def drift_table(labels: pd.DataFrame, cube: LabelCube, p: ConsensusParams) -> pd.DataFrame:
    """Agreement of each labeler per batch, flagged when it departs from the others' by > 2 SD.

    Agreement = mean distance of the labeler's points to the consensus of all labelers (robust,
    so one drifting labeler does not drag the others) on frames labeled by >= 2. The reference
    of labeler j is the distribution of the other labelers' per-batch agreements (all batches):
    z = (agreement - mean) / SD; flagged when |z| > ``drift_sd`` (needs >= 3 reference values).
    ``persistent``: flagged in every batch (>= 2): a constant offset rather than a drift.
    Columns: batch_by, batch, scorer, n, agreement_px, ref_mean_px, ref_sd_px, z, flagged,
    persistent.
    """
    by = drift_column(labels, p)
    batch_of = labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE)[by]
    batches = cube.keys[S.IMAGE].map(batch_of).to_numpy()
    ok = cube.ok
    multi = ok.sum(axis=1) >= 2
    r = robust_consensus(cube.x, cube.y, p.mad_k, p.min_scale_px)
    parts = []
    for j, scorer in enumerate(cube.scorers):
        m = multi & ok[:, j]
        d = np.hypot(cube.x[m, j] - r.cx[m], cube.y[m, j] - r.cy[m])
        parts.append(pd.DataFrame({"batch": batches[m], S.SCORER: scorer, "d": d}))
    cols = ["batch_by", "batch", S.SCORER, "n", "agreement_px", "ref_mean_px", "ref_sd_px"]
    cols += ["z", "flagged", "persistent"]
    pts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if pts.empty:
        return pd.DataFrame(columns=cols)
    agg = (
        pts.groupby(["batch", S.SCORER], sort=True)["d"]
        .agg(n="size", agreement_px="mean")
        .reset_index()
    )
    ref_mean, ref_sd = [], []
    for scorer in agg[S.SCORER]:
        ref = agg.loc[agg[S.SCORER] != scorer, "agreement_px"]
        ref_mean.append(ref.mean() if len(ref) >= 3 else np.nan)
        ref_sd.append(ref.std(ddof=1) if len(ref) >= 3 else np.nan)
    agg["ref_mean_px"] = ref_mean
    agg["ref_sd_px"] = ref_sd
    with np.errstate(divide="ignore", invalid="ignore"):
        agg["z"] = (agg["agreement_px"] - agg["ref_mean_px"]) / agg["ref_sd_px"]
    agg["flagged"] = agg["z"].abs() > p.drift_sd  # NaN z -> False
    # flagged in every one of >= 2 batches: a constant offset (see qc.csv bias), not a drift
    per = agg.groupby(S.SCORER)["flagged"].agg(["all", "size"])
    agg["persistent"] = agg[S.SCORER].map(per["all"] & (per["size"] >= 2)) & agg["flagged"]
    agg.insert(0, "batch_by", by)
    return agg[cols]


def labeler_order(cube: LabelCube, p: ConsensusParams) -> list[str]:
    """Order in which the stop rule adds labelers: ``labeler_order`` if given (unknown names are
    an error; labelers not named follow), else the gold scorer first, then most points first."""
    if p.labeler_order:
        unknown = [s for s in p.labeler_order if s not in cube.scorers]
        if unknown:
            raise PoseopsError(
                f"consensus.labeler_order: {unknown} labeled nothing; scorers: {cube.scorers}"
            )
        rest = [s for s in cube.scorers if s not in p.labeler_order]
        return list(p.labeler_order) + rest
    counts = cube.ok.sum(axis=0)
    order = sorted(cube.scorers, key=lambda s: (s != p.gold_scorer, -counts[cube.col(s)], s))
    return order


def stop_rule(cube: LabelCube, p: ConsensusParams) -> pd.DataFrame:
    """How much the consensus moves as labelers are added one at a time (guide FAQ A4).

    Step m adds the m-th labeler of :func:`labeler_order`; the shift is the distance between the
    consensus of the first m and of the first m-1 labelers, on the points the new labeler
    labeled and the earlier ones had a consensus for. ``enough`` = mean shift < stop_rule_px.
    Columns: step, scorer_added, bodypart ("all" pools them), n, mean_shift_px,
    median_shift_px, p95_shift_px, enough.
    """
    order = [cube.col(s) for s in labeler_order(cube, p)]
    bodyparts = cube.keys[S.BODYPART].to_numpy()
    rows = []
    prev = robust_consensus(cube.x[:, order[:1]], cube.y[:, order[:1]], p.mad_k, p.min_scale_px)
    for m in range(2, len(order) + 1):
        cur = robust_consensus(cube.x[:, order[:m]], cube.y[:, order[:m]], p.mad_k, p.min_scale_px)
        new = order[m - 1]
        sel = cube.ok[:, new] & np.isfinite(prev.cx)
        shift = np.hypot(cur.cx - prev.cx, cur.cy - prev.cy)
        frame = pd.DataFrame({S.BODYPART: bodyparts[sel], "s": shift[sel]})
        for bp, g in [(ALL, frame)] + list(frame.groupby(S.BODYPART, sort=False)):
            rows.append(
                {
                    "step": m,
                    "scorer_added": cube.scorers[new],
                    S.BODYPART: bp,
                    "n": len(g),
                    "mean_shift_px": float(g["s"].mean()) if len(g) else np.nan,
                    "median_shift_px": float(g["s"].median()) if len(g) else np.nan,
                    "p95_shift_px": float(g["s"].quantile(0.95)) if len(g) else np.nan,
                }
            )
        prev = cur
    cols = ["step", "scorer_added", S.BODYPART, "n", "mean_shift_px", "median_shift_px"]
    table = pd.DataFrame(rows, columns=cols + ["p95_shift_px"])
    table["enough"] = table["mean_shift_px"] < p.stop_rule_px
    return table


# --------------------------------------------------------------------------------------------
# identity matching (multi-animal): labelers' individuals matched by position before the medians

SWAP_COLUMNS = [
    S.IMAGE,
    "labeler",
    "reference",
    "from_individual",
    "to_individual",
    "cost_before_px",
    "cost_after_px",
    "labeler_cost_before_px",
    "labeler_cost_after_px",
]
N_IDENTITY_SWAPS = "n_identity_swaps"
_NO_EVIDENCE = 1e6  # cost of a pair with no bodypart labeled by both: used only when unavoidable
_PREFER_SAME = 1e-6  # ties go to the identity mapping


def _labeler_priority(pts: pd.DataFrame, p: ConsensusParams) -> list[str]:
    """Reference tie-break order: gold scorer, then most labeled animal keypoints, then name."""
    counts = pts[S.SCORER].astype(str).value_counts()
    return sorted(counts.index, key=lambda s: (s != p.gold_scorer, -int(counts[s]), s))


@dataclass
class _Assignment:
    """A labeler's individuals re-matched to the reference's (see :func:`_assign`)."""

    names: np.ndarray  # individual codes considered (labeled by either)
    cost: np.ndarray  # (n, n): labeler's a vs reference's b, mean distance (NaN: nothing shared)
    match: np.ndarray  # labeler's names[k] is the reference's names[match[k]]
    moved: np.ndarray  # k with match[k] != k
    labeled: np.ndarray  # bool (n,): the labeler labeled names[k]
    before: float  # mean cost of the identity mapping (pairs with a common bodypart)
    after: float  # mean cost of the assignment


def _assign(lab: np.ndarray, ref: np.ndarray, margin: float) -> _Assignment | None:
    """Best one-to-one matching of one labeler's individuals ``lab`` to the reference's ``ref``
    (both (individuals, bodyparts, 2), NaN = not labeled) on one image; None unless it is not
    the identity and lowers the mean cost by more than ``margin``."""
    from scipy.optimize import linear_sum_assignment

    names = np.flatnonzero(
        np.isfinite(lab[..., 0]).any(axis=1) | np.isfinite(ref[..., 0]).any(axis=1)
    )
    if len(names) < 2:
        return None
    a, b = lab[names], ref[names]
    d = np.hypot(a[:, None, :, 0] - b[None, :, :, 0], a[:, None, :, 1] - b[None, :, :, 1])
    cost = _nanmean(d, 2)
    solve = np.where(np.isfinite(cost), cost, _NO_EVIDENCE) - _PREFER_SAME * np.eye(len(names))
    _, match = linear_sum_assignment(solve)
    moved = np.flatnonzero(match != np.arange(len(names)))
    if not len(moved):
        return None
    before = float(_nanmean(np.diag(cost), 0))
    after = float(_nanmean(cost[np.arange(len(names)), match], 0))
    if not before - after > margin:  # NaN (no evidence for the identity mapping): no swap
        return None
    return _Assignment(names, cost, match, moved, np.isfinite(a[..., 0]).any(axis=1), before, after)


def match_identities(
    labels: pd.DataFrame, p: ConsensusParams | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match every labeler's individuals to a reference labeler's, per image, by position.

    Multi-animal labels only (an ``individual`` column; otherwise ``labels`` is returned as is
    with an empty swaps table). Individual names are arbitrary per labeler: one may call
    "animal2" what another calls "animal1". Per image:

    - reference = the gold scorer if it labeled an animal keypoint of the image, else the labeler
      whose individuals the fewest other labelers are found swapped against (so with three
      labelers the one who swapped is blamed, not the two who agree; with two, or on ties: the
      labeler with most labeled animal keypoints overall, then name);
    - for every other labeler, cost[a, b] = mean distance over the bodyparts both labeled between
      the labeler's individual ``a`` and the reference's ``b`` (individuals either labeled);
      the best one-to-one assignment is found with ``scipy.optimize.linear_sum_assignment``
      (pairs with no common bodypart are avoided when possible; ties keep the names);
    - when it is not the identity and the mean cost of the labeler's individuals drops by more
      than ``swap_margin_px`` (identity: mean over individuals of cost[a, a]; assignment: of
      cost[a, match(a)], both over pairs with a common bodypart), that is an identity swap:
      the labeler's individuals on that image are renamed (a permutation: no two rows collide).
      Without evidence for the identity mapping (no cost[a, a]) nothing is renamed.

    Unique bodyparts (individual ``single``) are never matched nor renamed. Returns
    ``(labels with individuals renamed, swaps)``; swaps has one row per labeled individual
    renamed: image, labeler, reference, from_individual, to_individual, cost_before_px
    (cost[from, from]), cost_after_px (cost[from, to]), labeler_cost_before_px and
    labeler_cost_after_px (the means compared with the margin).
    """
    p = p or ConsensusParams()
    empty = pd.DataFrame(columns=SWAP_COLUMNS)
    if S.INDIVIDUAL not in labels.columns:
        return labels, empty
    S.require_columns(labels, [S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y], "labels")
    x = pd.to_numeric(labels[S.X], errors="coerce").to_numpy(float)
    y = pd.to_numeric(labels[S.Y], errors="coerce").to_numpy(float)
    animal = labels[S.INDIVIDUAL].astype(str).to_numpy() != S.SINGLE
    pts = labels.loc[animal & np.isfinite(x) & np.isfinite(y)]
    if pts[S.SCORER].nunique() < 2:
        return labels, empty
    # points as a dense array: (image, scorer, individual, bodypart, xy), NaN = not labeled
    img_codes, images = pd.factorize(pts[S.IMAGE].astype(str))
    sc_codes, scorers = pd.factorize(pts[S.SCORER].astype(str))
    ind_codes, individuals = pd.factorize(pts[S.INDIVIDUAL].astype(str))
    bp_codes, _ = pd.factorize(pts[S.BODYPART].astype(str))
    arr = np.full((len(images), len(scorers), len(individuals), bp_codes.max() + 1, 2), np.nan)
    arr[img_codes, sc_codes, ind_codes, bp_codes] = pts[[S.X, S.Y]].to_numpy(float)
    n_points = np.isfinite(arr[..., 0]).sum(axis=(2, 3))  # (image, scorer)
    rank = {s: i for i, s in enumerate(_labeler_priority(pts, p))}
    gold = scorers.get_loc(p.gold_scorer) if p.gold_scorer in scorers else None
    swaps: list[dict[str, Any]] = []
    renames: list[tuple[str, str, str, str]] = []  # image, scorer, old, new
    for i, image in enumerate(images):
        who = [s for s in range(len(scorers)) if n_points[i, s] > 0]
        if len(who) < 2:
            continue
        # reference: the gold scorer, else the labeler whose names the fewest others contradict
        # (a majority: one labeler's swap is not blamed on everyone else), ties by priority
        candidates = [gold] if gold is not None and gold in who else who
        best: tuple[int, int, int, dict[int, _Assignment]] | None = None
        for ref in candidates:
            found = {}
            for s in who:
                if s != ref:
                    m = _assign(arr[i, s], arr[i, ref], p.swap_margin_px)
                    if m is not None:
                        found[s] = m
            key = (len(found), rank[scorers[ref]], ref, found)
            if best is None or key[:2] < best[:2]:
                best = key
        assert best is not None
        ref, found = best[2], best[3]
        for s, m in found.items():
            for k in m.moved:
                old, new = individuals[m.names[k]], individuals[m.names[m.match[k]]]
                renames.append((image, scorers[s], old, new))
                if m.labeled[k]:
                    swaps.append(
                        {
                            S.IMAGE: image,
                            "labeler": scorers[s],
                            "reference": scorers[ref],
                            "from_individual": old,
                            "to_individual": new,
                            "cost_before_px": m.cost[k, k],
                            "cost_after_px": m.cost[k, m.match[k]],
                            "labeler_cost_before_px": m.before,
                            "labeler_cost_after_px": m.after,
                        }
                    )
    table = pd.DataFrame(swaps, columns=SWAP_COLUMNS)
    if not renames:
        return labels, table
    key = [S.IMAGE, S.SCORER, S.INDIVIDUAL]
    ren = pd.DataFrame(renames, columns=[*key, "_new"])
    cur = labels[key].astype(str)
    new = cur.merge(ren, on=key, how="left")["_new"].to_numpy()
    out = labels.copy()
    hit = pd.notna(new)
    out[S.INDIVIDUAL] = np.where(hit, new, labels[S.INDIVIDUAL].to_numpy(object))
    log.info(
        "consensus: %d identity swap(s) on %d image(s) re-matched before the medians",
        len(table.drop_duplicates([S.IMAGE, "labeler"])),
        table[S.IMAGE].nunique(),
    )
    return out, table.sort_values([S.IMAGE, "labeler", "from_individual"]).reset_index(drop=True)


def swaps_per_labeler(swaps: pd.DataFrame, scorers: list[str]) -> dict[str, int]:
    """Images on which each labeler's individuals were re-matched (0 for the others)."""
    n = swaps.drop_duplicates([S.IMAGE, "labeler"])["labeler"].value_counts()
    return {s: int(n.get(s, 0)) for s in scorers}


# --------------------------------------------------------------------------------------------
# the whole stage


@dataclass
class ConsensusResult:
    """Everything the stage computes (tables as documented in the functions that build them)."""

    consensus: pd.DataFrame
    qc: pd.DataFrame
    pairwise: pd.DataFrame
    icc: pd.DataFrame
    drift: pd.DataFrame
    stop_rule: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    identity_swaps: pd.DataFrame | None = None  # multi-animal only (see match_identities)


def analyse(labels: pd.DataFrame, p: ConsensusParams | None = None) -> ConsensusResult:
    """Consensus table and every labeler QC table from a labels table (pure)."""
    p = p or ConsensusParams()
    swaps = None
    if S.INDIVIDUAL in labels.columns:
        # every QC table below sees the re-matched individuals: a swap is reported once (in
        # identity_swaps.csv), not again as outliers, bias or low ICC
        labels, swaps = match_identities(labels, p)
    cube = label_cube(labels)
    log.info(
        "consensus: %d (%s) points, %d labelers %s",
        len(cube.keys),
        ", ".join(group_keys(labels)),
        len(cube.scorers),
        cube.scorers,
    )
    qc = labeler_qc(cube, p)
    if swaps is not None:
        per = swaps_per_labeler(swaps, cube.scorers)
        qc[N_IDENTITY_SWAPS] = np.where(qc[S.BODYPART] == ALL, qc[S.SCORER].map(per), np.nan)
    res = ConsensusResult(
        consensus=build_consensus(labels, p, match=False),
        qc=qc,
        pairwise=pairwise_distances(cube),
        icc=icc_table(cube, p),
        drift=drift_table(labels, cube, p),
        stop_rule=stop_rule(cube, p),
        identity_swaps=swaps,
    )
    res.summary = summarise(res, cube, p)
    return res


def summarise(res: ConsensusResult, cube: LabelCube, p: ConsensusParams) -> dict[str, Any]:
    """Flat numbers for DVC metrics / MLflow, plus lists of flagged labelers."""
    c = res.consensus
    multi = cube.ok.sum(axis=1) >= 2
    n_multi_points = int(cube.ok[multi].sum())
    n_removed = int(c[N_REMOVED].sum())
    overall = res.stop_rule[res.stop_rule[S.BODYPART] == ALL]
    enough = overall[overall["enough"]]
    icc = res.icc["icc"].dropna()
    frame_multi = c.groupby(S.IMAGE)[N_LABELERS].max() >= 2
    return {
        "n_labelers": len(cube.scorers),
        "scorers": cube.scorers,
        "n_images": int(c[S.IMAGE].nunique()),
        "n_images_multi_labeled": int(frame_multi.sum()),
        "n_points_multi_labeled": n_multi_points,
        "n_removed": n_removed,
        "removed_share": n_removed / n_multi_points if n_multi_points else 0.0,
        "n_disagreements": int(c[DISAGREEMENT].sum()),
        "ila_px_mean": _finite_or_none(c[ILA_PX].mean()),
        "ila_px_median": _finite_or_none(c[ILA_PX].median()),
        "icc_min": _finite_or_none(icc.min()) if len(icc) else None,
        "icc_below_min": int((icc < p.min_icc).sum()),
        "flagged_bias": sorted(
            f"{r.scorer}/{r.bodypart}"
            for r in res.qc[(res.qc["flagged_bias"]) & (res.qc[S.BODYPART] != ALL)].itertuples()
        ),
        "n_drift_flags": int(res.drift["flagged"].sum()) if len(res.drift) else 0,
        "drift_flagged": sorted(
            f"{r.scorer}/{r.batch}"
            for r in res.drift[res.drift["flagged"] & ~res.drift["persistent"]].itertuples()
        ),
        "stop_rule_last_shift_px": _finite_or_none(overall["mean_shift_px"].iloc[-1])
        if len(overall)
        else None,
        "labelers_needed": int(enough["step"].iloc[0]) - 1 if len(enough) else None,
        "enough_labelers": bool(len(overall) and overall["enough"].iloc[-1]),
    } | (_swap_summary(res.identity_swaps, cube) if res.identity_swaps is not None else {})


def _swap_summary(swaps: pd.DataFrame, cube: LabelCube) -> dict[str, Any]:
    """Multi-animal summary keys: identity swaps (labeler-images re-matched) in total, images
    concerned, and per labeler."""
    per = swaps_per_labeler(swaps, cube.scorers)
    return {
        "n_individuals": len(set(cube.keys[S.INDIVIDUAL].astype(str)) - {S.SINGLE}),
        "n_identity_swaps": int(sum(per.values())),
        "n_images_identity_swapped": int(swaps[S.IMAGE].nunique()),
        "identity_swaps": per,
    }


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def plot_pairwise_heatmap(pairwise: pd.DataFrame, path: str | Path) -> Path:
    """One heatmap per bodypart of the mean pairwise labeler distance (px), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poseops.core.fileio import atomic_path

    bodyparts = list(pd.unique(pairwise[S.BODYPART])) or [ALL]
    scorers = sorted(set(pairwise["scorer_a"]) | set(pairwise["scorer_b"]))
    ncol = min(4, len(bodyparts))
    nrow = -(-len(bodyparts) // ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.4 * ncol + 1, 3.2 * nrow + 0.6), squeeze=False, layout="constrained"
    )
    vmax = float(pairwise["mean_px"].max()) if len(pairwise) else 1.0
    if pairwise.empty:  # one labeler: nothing to compare
        axes[0, 0].text(0.5, 0.5, "fewer than two labelers\non shared frames", ha="center")
        axes[0, 0].axis("off")
    for ax, bp in zip(axes.flat, bodyparts if len(pairwise) else [], strict=False):
        sub = pairwise[pairwise[S.BODYPART] == bp]
        mat = sub.pivot(index="scorer_a", columns="scorer_b", values="mean_px")
        mat = mat.reindex(index=scorers, columns=scorers)
        im = ax.imshow(mat.to_numpy(dtype=float), vmin=0, vmax=vmax, cmap="viridis")
        ax.set_xticks(range(len(scorers)), scorers, rotation=45, ha="right")
        ax.set_yticks(range(len(scorers)), scorers)
        ax.set_title(str(bp))
        for (i, k), v in np.ndenumerate(mat.to_numpy(dtype=float)):
            if np.isfinite(v):
                color = "k" if v > 0.6 * vmax else "w"  # readable on viridis' yellow end
                ax.text(k, i, f"{v:.1f}", ha="center", va="center", color=color, fontsize=8)
    for ax in list(axes.flat)[len(bodyparts) if len(pairwise) else 1 :]:
        ax.axis("off")
    if len(pairwise):
        fig.colorbar(im, ax=axes, shrink=0.8, label="mean distance (px)")
    fig.suptitle("Pairwise labeler distance")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


REPORT_FILES = {
    "qc": "qc.csv",
    "pairwise": "pairwise.csv",
    "icc": "icc.csv",
    "drift": "drift.csv",
    "stop_rule": "stop_rule.csv",
}
HEATMAP = "pairwise_heatmap.png"
SWAPS_FILE = "identity_swaps.csv"  # multi-animal only


def write_outputs(res: ConsensusResult, p: ConsensusParams) -> dict[str, Path]:
    """Write the consensus parquet, the QC CSVs + heatmap under ``p.reports`` and the summary."""
    from poseops.core.fileio import write_csv, write_json, write_parquet

    paths = {"consensus": write_parquet(res.consensus, p.out)}
    reports = Path(p.reports)
    for name, fname in REPORT_FILES.items():
        paths[name] = write_csv(getattr(res, name), reports / fname)
    if res.identity_swaps is not None:
        paths["identity_swaps"] = write_csv(res.identity_swaps, reports / SWAPS_FILE)
    paths["heatmap"] = plot_pairwise_heatmap(res.pairwise, reports / HEATMAP)
    paths["summary"] = write_json(res.summary, p.summary)
    return paths


def log_to_mlflow(outputs: ConsensusResult | str | Path, summary: str | Path | None = None) -> bool:
    """Log labeler QC to MLflow: summary numbers as metrics, the QC tables as artifacts
    (``labelers/``). ``outputs`` is a :class:`ConsensusResult` or the reports folder (then the
    summary JSON is read from ``summary``, default ``<reports>/../labelers_summary.json``).

    Logs into the active run; without one, into a new run only when ``MLFLOW_TRACKING_URI`` is
    set. Returns False (and logs nothing) when neither is the case.
    """
    import json
    import tempfile

    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    active = mlflow.active_run()
    if active is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        log.info("consensus: no MLflow run or tracking URI; labeler QC not logged")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(outputs, ConsensusResult):
            folder = Path(tmp)
            for name, fname in REPORT_FILES.items():
                getattr(outputs, name).to_csv(folder / fname, index=False)
            if outputs.identity_swaps is not None:
                outputs.identity_swaps.to_csv(folder / SWAPS_FILE, index=False)
            plot_pairwise_heatmap(outputs.pairwise, folder / HEATMAP)
            summ = outputs.summary
        else:
            folder = Path(outputs)
            spath = Path(summary) if summary else folder.parent / "labelers_summary.json"
            summ = json.loads(spath.read_text()) if spath.exists() else {}
        metrics = {
            f"labelers.{k}": float(v)
            for k, v in summ.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        run = mlflow.start_run(run_name="labeler-qc") if active is None else active
        try:
            mlflow.log_metrics(metrics)
            mlflow.log_dict(summ, "labelers/summary.json")
            mlflow.log_artifacts(str(folder), artifact_path="labelers")
        finally:
            if active is None:
                mlflow.end_run()
    log.info("consensus: labeler QC logged to MLflow run %s", run.info.run_id)
    return True


def consensus_to_dlc(
    consensus: pd.DataFrame,
    project_dir: str | Path,
    scorer: str,
    bodyparts: list[str] | None = None,
    individuals: list[str] | None = None,
    unique_bodyparts: list[str] | None = None,
) -> list[Path]:
    """Write consensus labels as DLC ``labeled-data/<video>/CollectedData_<scorer>.h5`` (+ .csv)
    in ``project_dir``, one file per video (through poseops.dlc.files). DLC's training reads only the
    config scorer's file: pass that name. ``bodyparts`` fixes the column order (config order).
    Multi-animal consensus (an ``individual`` column) is written as DLC's 4-level frame;
    ``individuals`` and ``unique_bodyparts`` (config order) fix its columns. Returns the .h5
    paths written."""
    from poseops.dlc import files as dlcio

    S.require_columns(consensus, [S.IMAGE, S.VIDEO, S.BODYPART, S.X, S.Y], "consensus")
    df = consensus.drop(columns=[S.SCORER], errors="ignore")
    written = []
    for video, part in df.groupby(S.VIDEO, sort=True):
        wide = dlcio.labels_to_wide(
            part,
            scorer=scorer,
            bodyparts=bodyparts,
            individuals=individuals,
            unique_bodyparts=unique_bodyparts,
        )
        h5 = Path(project_dir) / "labeled-data" / str(video) / f"CollectedData_{scorer}.h5"
        written.append(dlcio.write_collected_data(wide, h5)[0])
    return written


# --------------------------------------------------------------------------------------------
# CLI


def load_params(path: str | Path | None = None) -> tuple[ConsensusParams, str]:
    """The consensus section and the labels path (``ingest.out``)."""
    from poseops.config.loader import load_params as load_all
    from poseops.config.loader import section

    p = section("consensus", ConsensusParams, path)
    labels_path = (load_all(path).get("ingest") or {}).get("out", "data/interim/labels.parquet")
    return p, labels_path


def run(
    params: str | Path | None = None, labels: str | Path | None = None, mlflow: bool = False
) -> ConsensusResult:
    """Read the labels table, compute consensus + labeler QC, write every output; with
    ``mlflow`` also log the QC (see :func:`log_to_mlflow`; the train stage normally does it)."""
    p, labels_path = load_params(params)
    path = Path(labels or labels_path)
    if not path.exists():
        raise PoseopsError("labels table not found (run `poseops ingest` first)", file=path)
    res = analyse(pd.read_parquet(path), p)
    write_outputs(res, p)
    s = res.summary
    log.info(
        "consensus: %d images (%d multi-labeled), %d/%d annotations removed, ICC min %s, "
        "flagged bias %s, enough labelers: %s",
        s["n_images"],
        s["n_images_multi_labeled"],
        s["n_removed"],
        s["n_points_multi_labeled"],
        s["icc_min"],
        s["flagged_bias"] or "none",
        s["enough_labelers"],
    )
    if "n_identity_swaps" in s:
        log.info(
            "consensus: identity swaps re-matched per labeler %s -> %s",
            s["identity_swaps"],
            Path(p.reports) / SWAPS_FILE,
        )
    if mlflow:
        log_to_mlflow(res)
    return res


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "consensus", help="merge several labelers into consensus labels + labeler QC"
    )
    sp.add_argument("--params", default=None, help="params.yaml (default: ./params.yaml)")
    sp.add_argument("--labels", default=None, help="labels parquet (default: params ingest.out)")
    sp.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the labeler QC to MLflow (active run or MLFLOW_TRACKING_URI)",
    )
    sp.set_defaults(func=lambda a: run(a.params, a.labels, a.mlflow) and 0)
