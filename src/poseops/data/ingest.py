"""`poseops ingest`: a DeepLabCut (or Lightning Pose) project -> one tidy labels table (parquet).

Output: one row per (image, scorer, bodypart), columns ``poseops.core.schema.LABEL_COLUMNS`` then the
metadata columns (animal, session, condition, dose, camera, then any extra metadata columns).
Multi-animal DLC projects (``multianimalproject: true``): one row per (image, scorer, individual,
bodypart), with the column ``individual`` after ``scorer``; unique bodyparts sit under DLC's
individual ``single``; every config individual gets its rows in every image (NaN = not labeled).
Every scorer's ``labeled-data/<video>/CollectedData_<scorer>.h5`` (or ``.csv`` when no .h5) is
read, not only the config's scorer. Image width/height come from the image files' headers.

Lightning Pose layout (``--format lightning-pose``): no config.yaml; the labels are the CSV
file(s) at the project root with DLC's 3-row header; bodyparts come from the header. Images listed
as ``labeled-data/<name>.png`` (no video folder) get ``video`` = the project folder name; images
in ``labeled-data/<video>/`` keep that folder as video.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.loader import load_params, params_path, section
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_parquet
from poseops.dlc import files as dlcio

log = logging.getLogger(__name__)

FORMATS = ("dlc", "lightning-pose")
METADATA_REQUIRED = [S.VIDEO, *S.METADATA_COLUMNS]


@dataclass
class ProjectParams:
    """params.yaml ``project``: which project the pipeline runs on."""

    path: str = "data/raw/demo"  # the DLC project folder (config.yaml inside)
    format: str = "dlc"  # dlc | lightning-pose
    metadata: str | None = "data/metadata/videos.csv"  # per-video metadata CSV


@dataclass
class IngestParams:
    """params.yaml ``ingest``."""

    out: str = "data/interim/labels.parquet"


# --------------------------------------------------------------------------- discovery
def find_label_files(project: Path) -> list[Path]:
    """CollectedData_<scorer>.h5|csv under labeled-data/<video>/, one per (video, scorer):
    the .h5 when both exist (DLC trains from the .h5), else the .csv. Sorted by video, scorer."""
    chosen: dict[tuple[str, str], Path] = {}
    root = project / "labeled-data"
    if not root.is_dir():
        return []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.glob("CollectedData_*")):
            if f.suffix not in (".h5", ".csv"):
                continue
            key = (folder.name, f.stem)
            if key not in chosen or f.suffix == ".h5":
                chosen[key] = f
    return [chosen[k] for k in sorted(chosen)]


def find_lightning_pose_files(project: Path) -> list[Path]:
    """CSV files at a Lightning Pose project's root that carry DLC's 3-row header."""
    out = []
    for f in sorted(project.glob("*.csv")):
        try:
            with f.open() as fh:
                first = fh.readline()
        except (OSError, UnicodeDecodeError):
            continue
        if first.split(",", 1)[0].strip() == "scorer":
            out.append(f)
    return out


# --------------------------------------------------------------------------- reading
def read_labels_file(
    path: Path,
    project: Path,
    bodyparts: list[str] | None,
    default_video: str | None = None,
    cfg: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One CollectedData file -> tidy rows (image, video, frame, scorer, bodypart, x, y, labeled).

    Checks bodyparts against ``bodyparts`` (config order; parts missing from the file become
    unlabeled rows, as DLC's merge reindexes to the config) and that every image exists. With a
    multi-animal ``cfg`` the file is checked against its individuals and bodyparts (dlcio) and
    the rows gain ``individual``: one per (image, config individual, bodypart).
    """
    wide = dlcio.read_collected_data(path, cfg)
    ma = cfg is not None and dlcio.is_multianimal(cfg)
    file_bps = list(dict.fromkeys(wide.columns.get_level_values("bodyparts")))
    if bodyparts is not None and not ma:
        extra = [b for b in file_bps if b not in bodyparts]
        if extra:
            raise PoseopsError(
                f"bodypart not in config.yaml bodyparts {bodyparts}", file=path, bodypart=extra[0]
            )
        missing = [b for b in bodyparts if b not in file_bps]
        if missing:
            log.warning("%s: bodyparts %s not labeled in this file (left NaN)", path, missing)
    long = dlcio.wide_to_long(wide, default_video=default_video)
    if ma and long.shape[0]:
        assert cfg is not None
        long = _complete_keypoints(long, _config_keypoints(cfg))
    elif bodyparts is not None and long.shape[0]:
        long = _complete_bodyparts(long, bodyparts)
    scorer_in_name = path.stem.removeprefix("CollectedData_")
    if long.shape[0] and path.stem.startswith("CollectedData_") and scorer_in_name != long[S.SCORER].iloc[0]:
        log.warning(
            "%s: file name says scorer %r, header says %r (using the header)",
            path, scorer_in_name, long[S.SCORER].iloc[0],
        )
    for i, image in enumerate(dict.fromkeys(long[S.IMAGE])):
        if not (project / image).is_file():
            raise PoseopsError(
                f"image {image} listed in the labels is missing from the project",
                file=path,
                row=_row_label(path, i, wide.columns.nlevels),
            )
    return long


def _row_label(path: Path, i: int, header_lines: int = 3) -> Any:
    """Row number as a user finds it: the CSV line (after the 3 header lines, 4 for
    multi-animal files), else data row i+1."""
    return i + header_lines + 1 if path.suffix == ".csv" else i + 1


def _complete_bodyparts(long: pd.DataFrame, bodyparts: list[str]) -> pd.DataFrame:
    """Ensure one row per (image, config bodypart), in config order."""
    images = long.drop_duplicates(S.IMAGE)[[S.IMAGE, S.VIDEO, S.FRAME, S.SCORER]]
    grid = images.merge(pd.DataFrame({S.BODYPART: bodyparts}), how="cross")
    out = grid.merge(long[[S.IMAGE, S.BODYPART, S.X, S.Y]], on=[S.IMAGE, S.BODYPART], how="left")
    out[S.LABELED] = np.isfinite(out[S.X].to_numpy(float)) & np.isfinite(out[S.Y].to_numpy(float))
    return out


def _config_keypoints(cfg: dict[str, Any]) -> pd.DataFrame:
    """(individual, bodypart) of a multi-animal project, in DLC's column order: each individual
    with the multi-animal bodyparts, then ``single`` with the unique bodyparts."""
    pairs = [(i, b) for i in dlcio.config_individuals(cfg) for b in dlcio.config_multianimal_bodyparts(cfg)]
    pairs += [(S.SINGLE, b) for b in dlcio.config_unique_bodyparts(cfg)]
    return pd.DataFrame(pairs, columns=[S.INDIVIDUAL, S.BODYPART])


def _complete_keypoints(long: pd.DataFrame, keypoints: pd.DataFrame) -> pd.DataFrame:
    """Ensure one row per (image, config individual, bodypart), in config order."""
    images = long.drop_duplicates(S.IMAGE)[[S.IMAGE, S.VIDEO, S.FRAME, S.SCORER]]
    grid = images.merge(keypoints, how="cross")
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART]
    out = grid.merge(long[[*keys, S.X, S.Y]], on=keys, how="left")
    out[S.LABELED] = np.isfinite(out[S.X].to_numpy(float)) & np.isfinite(out[S.Y].to_numpy(float))
    return out


def read_metadata(path: Path | None) -> pd.DataFrame | None:
    """The per-video metadata CSV (video, animal, session, condition, dose, camera, extras...).

    Returns None (with a warning) when ``path`` is None or missing. Required columns missing,
    empty/duplicate video names -> PoseopsError naming the file (and row)."""
    if path is None or not Path(path).is_file():
        log.warning(
            "no metadata file%s: metadata columns (%s) left empty; validation will report it",
            f" at {path}" if path else "", ", ".join(S.METADATA_COLUMNS),
        )
        return None
    path = Path(path)
    try:
        meta = pd.read_csv(path, dtype={S.VIDEO: str, S.ANIMAL: str, S.SESSION: str, S.CAMERA: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PoseopsError(f"cannot read metadata CSV: {str(e).splitlines()[0]}", file=path) from e
    missing = [c for c in METADATA_REQUIRED if c not in meta.columns]
    if missing:
        raise PoseopsError(
            f"metadata CSV missing column(s) {missing}; required {METADATA_REQUIRED}, "
            f"has {list(meta.columns)}",
            file=path,
        )
    bad = meta[S.VIDEO].isna() | (meta[S.VIDEO].astype(str).str.strip() == "")
    if bad.any():
        raise PoseopsError("empty video name", file=path, row=int(np.flatnonzero(bad)[0]) + 2)
    meta[S.VIDEO] = meta[S.VIDEO].astype(str).str.strip()
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


def add_image_sizes(labels: pd.DataFrame, project: Path) -> pd.DataFrame:
    """Add width/height (int) per image, read from each file's header once."""
    sizes = {img: dlcio.image_size(project / img) for img in dict.fromkeys(labels[S.IMAGE])}
    out = labels.copy()
    out[S.WIDTH] = out[S.IMAGE].map(lambda i: sizes[i][0]).astype(np.int64)
    out[S.HEIGHT] = out[S.IMAGE].map(lambda i: sizes[i][1]).astype(np.int64)
    return out


# --------------------------------------------------------------------------- the stage
def ingest_project(
    project: Path, metadata: Path | None = None, fmt: str = "dlc"
) -> pd.DataFrame:
    """Read every scorer's labels of a DLC (or Lightning Pose) project into the tidy labels table.

    Columns: LABEL_COLUMNS (image, video, frame, scorer, bodypart, x, y, labeled, width, height),
    then animal, session, condition, dose, camera and any extra metadata columns.
    Rows sorted by image, scorer, bodypart (config order).
    """
    project = Path(project)
    if fmt not in FORMATS:
        raise PoseopsError(f"unknown project format {fmt!r}; expected one of {FORMATS}")
    if not project.is_dir():
        raise PoseopsError("project folder not found", file=project)
    cfg: dict[str, Any] | None = None
    if fmt == "dlc":
        cfg = dlcio.read_config(project)
        bodyparts: list[str] | None = dlcio.config_bodyparts(cfg)
        files = find_label_files(project)
        default_video = None
        where = project / "labeled-data"
    else:
        bodyparts = None
        files = find_lightning_pose_files(project)
        default_video = project.name
        where = project
    if not files:
        raise PoseopsError(
            "empty project: no CollectedData_<scorer>.h5/.csv label files found", file=where
        )
    parts = []
    for f in files:
        log.info("reading %s", f.relative_to(project))
        parts.append(read_labels_file(f, project, bodyparts, default_video, cfg))
    labels = pd.concat(parts, ignore_index=True)
    if labels.empty:
        raise PoseopsError("empty project: the label files hold no rows", file=where)
    if bodyparts is None:  # Lightning Pose: bodyparts from the header(s)
        bodyparts = list(dict.fromkeys(labels[S.BODYPART]))
    ma = S.INDIVIDUAL in labels.columns
    dup = labels.duplicated([S.IMAGE, S.SCORER, *([S.INDIVIDUAL] if ma else []), S.BODYPART])
    if dup.any():
        row = labels[dup].iloc[0]
        who = f" (individual {row[S.INDIVIDUAL]!r})" if ma else ""
        raise PoseopsError(
            f"image {row[S.IMAGE]} labeled twice by scorer {row[S.SCORER]!r}{who} "
            "(in two label files)",
            file=where,
            bodypart=row[S.BODYPART],
        )
    if cfg is not None:
        _warn_unlisted_videos(labels, cfg, project)
    labels = add_image_sizes(labels, project)
    labels[S.BODYPART] = pd.Categorical(labels[S.BODYPART], categories=bodyparts, ordered=True)
    order = [S.IMAGE, S.SCORER, S.BODYPART]
    columns = list(S.LABEL_COLUMNS)
    if ma:  # individuals in config order, then single; 'individual' right after 'scorer'
        assert cfg is not None
        inds = [*dlcio.config_individuals(cfg), S.SINGLE]
        labels[S.INDIVIDUAL] = pd.Categorical(labels[S.INDIVIDUAL], categories=inds, ordered=True)
        order.insert(2, S.INDIVIDUAL)
        columns.insert(columns.index(S.SCORER) + 1, S.INDIVIDUAL)
    labels = labels.sort_values(order, kind="stable")
    labels[S.BODYPART] = labels[S.BODYPART].astype(str)
    if ma:
        labels[S.INDIVIDUAL] = labels[S.INDIVIDUAL].astype(str)
    labels = labels[columns].reset_index(drop=True)
    out = join_metadata(labels, read_metadata(metadata))
    n_img = out[S.IMAGE].nunique()
    log.info(
        "ingested %d rows: %d images, %d videos, scorers %s, bodyparts %s",
        len(out), n_img, out[S.VIDEO].nunique(), sorted(out[S.SCORER].unique()), bodyparts,
    )
    return out


def _warn_unlisted_videos(labels: pd.DataFrame, cfg: dict[str, Any], project: Path) -> None:
    listed = set(dlcio.video_set_names(cfg))
    unlisted = sorted(set(labels[S.VIDEO]) - listed)
    if unlisted:
        log.warning(
            "%s: labeled-data folder(s) %s are not in config.yaml video_sets: ingested, but "
            "DeepLabCut itself would silently skip them when building a training set",
            project / "config.yaml", unlisted,
        )


def run(
    project: str | Path | None = None,
    metadata: str | Path | None = None,
    out: str | Path | None = None,
    fmt: str | None = None,
    params_file: str | Path | None = None,
) -> Path:
    """CLI entry: arguments override params.yaml ``project`` / ``ingest``; writes parquet atomically."""
    if params_path(params_file).exists():
        proj = section("project", ProjectParams, params_file)
        ing = section("ingest", IngestParams, params_file)
    elif project is None or out is None:
        load_params(params_file)  # raises a clear "params file not found"
        raise AssertionError("unreachable")
    else:
        proj, ing = ProjectParams(metadata=""), IngestParams()
    df = ingest_project(
        Path(project or proj.path),
        Path(metadata or proj.metadata) if (metadata or proj.metadata) else None,
        fmt or proj.format,
    )
    dest = Path(out or ing.out)
    write_parquet(df, dest)
    log.info("wrote %s", dest)
    return dest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="read a DLC project's labels (every scorer) into data/interim/labels.parquet",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--project", help="project folder (default: params project.path)")
    p.add_argument("--metadata", help="per-video metadata CSV (default: params project.metadata)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, help="default: params project.format")
    p.add_argument("--out", help="output parquet (default: params ingest.out)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(
        func=lambda a: run(a.project, a.metadata, a.out, a.fmt, a.params_file) and 0
    )
