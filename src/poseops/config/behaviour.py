"""params.yaml ``behaviour``: trajectories -> quality, endpoints, agreement with a manual scoring
and condition effects (``poseops behaviour``; the science is :mod:`poseops.behaviour`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

from poseops.config.demo import BODYPARTS

log = logging.getLogger(__name__)

FilterType = Literal["median", "arima", "spline"]
"""DeepLabCut's ``filterpredictions`` filter types (``behaviour.filter``; null = no filter)."""
FILTER_TYPES: tuple[str, ...] = get_args(FilterType)


@dataclass
class BehaviourParams:
    """params.yaml ``behaviour`` (``poseops behaviour``)."""

    # the analyze stage's folder: predictions.parquet + DLC's <video><scorer>.h5 (analyze.out)
    analyzed: str = "data/refine/analyze"
    filter: str | None = "median"  # one of FILTER_TYPES (DLC filterpredictions); null: raw
    filter_windowlength: int = 5  # median: window (odd); spline: longest gap filled
    filter_p_bound: float = 0.001  # arima: likelihood below which a point is missing
    reference: list[str] = field(default_factory=lambda: list(BODYPARTS))  # centroid of these
    pcutoff: float = 0.6  # points below it are missing (quality: "low likelihood")
    jump_px: float = 20.0  # frame-to-frame step counted as a jump
    # per-video arena CSV: video, shape (rectangle|circle), x0, y0, x1, y1 | cx, cy, r,
    # px_per_cm, fps (a row with an empty video applies to every video); null: params below only
    arena: str | None = "data/raw/demo/arena.csv"
    fps: float | None = None  # used where the arena CSV gives none
    px_per_cm: float | None = None  # used where the arena CSV gives none
    centre_fraction: float = 0.5  # centre zone = arena scaled by this (sides / radius)
    immobile_speed_cm_s: float = 2.0
    immobile_min_s: float = 1.0
    # manual scoring CSV: video, frame, x, y [, bodypart] (px); null: no agreement / effects
    manual: str | None = "data/raw/demo/manual_scoring.csv"
    control: str | None = None  # effect reference condition; null: the first in the metadata
    n_boot: int = 2000
    min_icc: float = 0.75  # verdict: an endpoint agrees when ICC(2,1)'s lower CI bound >= this
    ci: float = 0.95
    seed: int = 0
    expected_animals: int | None = None  # multi-animal; null: the DLC config's individuals
    out: str = "reports/behaviour"
    workdir: str = "data/behaviour"  # DLC's filtered .h5 files (kept out of analyze's folder)
    log_mlflow: bool = True
