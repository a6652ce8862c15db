"""Label-free quality of predicted trajectories (no labels needed): per video and bodypart.

Input: tidy predictions ``video, frame, bodypart, x, y, likelihood`` (DLC's ``analyze_videos``
output through :func:`poseops.dlc.inference.predictions_from_dlc`), one row per frame and
bodypart. Metrics (each on the frames of one video and bodypart, in frame order):

- ``jitter_px``: the median over frames of the norm of the second difference
  ``|p[t+1] - 2 p[t] + p[t-1]|``. Smooth motion (constant velocity) contributes ~0; independent
  per-frame noise of sd ``s`` per coordinate gives ``s * sqrt(12 ln 2)`` (~2.88 s).
- ``jump_rate``: share of frame-to-frame steps longer than ``jump_px``.
- ``low_likelihood_share``: share of frames with likelihood below ``pcutoff``.
- ``longest_low_run``: the longest run of consecutive frames below ``pcutoff`` (frames).
- multi-animal (``assembly`` or ``individual`` column): :func:`animal_count_share`, the share of
  frames with the expected number of animals (an animal counts when one of its keypoints reaches
  ``pcutoff``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from poseops.core import schema as S

QUALITY_COLUMNS = ["n_frames", "jitter_px", "jump_rate", "low_likelihood_share",
                   "longest_low_run", "mean_likelihood"]


def second_difference_norm(xy: np.ndarray) -> np.ndarray:
    """(frames, 2) -> (frames - 2,) norms of p[t+1] - 2 p[t] + p[t-1] (NaN where a point is)."""
    xy = np.asarray(xy, float)
    if len(xy) < 3:
        return np.empty(0)
    d2 = xy[2:] - 2 * xy[1:-1] + xy[:-2]
    return np.hypot(d2[:, 0], d2[:, 1])


def step_lengths(xy: np.ndarray) -> np.ndarray:
    """(frames, 2) -> (frames - 1,) frame-to-frame displacement (NaN where a point is)."""
    xy = np.asarray(xy, float)
    if len(xy) < 2:
        return np.empty(0)
    d = np.diff(xy, axis=0)
    return np.hypot(d[:, 0], d[:, 1])


def jitter(xy: np.ndarray) -> float:
    """Median absolute second difference (px): see the module docstring."""
    n = second_difference_norm(xy)
    n = n[np.isfinite(n)]
    return float(np.median(n)) if len(n) else float("nan")


def jump_rate(xy: np.ndarray, jump_px: float) -> float:
    """Share of frame-to-frame steps longer than ``jump_px`` (steps with a missing point left out)."""
    s = step_lengths(xy)
    s = s[np.isfinite(s)]
    return float((s > jump_px).mean()) if len(s) else float("nan")


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in ``mask``."""
    m = np.asarray(mask, bool)
    if not m.any():
        return 0
    padded = np.concatenate([[0], m.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


def track_quality(xy: np.ndarray, likelihood: np.ndarray, pcutoff: float,
                  jump_px: float) -> dict[str, float]:
    """The metrics of one trajectory (frames in order, consecutive)."""
    lik = np.asarray(likelihood, float)
    low = ~(lik >= pcutoff)  # NaN likelihood counts as low
    return {
        "n_frames": int(len(lik)),
        "jitter_px": jitter(xy),
        "jump_rate": jump_rate(xy, jump_px),
        "low_likelihood_share": float(low.mean()) if len(lik) else float("nan"),
        "longest_low_run": longest_run(low),
        "mean_likelihood": float(np.nanmean(lik)) if np.isfinite(lik).any() else float("nan"),
    }


def video_quality(preds: pd.DataFrame, pcutoff: float, jump_px: float,
                  keys: tuple[str, ...] = (S.VIDEO, S.BODYPART)) -> pd.DataFrame:
    """Per ``keys`` (video, [individual,] bodypart): :func:`track_quality`, frames reindexed to a
    consecutive range (a missing frame is a missing point, not a shorter step)."""
    rows = []
    for key, g in preds.groupby(list(keys), sort=True):
        g = g.set_index(S.FRAME).sort_index()
        g = g[~g.index.duplicated()]
        g = g.reindex(np.arange(int(g.index.min()), int(g.index.max()) + 1))
        q = track_quality(g[[S.X, S.Y]].to_numpy(float), g[S.LIKELIHOOD].to_numpy(float),
                          pcutoff, jump_px)
        rows.append({**dict(zip(keys, key, strict=True)), **q})
    return pd.DataFrame(rows, columns=[*keys, *QUALITY_COLUMNS])


def animal_count_share(preds: pd.DataFrame, expected: int, pcutoff: float,
                       animal: str = S.ASSEMBLY) -> pd.DataFrame:
    """Multi-animal: per video, the share of frames in which exactly ``expected`` animals
    (``animal`` column: assembly or individual; unique bodyparts, assembly -1 / ``single``, left
    out) have at least one keypoint with likelihood >= pcutoff. Frames with no detection count
    as 0 animals."""
    p = preds[~preds[animal].isin([-1, S.SINGLE])]
    seen = p[p[S.LIKELIHOOD] >= pcutoff].groupby([S.VIDEO, S.FRAME])[animal].nunique()
    rows = []
    for video, g in p.groupby(S.VIDEO, sort=True):
        frames = np.unique(g[S.FRAME])
        counts = seen.reindex(pd.MultiIndex.from_product([[video], frames]), fill_value=0)
        rows.append({S.VIDEO: video, "n_frames": len(frames), "expected_animals": expected,
                     "expected_animals_share": float((counts.to_numpy() == expected).mean())})
    return pd.DataFrame(rows)
