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

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.data import FORMATS
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.metadata import join_metadata, read_metadata
from poseops.dlc import files as dlcio

log = logging.getLogger(__name__)

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
    return dlcio.lightning_pose_files(project)


def lightning_pose_bodyparts(project: Path) -> list[str]:
    """A Lightning Pose folder's bodyparts in the order of its CSV header(s)."""
    return dlcio.lightning_pose_bodyparts(project)


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


def project_metadata(path: str | Path | None) -> pd.DataFrame | None:
    """The per-video metadata CSV (:func:`poseops.data.metadata.read_metadata`), or None (with a
    warning) when ``path`` is None or missing."""
    if path is None or not Path(path).is_file():
        log.warning(
            "no metadata file%s: metadata columns (%s) left empty; validation will report it",
            f" at {path}" if path else "", ", ".join(S.METADATA_COLUMNS),
        )
        return None
    return read_metadata(path)


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
    out = join_metadata(labels, project_metadata(metadata))
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
