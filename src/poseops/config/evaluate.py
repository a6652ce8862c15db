"""params.yaml ``evaluate:`` and ``report:``: how the selected snapshot is scored
(``poseops evaluate``) and the iteration's HTML page (``poseops report``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from poseops.core import schema as S

log = logging.getLogger(__name__)

# today's strata: single columns, then crossed ones; the multi-animal strata (individual,
# animals_in_frame) and any default column absent from a table are skipped there
DEFAULT_STRATA: tuple[str | tuple[str, ...], ...] = (
    S.BODYPART,
    S.CONDITION,
    S.ANIMAL,
    S.SESSION,
    S.VIDEO,
    (S.BODYPART, S.CONDITION),
    S.INDIVIDUAL,
    S.ANIMALS_IN_FRAME,
)


def default_strata() -> list[str | list[str]]:
    """``evaluate.strata``'s default (:data:`DEFAULT_STRATA`, crossed strata as lists)."""
    return [s if isinstance(s, str) else list(s) for s in DEFAULT_STRATA]


@dataclass
class EvaluateParams:
    """params.yaml `evaluate:` section."""

    pcutoff: float | dict[str, float] | None = None  # None: the DLC config's pcutoff
    pck_thresholds_px: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0])
    pck_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    reference_bodyparts: list[str] | None = field(default_factory=lambda: ["snout", "tailbase"])
    pck_curve_max_px: float = 20.0
    pck_curve_step_px: float = 0.5
    # strata of the stratified table: metadata columns (any column of the metadata CSV: camera,
    # arena, ...) and crossed combinations ([condition, bodypart]); see DEFAULT_STRATA
    strata: list[str | list[str]] = field(default_factory=lambda: default_strata())
    bias_factors: list[str] = field(default_factory=lambda: [S.CONDITION, S.ANIMAL])
    bias_unit: str = S.VIDEO  # condition-bias tests on per-video means; "image": per frame (optimistic)
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    snapshot: str | None = None  # a snapshot path; None: the training's selected snapshot
    diagnosis: dict[str, Any] = field(default_factory=dict)  # poseops.evaluate.diagnose.Thresholds keys
    out: str = "data/eval"
    metrics: str = "reports/metrics.json"
    plots: str = "reports/plots"
    log_mlflow: bool = True
    # generalisation cohorts (split.cohorts): the largest allowed increase of a cohort's test RMSE
    # over the standard test set's, in percent (GE expectation in validate-report); null: recorded only
    max_cohort_drop_pct: float | None = None


@dataclass
class ReportParams:
    """params.yaml `report:` section."""

    out: str = "reports/report.html"
    title: str = "poseops iteration report"
    example_frames: int = 6  # test frames drawn with labels vs predictions (worst first)
    max_table_rows: int = 60
    log_mlflow: bool = True
    # optional inputs, shown when present (not DVC deps: absent until their stage has run)
    iterations: str | None = "reports/iterations.csv"  # refinement history (iteration, RMSE...)
    behaviour: str | None = "reports/behaviour"  # poseops behaviour: summary.json, *.png, *.csv
    ablation: str | None = "reports/ablation"  # poseops ablation: summary.json, *.png, *.csv
