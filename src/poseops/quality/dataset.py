"""`poseops validate`: Great Expectations checks on the labels table before anything trains on it.

The suite (``expectations/dataset.json``) runs over the labels table and tables derived from it
(``dataset_tables``): ``labels`` (as read), ``frames`` (one row per image: metadata, size, whether
the file exists and decodes), ``bodypart_stats`` (NaN share per bodypart) and ``condition_stats``
(frames per condition and ratio to the smallest condition). A multi-animal table (column
``individual``) adds ``individual_labels`` (the labels again: keys per individual),
``individual_bodypart_stats`` (NaN share per individual and bodypart, over the frames where that
individual is labeled), ``animals_per_frame`` (labeled animals per image and scorer) and
``individual_stats`` (frames labeled per config individual); the suite's per-bodypart NaN share
and (image, scorer, bodypart) uniqueness are then checked per individual instead
(``meta.skip_if_table``). Thresholds come from params.yaml ``validate``; ``config.bodyparts``
(and ``config.individuals``, ``config.n_individuals``) are filled from the DLC project's
config.yaml. Extra tables written by other stages (e.g. ``labeler_qc`` from consensus) are added
with ``validate.tables``.
Outputs (written by ``poseops.commands.validate``): results JSON (``validate.out``) and a Data Docs
site (``validate.docs``). The label-table helpers shared with other stages (``keypoint_missing``,
``bodypart_stats``, ``animals_per_frame``) live in :mod:`poseops.data.labels`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.data.labels import (
    animals_per_frame,
    bodypart_stats,
    keypoint_missing,
    present_individuals,
)

log = logging.getLogger(__name__)

FRAME_METADATA = [S.ANIMAL, S.SESSION, S.CONDITION]  # every frame must have these


# ---------------------------------------------------------------------------- pure tables
def frames_table(labels: pd.DataFrame, images: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per labeled image: ``image, video, width, height, animal, session, condition``
    (+ any other metadata column; metadata columns absent from ``labels`` are added empty),
    joined with ``images`` (``image, exists, decodes``) when given."""
    S.require_columns(labels, [S.IMAGE, S.VIDEO], "labels")
    meta = S.metadata_columns(labels)  # excludes the consensus per-keypoint columns
    keep = [c for c in [S.IMAGE, S.VIDEO, S.WIDTH, S.HEIGHT, *meta] if c in labels.columns]
    frames = labels[keep].drop_duplicates(S.IMAGE).reset_index(drop=True)
    for col in FRAME_METADATA:
        if col not in frames.columns:
            frames[col] = pd.Series([None] * len(frames), dtype=object)
    if images is not None:
        frames = frames.merge(images, on=S.IMAGE, how="left")
        for col in ("exists", "decodes"):
            frames[col] = frames[col].astype("boolean").fillna(False).astype(bool)
    return frames


def individual_bodypart_stats(labels: pd.DataFrame) -> pd.DataFrame:
    """Multi-animal: one row per (individual, bodypart) with ``n, n_missing, nan_share`` over the
    rows of frames (image, scorer) in which that individual has at least one labeled keypoint:
    an animal absent from a frame is not a missing label (``animals_per_frame`` counts those)."""
    S.require_columns(labels, [S.INDIVIDUAL, S.BODYPART, S.X, S.Y], "labels")
    present = present_individuals(labels)
    keys = list(present.columns)
    df = labels[[*keys, S.BODYPART]].astype(str).assign(miss=keypoint_missing(labels))
    df = df.merge(present, on=keys, how="inner")
    out = (
        df.groupby([S.INDIVIDUAL, S.BODYPART], sort=True)["miss"]
        .agg(n="size", n_missing="sum")
        .reset_index()
    )
    out["n_missing"] = out["n_missing"].astype(int)
    out["nan_share"] = out["n_missing"] / out["n"]
    return out


def animal_frames(labels: pd.DataFrame) -> pd.DataFrame:
    """``animals_per_frame`` (per image and scorer) without the frames where no animal but a
    unique bodypart is labeled: DLC labels those (a floor marker, an LED), they are labeled
    frames, not frames that miss their animals."""
    apf = animals_per_frame(labels)
    present = present_individuals(labels)
    single = present.loc[present[S.INDIVIDUAL] == S.SINGLE].drop(columns=S.INDIVIDUAL)
    keys = [k for k in (S.IMAGE, S.SCORER) if k in apf.columns and k in single.columns]
    unique_only = apf[keys].merge(single.assign(_u=True), on=keys, how="left")["_u"]
    keep = ~(unique_only.notna().to_numpy() & (apf["n_animals"] == 0).to_numpy())
    return apf[keep].reset_index(drop=True)


def individual_stats(labels: pd.DataFrame, individuals: list[str] | None = None) -> pd.DataFrame:
    """Multi-animal: one row per individual (``individuals`` = the config's, in order, then any
    other animal found in the labels; ``single`` left out): ``individual, n_frames`` (images where
    it has a labeled keypoint, any scorer) and ``n_labeled`` (labeled keypoints)."""
    S.require_columns(labels, [S.IMAGE, S.INDIVIDUAL, S.X, S.Y], "labels")
    found = [str(i) for i in dict.fromkeys(labels[S.INDIVIDUAL]) if str(i) != S.SINGLE]
    names = list(dict.fromkeys([*(individuals or []), *found]))
    lab = labels.loc[~keypoint_missing(labels), [S.IMAGE, S.INDIVIDUAL]].astype(str)
    n_frames = lab.drop_duplicates().groupby(S.INDIVIDUAL).size()
    n_labeled = lab.groupby(S.INDIVIDUAL).size()
    return pd.DataFrame(
        {
            S.INDIVIDUAL: names,
            "n_frames": [int(n_frames.get(i, 0)) for i in names],
            "n_labeled": [int(n_labeled.get(i, 0)) for i in names],
        }
    )


def condition_stats(frames: pd.DataFrame) -> pd.DataFrame:
    """One row per condition with labeled frames: ``condition, n_frames, ratio_to_smallest``
    (frames with no condition are left out: the metadata expectations report them)."""
    counts = frames[S.CONDITION].dropna().astype(str).value_counts().sort_index()
    out = counts.rename_axis(S.CONDITION).reset_index(name="n_frames")
    smallest = out["n_frames"].min() if len(out) else np.nan
    out["ratio_to_smallest"] = out["n_frames"] / smallest
    return out


def image_status(images: list[str], root: str | Path) -> pd.DataFrame:
    """``image, exists, decodes`` for each image path (relative to ``root``): the file is there
    and Pillow can decode all of its pixels (catches truncated or corrupt files)."""
    from PIL import Image

    root = Path(root)
    rows = []
    for i, image in enumerate(images):
        path = root / image
        exists = path.is_file()
        decodes = False
        if exists:
            try:
                with Image.open(path) as im:
                    im.load()
                decodes = True
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
                log.debug("%s does not decode: %s", path, e)
        rows.append({S.IMAGE: image, "exists": exists, "decodes": decodes})
        if (i + 1) % 500 == 0:
            log.info("checked %d/%d images", i + 1, len(images))
    return pd.DataFrame(rows, columns=[S.IMAGE, "exists", "decodes"])


def dataset_tables(
    labels: pd.DataFrame,
    image_root: str | Path | None = None,
    individuals: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The tables ``expectations/dataset.json`` runs on. With ``image_root`` (the project folder),
    ``frames`` gets ``exists``/``decodes`` per image. A multi-animal table adds the per-individual
    tables; ``individuals`` (the config's) makes ``individual_stats`` list an individual that is
    never labeled."""
    images = None
    if image_root is not None:
        images = image_status(list(dict.fromkeys(labels[S.IMAGE])), image_root)
    frames = frames_table(labels, images)
    tables = {
        "labels": labels,
        "frames": frames,
        "bodypart_stats": bodypart_stats(labels),
        "condition_stats": condition_stats(frames),
    }
    if S.INDIVIDUAL in labels.columns:
        tables["individual_labels"] = labels
        tables["individual_bodypart_stats"] = individual_bodypart_stats(labels)
        tables["animals_per_frame"] = animal_frames(labels)
        tables["individual_stats"] = individual_stats(labels, individuals)
    return tables


# ---------------------------------------------------------------------------- edges
def config_bodyparts(project: str | Path, labels: pd.DataFrame) -> list[str]:
    """Bodyparts of the project's config.yaml (multi-animal: multianimalbodyparts then
    uniquebodyparts); a project without one (Lightning Pose) uses the bodyparts found in the
    labels."""
    return config_params(project, labels)["bodyparts"]


def config_params(project: str | Path, labels: pd.DataFrame) -> dict[str, Any]:
    """The suite's ``config`` parameters: ``bodyparts``; for a multi-animal project also
    ``individuals`` (config individuals) and ``n_individuals``. Without a config.yaml (Lightning
    Pose) they come from the labels."""
    from poseops.dlc import files as dlcio

    project = Path(project)
    if (project / "config.yaml").is_file():
        cfg = dlcio.read_config(project)
        out: dict[str, Any] = {"bodyparts": dlcio.config_bodyparts(cfg)}
        if dlcio.is_multianimal(cfg):
            out["individuals"] = dlcio.config_individuals(cfg)
    else:
        log.warning("%s has no config.yaml: bodyparts taken from the labels", project)
        out = {"bodyparts": list(dict.fromkeys(labels[S.BODYPART]))}
        if S.INDIVIDUAL in labels.columns:
            found = dict.fromkeys(str(i) for i in labels[S.INDIVIDUAL])
            out["individuals"] = [i for i in found if i != S.SINGLE]
    if "individuals" in out:
        out["n_individuals"] = len(out["individuals"])
    return out
