"""params.yaml ``demo``: the seeded demo project's size, design and simulated labelers
(``poseops demo``; the generator is :mod:`poseops.demo`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]  # the demo animal's keypoints, in order


@dataclass
class DemoParams:
    """params.yaml ``demo``. ``DemoParams.small()`` is a fast variant for tests."""

    seed: int = 7
    out: str = "data/raw/demo"
    width: int = 160
    height: int = 120
    fps: int = 30
    frames_per_video: int = 90  # video length
    labeled_per_video: int = 10  # frames labeled (by the first labeler) per video
    animals: int = 4  # single-animal: animals; multi-animal: groups (cages) of animals_per_video
    sessions: int = 3  # crossover: each animal gets condition (animal + session) mod n
    conditions: list[str] = field(default_factory=lambda: ["vehicle", "low_dose", "high_dose"])
    doses: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])
    speeds: list[float] = field(default_factory=lambda: [0.6, 1.0, 1.6])  # px/frame per condition
    unlabeled_videos: int = 1  # extra recordings with no labels (analysis / outliers)
    occlusion_rate: float = 0.04  # share of keypoints hidden in the image and left NaN
    # condition -> bedding patches per frame near the animal, keypoints still labeled (heavier
    # occlusion in one condition, e.g. {high_dose: 3}: what the ablation's occlusion arm is for)
    clutter: dict[str, int] = field(default_factory=dict)
    labelers: list[str] = field(default_factory=lambda: ["alice", "bob", "carol"])
    multi_labeled_fraction: float = 0.4  # share of labeled frames relabeled by the others
    labeler_noise_px: float = 1.0  # sd per coordinate
    biased_labeler: str = "carol"
    biased_bodypart: str = "snout"
    bias_px: list[float] = field(default_factory=lambda: [4.0, 0.0])  # (dx, dy)
    camera: str = "top"
    date: str = "Jan1"  # DLC's config date (fixed for determinism)
    # multi-animal (maDLC) demo: animals_per_video > 1; the keys below are unused when it is 1
    animals_per_video: int = 1
    unique_bodyparts: list[str] = field(default_factory=list)  # fixed floor markers (DLC "single")
    swap_labeler: str = "bob"  # labels some frames with two animals' identities swapped
    swap_fraction: float = 0.25  # share of swap_labeler's frames that are swapped

    @classmethod
    def small(cls, **overrides: Any) -> DemoParams:
        """A tiny project for fast tests: 2 animals x 3 sessions, 30-frame videos, 6 labeled each."""
        base = dict(animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def small_multi(cls, **overrides: Any) -> DemoParams:
        """``small()`` as a multi-animal project: 2 groups x 3 sessions, 2 animals per video."""
        base: dict[str, Any] = dict(animals_per_video=2)
        base.update(overrides)
        return cls.small(**base)

    @property
    def multi(self) -> bool:
        return self.animals_per_video > 1

    def check(self) -> None:
        n = len(self.conditions)
        if not (len(self.doses) == n == len(self.speeds)):
            raise PoseopsError("demo: conditions, doses and speeds must have the same length")
        if self.labeled_per_video > self.frames_per_video:
            raise PoseopsError("demo: labeled_per_video > frames_per_video")
        if self.biased_labeler and self.biased_labeler not in self.labelers:
            raise PoseopsError(f"demo: biased_labeler {self.biased_labeler!r} not in labelers")
        if self.biased_bodypart not in BODYPARTS:
            raise PoseopsError(f"demo: biased_bodypart must be one of {BODYPARTS}")
        if self.width < 64 or self.height < 48:
            raise PoseopsError("demo: width/height too small (min 64x48)")
        bad = {c: n for c, n in self.clutter.items() if c not in self.conditions or n < 0}
        if bad:
            raise PoseopsError(f"demo: clutter {bad}: keys must be conditions {self.conditions}, "
                               "values >= 0 patches per frame")
        if not 0 <= self.occlusion_rate < 1 or not 0 <= self.multi_labeled_fraction <= 1:
            raise PoseopsError("demo: occlusion_rate and multi_labeled_fraction must be in [0, 1)")
        if not 1 <= self.animals_per_video <= 4:
            raise PoseopsError("demo: animals_per_video must be 1 (single-animal) to 4")
        if self.multi:
            if self.swap_labeler and self.swap_labeler not in self.labelers:
                raise PoseopsError(f"demo: swap_labeler {self.swap_labeler!r} not in labelers")
            if not 0 <= self.swap_fraction <= 1:
                raise PoseopsError("demo: swap_fraction must be in [0, 1]")
            bad = [b for b in self.unique_bodyparts if b in BODYPARTS or b == S.SINGLE]
            if bad or len(set(self.unique_bodyparts)) != len(self.unique_bodyparts):
                raise PoseopsError(f"demo: unique_bodyparts must be new, distinct names (got {bad})")
            if self.labeled_per_video < self.animals_per_video - 1:
                raise PoseopsError("demo: labeled_per_video must cover every animals' crossing")
