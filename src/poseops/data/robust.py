"""Robust per-keypoint medians of several labelers (pure numpy), on the label cube.

The labels table (one row per image, scorer, [individual,] bodypart) pivots to a
:class:`LabelCube`: arrays of shape (groups, labelers), one group per consensus point. Per group,
:func:`robust_consensus` removes points further than ``mad_k`` x MAD from the coordinate-wise median
and takes the median of the rest (see :mod:`poseops.data.consensus` for the rule).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)


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


def nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN rows are expected (nobody labeled) -> NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def nanmean(a: np.ndarray, axis: int) -> np.ndarray:
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
    mx, my = nanmedian(x, 1), nanmedian(y, 1)
    d = np.hypot(x - mx[:, None], y - my[:, None])
    scale = np.fmax(nanmedian(d, 1), min_scale_px)  # fmax: NaN MAD (empty row) -> floor
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
        cx=nanmedian(xk, 1),
        cy=nanmedian(yk, 1),
        removed=removed,
        kept=kept,
        n_points=n,
        n_kept=kept.sum(axis=1),
        ila_px=ila,
        pair_sum=pair_sum,
        pair_count=pair_count,
    )
