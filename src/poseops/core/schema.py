"""Column names of the tidy tables every stage reads and writes (one place, used everywhere).

Tables are long/tidy pandas frames, one row per observation:

- labels:      one row per (image, scorer, bodypart)
- split:       one row per image
- predictions: one row per (image, bodypart)
- errors:      one row per (image, bodypart), predictions joined to consensus labels
- stratified:  one row per (stratum_type, stratum, split)
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

# identifiers
IMAGE = "image"  # DLC's relative path, e.g. "labeled-data/m4s1/img0007.png"
VIDEO = "video"  # labeled-data sub-folder name (the video stem)
FRAME = "frame"  # frame index parsed from the image name (imgNNNN -> NNNN)
SCORER = "scorer"
BODYPART = "bodypart"
INDIVIDUAL = "individual"  # multi-animal tables only: DLC's individual (an animal, or SINGLE)
SINGLE = "single"  # DLC's individual that holds a multi-animal project's unique bodyparts
# coordinates
X = "x"
Y = "y"
LABELED = "labeled"  # x and y both finite
WIDTH = "width"
HEIGHT = "height"
LIKELIHOOD = "likelihood"
# per-video metadata (data/metadata/videos.csv); extra columns are kept as-is
ANIMAL = "animal"
SESSION = "session"
CONDITION = "condition"
DOSE = "dose"
CAMERA = "camera"
METADATA_COLUMNS = [ANIMAL, SESSION, CONDITION, DOSE, CAMERA]
# split
GROUP = "group"
SPLIT = "split"
TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
# generalisation cohorts (split.cohorts): extra held-out test sets, split value "cohort:<name>"
COHORT_PREFIX = "cohort:"
# errors / predictions
ERROR_PX = "error_px"
SNAPSHOT = "snapshot"
# multi-animal evaluation: a predicted animal (DLC assembly) of an image (-1: the unique
# bodyparts), and the number of labeled individuals (animals, not SINGLE) in an image
ASSEMBLY = "assembly"
ANIMALS_IN_FRAME = "animals_in_frame"
# consensus (per keypoint: n_labelers, n_removed, ila_px, disagreement; per frame: frame_ila_px).
# SAMPLE_WEIGHT: no longer written (DeepLabCut 3 cannot weight samples, issue 22); the name stays
# so an older consensus table's column is not taken for metadata
CONSENSUS_SCORER = "consensus"
N_LABELERS = "n_labelers"
N_REMOVED = "n_removed"
ILA_PX = "ila_px"
DISAGREEMENT = "disagreement"
FRAME_ILA_PX = "frame_ila_px"
SAMPLE_WEIGHT = "sample_weight"
KEYPOINT_COLUMNS = [N_LABELERS, N_REMOVED, ILA_PX, DISAGREEMENT]

LABEL_COLUMNS = [IMAGE, VIDEO, FRAME, SCORER, BODYPART, X, Y, LABELED, WIDTH, HEIGHT]
SPLIT_COLUMNS = [IMAGE, VIDEO, GROUP, SPLIT]
PREDICTION_COLUMNS = [IMAGE, BODYPART, X, Y, LIKELIHOOD]
ERROR_COLUMNS = [IMAGE, SPLIT, BODYPART, VIDEO, ERROR_PX, LIKELIHOOD, LABELED]


def require_columns(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    """Raise a PoseopsError naming the table and the missing columns."""
    from poseops.core.errors import PoseopsError

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PoseopsError(f"{table}: missing column(s) {missing}; has {list(df.columns)}")


def keypoint_keys(df: pd.DataFrame) -> list[str]:
    """Columns naming one keypoint of a frame: (image, individual, bodypart) in a multi-animal
    table (it has an ``individual`` column), else (image, bodypart)."""
    return [IMAGE, INDIVIDUAL, BODYPART] if INDIVIDUAL in df.columns else [IMAGE, BODYPART]


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """Metadata columns present in a labels-like table: the standard ones first, then extras."""
    core = set(LABEL_COLUMNS) | set(KEYPOINT_COLUMNS) | {FRAME_ILA_PX, SAMPLE_WEIGHT}
    core |= {INDIVIDUAL, LIKELIHOOD, GROUP, SPLIT, ERROR_PX, SNAPSHOT}
    core |= {ASSEMBLY, ANIMALS_IN_FRAME}
    std = [c for c in METADATA_COLUMNS if c in df.columns]
    extra = [c for c in df.columns if c not in core and c not in std]
    return std + extra


def is_cohort(split_value: object) -> bool:
    """Is a split value a generalisation cohort's (``cohort:<name>``)?"""
    return isinstance(split_value, str) and split_value.startswith(COHORT_PREFIX)
