"""params.yaml ``ablation:``: the augmentation ablation (``pipelines/ablation/dvc.yaml``,
``poseops ablation``): arms (name -> ``train:`` overrides) x seeds, each trained on the same split
and evaluated on the same fixed test set, compared with the baseline arm."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from poseops.core.errors import PoseopsError

_NAME = re.compile(r"^[A-Za-z0-9_.]+$")  # an arm names a DVC stage and a folder: no '-' or '/'

PHOTOMETRIC: dict[str, Any] = {"brightness": 0.3, "contrast": 0.3, "gamma": 0.3, "grayscale": True}
OCCLUSION: dict[str, Any] = {"covering": 0.5, "covering_holes": 4, "covering_size": [0.05, 0.2]}


def _default_arms() -> dict[str, dict[str, Any]]:
    return {
        "current": {},  # train: as it is (the baseline)
        "none": {"affine_p": 0.0, "gaussian_noise": 0.0, "motion_blur": False},
        "photometric": dict(PHOTOMETRIC),
        "occlusion": dict(OCCLUSION),
        "all": {**PHOTOMETRIC, **OCCLUSION, "elastic": True},
    }


@dataclass
class AblationParams:
    """params.yaml ``ablation:``."""

    arms: dict[str, dict[str, Any]] = field(default_factory=_default_arms)  # name -> train: overrides
    baseline: str = "current"  # the arm every other one is compared with
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # train.seed of each arm's runs
    train: dict[str, Any] = field(default_factory=dict)  # train: overrides for every arm (epochs...)
    name: str = "augmentation"  # the MLflow parent run (one per arms/seeds/train settings)
    experiment: str | None = None  # MLflow experiment; None = train.experiment
    out: str = "data/ablation"  # runs/<arm>-<seed>/ (working project, model, eval), metrics/
    reports: str = "reports/ablation"  # results.csv, spread.csv, summary.json, ablation.png
    split: str = "test"  # the fixed set every arm is evaluated on
    cohorts: bool = True  # also evaluate split.cohorts (held out, never trained on) beside it
    unit: str = "video"  # paired statistics over videos (compare's: Wilcoxon + cluster bootstrap)
    min_units: int = 5  # fewer units: NaN p-value and CI (with the reason)
    n_boot: int = 2000
    ci: float = 0.95
    stat_seed: int = 0  # the bootstrap's seed
    harm_tol_px: float = 0.0  # a condition is harmed when the CI's low end is above this

    def __post_init__(self) -> None:
        where = "params.yaml [ablation]"
        if not self.arms:
            raise PoseopsError(f"{where} arms: give at least one arm (name: train overrides)")
        bad = [a for a in self.arms if not _NAME.match(str(a))]
        if bad:
            raise PoseopsError(f"{where} arms: name {bad[0]!r} must be letters, digits, '_' or "
                               "'.' (it names a DVC stage and a folder)")
        for arm, over in self.arms.items():
            if over is not None and not isinstance(over, dict):
                raise PoseopsError(f"{where} arms.{arm}: a mapping of train: keys, got {over!r}")
        if self.baseline not in self.arms:
            raise PoseopsError(f"{where} baseline: {self.baseline!r} is not an arm "
                               f"({', '.join(self.arms)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise PoseopsError(f"{where} seeds: give distinct seeds, got {self.seeds}")
        if not 0 < self.ci < 1:
            raise PoseopsError(f"{where} ci: must be in (0, 1), got {self.ci}")

    def run_name(self, arm: str, seed: int) -> str:
        """``<arm>-<seed>``: the run's folder under ``out/runs`` and its DVC matrix key."""
        return f"{arm}-{seed}"

    def overrides(self, arm: str) -> dict[str, Any]:
        """The ``train:`` overrides of one arm: ``ablation.train`` then the arm's own."""
        if arm not in self.arms:
            raise PoseopsError(f"params.yaml [ablation] arms: no arm {arm!r} ({', '.join(self.arms)})")
        return {**self.train, **(self.arms[arm] or {})}
