"""Behavioural endpoints of one reference-point trajectory per video, in cm and seconds.

A trajectory is ``frame, x, y`` in pixels (missing samples dropped); time is ``frame / fps``, so
the same functions serve a full-rate model track and a manual scoring of every 10th frame.
Samples need not be consecutive: a step is the straight line between two consecutive samples.

- ``distance_cm``: sum of step lengths / px_per_cm.
- ``duration_s``: time from the first to the last sample.
- ``mean_speed_cm_s`` = distance / duration; ``median_speed_cm_s``: median of per-step speeds.
- ``immobile_s``: total duration of runs of consecutive steps slower than
  ``immobile_speed_cm_s`` that last at least ``immobile_min_s``.
- ``centre_s`` / ``periphery_s``: each sample's dwell time (the time to the next sample; the last
  sample gets the median step time) summed by zone; ``centre_share`` = centre / (centre +
  periphery); ``centre_entries``: periphery -> centre transitions. The centre zone is the arena
  scaled by ``centre_fraction`` about its centre (a rectangle's sides, a circle's radius); points
  outside the arena count as periphery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

ENDPOINTS = ["distance_cm", "duration_s", "mean_speed_cm_s", "median_speed_cm_s", "immobile_s",
             "centre_s", "periphery_s", "centre_share", "centre_entries"]
"""Endpoint columns of the behaviour table, in order."""


@dataclass
class Arena:
    """The arena floor in image pixels: a ``rectangle`` (x0, y0, x1, y1) or a ``circle``
    (cx, cy, r)."""

    shape: str
    x0: float = float("nan")
    y0: float = float("nan")
    x1: float = float("nan")
    y1: float = float("nan")
    cx: float = float("nan")
    cy: float = float("nan")
    r: float = float("nan")

    def __post_init__(self) -> None:
        if self.shape == "rectangle":
            vals = (self.x0, self.y0, self.x1, self.y1)
            if not (np.all(np.isfinite(vals)) and self.x1 > self.x0 and self.y1 > self.y0):
                raise PoseopsError(f"arena rectangle needs x0 < x1 and y0 < y1, got {vals}")
        elif self.shape == "circle":
            if not (np.isfinite(self.cx) and np.isfinite(self.cy) and self.r > 0):
                raise PoseopsError(f"arena circle needs cx, cy and r > 0, got "
                                   f"{(self.cx, self.cy, self.r)}")
        else:
            raise PoseopsError(f"arena shape must be 'rectangle' or 'circle', got {self.shape!r}")

    def in_centre(self, xy: np.ndarray, fraction: float) -> np.ndarray:
        """Points (n, 2) inside the centre zone (the arena scaled by ``fraction``)."""
        x, y = np.asarray(xy, float).T
        if self.shape == "circle":
            return np.hypot(x - self.cx, y - self.cy) <= fraction * self.r
        mx, my = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = fraction * (self.x1 - self.x0) / 2, fraction * (self.y1 - self.y0) / 2
        return (np.abs(x - mx) <= hw) & (np.abs(y - my) <= hh)


@dataclass
class EndpointParams:
    """Units and thresholds of :func:`endpoints` (one video)."""

    fps: float
    px_per_cm: float
    immobile_speed_cm_s: float = 2.0
    immobile_min_s: float = 1.0
    centre_fraction: float = 0.5


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of the runs of True in ``mask``."""
    padded = np.concatenate([[0], np.asarray(mask, np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def immobile_time(speed: np.ndarray, dt: np.ndarray, threshold: float, min_s: float) -> float:
    """Total duration of runs of steps with speed < ``threshold`` lasting >= ``min_s`` seconds."""
    total = 0.0
    for a, b in _runs(np.asarray(speed) < threshold):
        d = float(np.sum(dt[a:b]))
        if d >= min_s - 1e-9:
            total += d
    return total


def endpoints(track: pd.DataFrame, p: EndpointParams, arena: Arena | None) -> dict[str, float]:
    """Endpoints of one trajectory (``frame, x, y`` px); see the module docstring. Without an
    arena the zone endpoints are NaN."""
    t = track.dropna(subset=[S.X, S.Y]).sort_values(S.FRAME)
    nan = float("nan")
    out = dict.fromkeys(ENDPOINTS, nan)
    if len(t) < 2:
        return out
    time = t[S.FRAME].to_numpy(float) / p.fps
    xy = t[[S.X, S.Y]].to_numpy(float)
    dt = np.diff(time)
    step = np.hypot(*np.diff(xy, axis=0).T) / p.px_per_cm
    speed = step / dt
    out["distance_cm"] = float(step.sum())
    out["duration_s"] = float(time[-1] - time[0])
    out["mean_speed_cm_s"] = out["distance_cm"] / out["duration_s"]
    out["median_speed_cm_s"] = float(np.median(speed))
    out["immobile_s"] = immobile_time(speed, dt, p.immobile_speed_cm_s, p.immobile_min_s)
    if arena is not None:
        dwell = np.append(dt, np.median(dt))
        centre = arena.in_centre(xy, p.centre_fraction)
        out["centre_s"] = float(dwell[centre].sum())
        out["periphery_s"] = float(dwell[~centre].sum())
        out["centre_share"] = out["centre_s"] / (out["centre_s"] + out["periphery_s"])
        out["centre_entries"] = float(np.sum(~centre[:-1] & centre[1:]))
    return out


def track_keys(df: pd.DataFrame) -> list[str]:
    """What one trajectory is in ``df``: a video, or (video, individual) for tracked
    multi-animal tables."""
    return [S.VIDEO, S.INDIVIDUAL] if S.INDIVIDUAL in df.columns else [S.VIDEO]


def reference_track(preds: pd.DataFrame, bodyparts: list[str], pcutoff: float) -> pd.DataFrame:
    """Per (video, [individual,] frame): the centroid of ``bodyparts`` predicted with likelihood
    >= pcutoff (NaN where none is): columns video, [individual,] frame, x, y, n_points. Tracked
    multi-animal predictions: one track per individual; the unique bodyparts (``single``) are
    not an animal and never enter a centroid."""
    if S.INDIVIDUAL in preds.columns:
        preds = preds[preds[S.INDIVIDUAL] != S.SINGLE]
    missing = sorted(set(bodyparts) - set(preds[S.BODYPART]))
    if missing:
        raise PoseopsError(f"behaviour.reference bodyparts {missing} not in the predictions "
                           f"(bodyparts: {sorted(set(preds[S.BODYPART]))})")
    p = preds[preds[S.BODYPART].isin(bodyparts)]
    ok = p[S.LIKELIHOOD] >= pcutoff
    p = p.assign(x=p[S.X].where(ok), y=p[S.Y].where(ok))
    g = p.groupby([*track_keys(p), S.FRAME], sort=True)
    out = g.agg(x=(S.X, "mean"), y=(S.Y, "mean"), n_points=(S.X, "count")).reset_index()
    return out
