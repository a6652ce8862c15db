"""params.yaml sections of the data stages: ``project``, ``ingest``, ``consensus``, ``validate``,
``split`` and ``composition`` (plain dataclasses, validated by :func:`poseops.config.loader.from_dict`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

ProjectFormat = Literal["dlc", "lightning-pose"]
"""Layout of the labeled project: DeepLabCut, or Lightning Pose (CSV labels at the root)."""
FORMATS: tuple[str, ...] = get_args(ProjectFormat)

SplitMode = Literal["grouped", "leave-one-out", "temporal-blocks"]
"""How ``poseops split`` draws train / val / test (see :mod:`poseops.data.split`)."""
MODES: tuple[str, ...] = get_args(SplitMode)


@dataclass
class ProjectParams:
    """params.yaml ``project``: which project the pipeline runs on."""

    path: str = "data/raw/demo"  # the DLC project folder (config.yaml inside)
    format: str = "dlc"  # one of FORMATS (checked by ingest)
    metadata: str | None = "data/metadata/videos.csv"  # per-video metadata CSV


@dataclass
class IngestParams:
    """params.yaml ``ingest``."""

    out: str = "data/interim/labels.parquet"


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
    # multi-animal: a labeler's individuals are renamed (identity swap) when matching them to the
    # reference labeler's by position lowers their mean distance by more than this
    swap_margin_px: float = 5.0

    def __post_init__(self) -> None:
        # k >= 1 guarantees at most half the points of a group are removed (MAD is a median)
        checks = {
            "mad_k": self.mad_k >= 1,
            "min_scale_px": self.min_scale_px >= 0,
            "stop_rule_px": self.stop_rule_px > 0,
            "swap_margin_px": self.swap_margin_px >= 0,
            "max_removed_share": 0 <= self.max_removed_share <= 1,
            "min_icc": self.min_icc <= self.excellent_icc,
            "icc_min_frames": self.icc_min_frames >= 2,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            rules = "mad_k >= 1, min_scale_px >= 0, stop_rule_px > 0, "
            rules += "0 <= max_removed_share <= 1, min_icc <= excellent_icc, icc_min_frames >= 2, "
            rules += "swap_margin_px >= 0"
            raise PoseopsError(f"consensus: invalid {bad} (need {rules})")


@dataclass
class ValidateParams:
    """params.yaml ``validate``."""

    suite: str = "expectations/dataset.json"
    input: str = "data/interim/consensus.parquet"  # the labels table to check (consensus.out)
    out: str = "reports/validation/dataset.json"
    docs: str = "reports/validation/dataset-docs"  # Data Docs HTML site
    # per bodypart (multi-animal: per individual and bodypart): a number, or a mapping whose keys
    # are 'default', bodypart and individual names: {default: 0.25, Tongue: 0.8, pup7: 1.0}
    max_nan_share: float | dict[str, float] = 0.25
    min_frames_per_condition: int = 5
    max_condition_ratio: float = 3.0  # max/min frames per condition
    min_total_frames: int = 20
    min_animals_per_frame: int = 1  # multi-animal: labeled animals per image (max: config individuals)
    check_images: bool = True  # open and decode every labeled image
    fail_on_error: bool = True  # false: failures only warn
    tables: dict[str, str] = field(default_factory=dict)  # extra tables: name -> parquet/csv path


@dataclass
class SplitParams:
    """params.yaml ``split``."""

    input: str = "data/interim/consensus.parquet"  # consensus labels (one scorer)
    out: str = "data/processed/split.csv"
    mode: str = "grouped"  # one of MODES (SplitMode; checked by make_split)
    group_by: list[str] = field(default_factory=lambda: [S.VIDEO])  # the leakage unit
    stratify_by: str | None = S.CONDITION
    test_fraction: float = 0.2
    val_fraction: float = 0.3  # of the training frames, whole groups
    holdout_column: str | None = None  # leave-one-out: a metadata column, e.g. animal
    holdout_value: Any = None  # leave-one-out: the held-out value
    block_frames: int = 20  # temporal-blocks: block length in video frames
    gap_frames: int = 5  # temporal-blocks: min frames between two splits' frames is gap_frames + 1
    seed: int = 42
    # written by `poseops merge`: the previous iteration's split, kept (fixed test set)
    fixed_split: str | None = "data/processed/fixed_split.csv"
    # generalisation cohorts: extra held-out test sets, name -> {metadata column: value or [values]}
    # (e.g. {new_animal: {animal: m4}}); their frames get split "cohort:<name>" (never train/val)
    cohorts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class CompositionParams:
    """params.yaml ``composition``."""

    input: str = "data/interim/labels.parquet"  # labels (later: the consensus table)
    split: str | None = "data/processed/split.csv"  # null: no split section
    metrics: str = "reports/composition.json"
    table: str = "reports/composition.csv"
