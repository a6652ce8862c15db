"""The behaviour stage's two user files, read and checked (one-line errors naming file and row).

- Manual scoring CSV: ``video, frame, x, y[, bodypart][, individual]`` in image pixels (a BORIS / EthoVision /
  hand scoring export converted to these columns). ``video`` is the video's stem (``m1-s1``; a
  file name ``m1-s1.mp4`` is reduced to it); several bodyparts of one frame are averaged (their
  centroid); rows with an empty x or y are dropped. Multi-animal (tracked) predictions need an
  ``individual`` column naming DLC's individuals (the config's ``individuals``).
- Arena CSV: ``video, shape, x0, y0, x1, y1, cx, cy, r, px_per_cm, fps`` (shape ``rectangle``
  uses x0..y1, ``circle`` cx, cy, r; every column but video optional). A row with an empty video
  applies to the videos without a row of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.behaviour.endpoints import Arena
from poseops.core import schema as S
from poseops.core.errors import PoseopsError

MANUAL_COLUMNS = [S.VIDEO, S.FRAME, S.X, S.Y]
ARENA_NUMBERS = ["x0", "y0", "x1", "y1", "cx", "cy", "r", "px_per_cm", "fps"]
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".m4v", ".h264"}


def _video_key(value: object) -> str:
    key = str(value).strip()
    p = Path(key)
    return p.stem if p.suffix.lower() in _VIDEO_SUFFIXES else key


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise PoseopsError(f"{what} CSV not found", file=path)
    try:
        return pd.read_csv(path, dtype={S.VIDEO: str, S.INDIVIDUAL: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PoseopsError(f"cannot read {what} CSV: {str(e).splitlines()[0]}", file=path) from e


def _numeric(df: pd.DataFrame, cols: list[str], path: Path) -> pd.DataFrame:
    for c in cols:
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna() & df[c].notna() & (df[c].astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PoseopsError(f"column {c!r} is not a number: {df[c].iloc[i]!r}", file=path,
                               row=i + 2)
        df[c] = num
    return df


def read_manual(path: str | Path) -> pd.DataFrame:
    """The manual scoring as one point per (video, [individual,] frame): video, [individual,]
    frame, x, y."""
    path = Path(path)
    df = _read_csv(path, "manual scoring")
    missing = [c for c in MANUAL_COLUMNS if c not in df.columns]
    if missing:
        raise PoseopsError(f"manual scoring CSV missing column(s) {missing}; needs video, frame,"
                           f" x, y [, bodypart], has {list(df.columns)}", file=path)
    df = _numeric(df, [S.FRAME, S.X, S.Y], path)
    bad = df[S.VIDEO].isna() | df[S.FRAME].isna() | (df[S.FRAME] % 1 != 0) | (df[S.FRAME] < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PoseopsError("manual scoring row needs a video and a whole frame number >= 0",
                           file=path, row=i + 2)
    df[S.VIDEO] = df[S.VIDEO].map(_video_key)
    unit = [S.VIDEO]
    if S.INDIVIDUAL in df.columns:  # multi-animal: one track per (video, individual)
        empty = df[S.INDIVIDUAL].isna() | (df[S.INDIVIDUAL].astype(str).str.strip() == "")
        if empty.any():
            raise PoseopsError("manual scoring row needs an individual (the column is there)",
                               file=path, row=int(np.flatnonzero(empty)[0]) + 2)
        df[S.INDIVIDUAL] = df[S.INDIVIDUAL].astype(str).str.strip()
        unit.append(S.INDIVIDUAL)
    keys = [*unit, S.FRAME] + ([S.BODYPART] if S.BODYPART in df.columns else [])
    dup = df.duplicated(keys)
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise PoseopsError(f"duplicate manual scoring row for {df.loc[dup, keys].iloc[0].tolist()}",
                           file=path, row=i + 2)
    df = df.dropna(subset=[S.X, S.Y]).astype({S.FRAME: int})
    return (df.groupby([*unit, S.FRAME], sort=True)[[S.X, S.Y]].mean().reset_index())


@dataclass
class VideoUnits:
    """One video's units and arena (None: no arena, zone endpoints NaN)."""

    fps: float
    px_per_cm: float
    arena: Arena | None


def read_arena(path: str | Path | None) -> pd.DataFrame:
    """The arena CSV (empty table when ``path`` is None), numbers checked."""
    cols = [S.VIDEO, "shape", *ARENA_NUMBERS]
    if path is None:
        return pd.DataFrame(columns=cols)
    path = Path(path)
    df = _read_csv(path, "arena")
    if S.VIDEO not in df.columns:
        raise PoseopsError(f"arena CSV needs a 'video' column, has {list(df.columns)}", file=path)
    for c in cols:
        if c not in df.columns:
            df[c] = np.nan
    df = _numeric(df, ARENA_NUMBERS, path)
    df[S.VIDEO] = df[S.VIDEO].map(lambda v: "" if pd.isna(v) else _video_key(v))
    dup = df[S.VIDEO].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise PoseopsError(f"arena CSV has two rows for video {df[S.VIDEO].iloc[i]!r}", file=path,
                           row=i + 2)
    return df.assign(_row=np.arange(len(df)) + 2, _file=str(path))[[*cols, "_row", "_file"]]


def video_units(arena: pd.DataFrame, video: str, fps: float | None,
                px_per_cm: float | None) -> VideoUnits:
    """Units and arena of ``video``: its arena row (else the row with an empty video), else the
    params ``fps`` / ``px_per_cm``; a missing fps or px_per_cm is an error naming the video."""
    rows = arena[arena[S.VIDEO] == video]
    if rows.empty:
        rows = arena[arena[S.VIDEO] == ""]
    row = rows.iloc[0] if len(rows) else None
    where = {"file": row["_file"], "row": int(row["_row"])} if row is not None else {}

    def pick(name: str, fallback: float | None) -> float:
        v = row[name] if row is not None else np.nan
        v = fallback if pd.isna(v) else v
        if v is None or not np.isfinite(v) or v <= 0:
            raise PoseopsError(f"no {name} for video {video!r}: give a {name} column in the "
                               f"arena CSV or behaviour.{name} in params.yaml", **where)
        return float(v)

    units = VideoUnits(pick("fps", fps), pick("px_per_cm", px_per_cm), None)
    if row is not None and isinstance(row["shape"], str) and row["shape"].strip():
        try:
            units.arena = Arena(row["shape"].strip(), **{k: float(row[k]) for k in
                                                         ("x0", "y0", "x1", "y1", "cx", "cy", "r")})
        except PoseopsError as e:
            raise PoseopsError(e.args[0] if e.args else str(e), **where) from e
    return units
