"""Labeler quality control over the label cube (pure): offsets and bias per labeler, pairwise
distances, ICC, drift per batch, the stop rule, and the pairwise heatmap.

Every table is documented in the function that builds it; ``bodypart == "all"`` rows pool every
bodypart. Multi-animal labels are matched first (:func:`poseops.data.identities.match_identities`):
per-bodypart QC then pools the individuals.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.robust import LabelCube, nanmean, robust_consensus

log = logging.getLogger(__name__)

ALL = "all"  # bodypart value of the per-labeler rows that pool every bodypart


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
        t = nanmean(v - b, 1)
        b_new = np.where(has, np.nan_to_num(nanmean(v - t[:, None], 0)), 0.0)
        b_new -= b_new[ref] if ref is not None and has[ref] else np.median(b_new[has])
        done = np.max(np.abs(b_new - b)) < tol
        b = b_new
        if done:
            break
    t = nanmean(v - b, 1)
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
    return _flag_labelers(pd.DataFrame(rows), p)


def _flag_labelers(qc: pd.DataFrame, p: ConsensusParams) -> pd.DataFrame:
    """The QC rows of :func:`labeler_qc` with every column and the two flags, in order."""
    for c in ["bias_x", "bias_y", "bias_px", "bias_se", "gold_n", "gold_dx", "gold_dy", "gold_dist"]:
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


def point_distances(cube: LabelCube) -> pd.DataFrame:
    """Distance between two labelers' positions of every point both labeled (raw, before
    removal): the cube's key columns (image, [individual,] bodypart), ``scorer_a, scorer_b,
    distance_px`` with scorer_a before scorer_b in ``cube.scorers``; rows by pair, then in cube
    order. The one computation of labeler distances (consensus QC and composition)."""
    cols = [*cube.keys.columns, "scorer_a", "scorer_b", "distance_px"]
    parts = []
    for a, b in itertools.combinations(range(len(cube.scorers)), 2):
        d = np.hypot(cube.x[:, a] - cube.x[:, b], cube.y[:, a] - cube.y[:, b])
        fin = np.isfinite(d)
        part = cube.keys.loc[fin].reset_index(drop=True)
        part["scorer_a"], part["scorer_b"], part["distance_px"] = (
            cube.scorers[a], cube.scorers[b], d[fin])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def pairwise_distances(cube: LabelCube) -> pd.DataFrame:
    """Mean distance between two labelers on the points both labeled (raw, before removal;
    :func:`point_distances`).

    Columns: bodypart, scorer_a, scorer_b, n, mean_px, median_px; both orders, a != b, plus
    ``bodypart == "all"`` rows pooling every bodypart.
    """
    pts = point_distances(cube)
    rows = []
    for a, sa in enumerate(cube.scorers):
        for b, sb in enumerate(cube.scorers):
            if a == b:
                continue
            lo, hi = cube.scorers[min(a, b)], cube.scorers[max(a, b)]
            pair = pts[(pts["scorer_a"] == lo) & (pts["scorer_b"] == hi)]
            frame = pd.DataFrame(
                {S.BODYPART: pair[S.BODYPART].to_numpy(), "d": pair["distance_px"].to_numpy()}
            )
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
