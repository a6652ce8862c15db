"""The per-video metadata CSV (``project.metadata``): one row per video, keyed by ``video``.

Columns: video, animal, session, condition, dose, camera, then any extra columns (batch,
genotype, ...). :func:`read_metadata` is the one reader (ingest, composition, extract, outliers):
the video key is normalised once (:func:`video_key`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

METADATA_REQUIRED = [S.VIDEO, *S.METADATA_COLUMNS]
# a video named with its file (``m1s1.mp4``, ``videos/m1s1.mp4``) is keyed by its stem
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".m4v", ".h264"}
_TEXT_COLUMNS = {S.VIDEO: str, S.ANIMAL: str, S.SESSION: str, S.CAMERA: str}


def video_key(value: Any) -> str:
    """The video name a metadata row refers to: the text stripped of blanks; a video file name or
    path (``.mp4``, ``.avi``, ...) becomes its stem, as DLC names labeled-data folders."""
    key = str(value).strip()
    p = Path(key)
    return p.stem if p.suffix.lower() in VIDEO_SUFFIXES else key


def read_metadata(path: str | Path, required: Sequence[str] = METADATA_REQUIRED) -> pd.DataFrame:
    """Read the metadata CSV: video, animal, session and camera as text, ``video`` normalised
    (:func:`video_key`). Missing file, unreadable CSV, a column of ``required`` (``video`` always)
    missing, an empty or a duplicate video name -> PoseopsError naming the file (and row)."""
    path = Path(path)
    if not path.is_file():
        raise PoseopsError("metadata CSV not found", file=path)
    try:
        meta = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PoseopsError(f"cannot read metadata CSV: {str(e).splitlines()[0]}", file=path) from e
    required = list(dict.fromkeys([S.VIDEO, *required]))
    missing = [c for c in required if c not in meta.columns]
    if missing:
        raise PoseopsError(
            f"metadata CSV missing column(s) {missing}; required {required}, "
            f"has {list(meta.columns)}",
            file=path,
        )
    bad = meta[S.VIDEO].isna() | (meta[S.VIDEO].astype(str).str.strip() == "")
    if bad.any():
        raise PoseopsError("empty video name", file=path, row=int(np.flatnonzero(bad)[0]) + 2)
    meta[S.VIDEO] = meta[S.VIDEO].map(video_key)
    dup = meta[S.VIDEO].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise PoseopsError(
            f"duplicate metadata row for video {meta[S.VIDEO].iloc[i]!r}", file=path, row=i + 2
        )
    return meta


def join_metadata(labels: pd.DataFrame, meta: pd.DataFrame | None) -> pd.DataFrame:
    """Left-join per-video metadata onto labels; without metadata the standard columns are NaN."""
    if meta is None:
        out = labels.copy()
        for c in S.METADATA_COLUMNS:  # dose is numeric, the others are names
            out[c] = pd.Series(np.nan, index=out.index, dtype=float if c == S.DOSE else object)
        return out
    unknown = sorted(set(labels[S.VIDEO]) - set(meta[S.VIDEO]))
    if unknown:
        log.warning("videos without a metadata row: %s", unknown)
    meta_cols = [c for c in meta.columns if c not in labels.columns or c == S.VIDEO]
    out = labels.merge(meta[meta_cols], on=S.VIDEO, how="left", validate="many_to_one")
    std = [c for c in S.METADATA_COLUMNS]
    extra = [c for c in meta_cols if c not in std and c != S.VIDEO]
    return out[[*labels.columns, *std, *extra]]


def design_conditions(path: str | Path | None) -> set[str]:
    """Conditions listed in the metadata CSV (the experimental design, unlabeled recordings
    included); empty when there is no file or no condition column."""
    if not path or not Path(path).is_file():
        return set()
    meta = read_metadata(path, required=[S.VIDEO])
    if S.CONDITION not in meta.columns:
        return set()
    return set(meta[S.CONDITION].dropna().astype(str))
