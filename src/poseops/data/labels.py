"""Helpers over the tidy labels table shared by several stages (split, composition, validate).

The labels table has one row per (image, scorer, [individual,] bodypart) with ``x, y`` (NaN = not
labeled) and per-image columns (video, frame, width, height, metadata); see
:mod:`poseops.core.schema`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)


def read_table(path: str | Path) -> pd.DataFrame:
    """A parquet or CSV table; a missing file names the stage that writes it."""
    path = Path(path)
    if not path.is_file():
        raise PoseopsError("table not found (run the stage that writes it first)", file=path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def keypoint_missing(labels: pd.DataFrame) -> np.ndarray:
    """True where a keypoint is not labeled (x or y NaN / not finite); shape (rows,)."""
    x = pd.to_numeric(labels[S.X], errors="coerce").to_numpy(float)
    y = pd.to_numeric(labels[S.Y], errors="coerce").to_numpy(float)
    return ~(np.isfinite(x) & np.isfinite(y))


def bodypart_stats(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per bodypart: ``bodypart, n, n_missing, nan_share`` over every row (all scorers)."""
    S.require_columns(labels, [S.BODYPART, S.X, S.Y], "labels")
    df = pd.DataFrame({S.BODYPART: labels[S.BODYPART].to_numpy(), "miss": keypoint_missing(labels)})
    out = df.groupby(S.BODYPART, sort=True)["miss"].agg(n="size", n_missing="sum").reset_index()
    out["n_missing"] = out["n_missing"].astype(int)
    out["nan_share"] = out["n_missing"] / out["n"]
    return out


def present_individuals(labels: pd.DataFrame, per_scorer: bool = True) -> pd.DataFrame:
    """Multi-animal: the distinct (image, [scorer,] individual) with at least one labeled
    keypoint, as text (``scorer`` only when ``per_scorer`` and the table has the column)."""
    keys = [S.IMAGE, S.SCORER, S.INDIVIDUAL] if per_scorer and S.SCORER in labels.columns else [
        S.IMAGE, S.INDIVIDUAL]
    lab = labels.loc[~keypoint_missing(labels), keys].astype(str)
    return lab.drop_duplicates()


def animals_per_frame(labels: pd.DataFrame, per_scorer: bool = True) -> pd.DataFrame:
    """Multi-animal: labeled animals per image, ``image, [scorer,] [video,] n_animals``, one row
    per (image, scorer) (``per_scorer``, when the table has a scorer column) or per image (any
    scorer), sorted. An animal counts when it has at least one labeled keypoint; ``single``
    (unique bodyparts) is not an animal (0 when only unique bodyparts are labeled)."""
    S.require_columns(labels, [S.IMAGE, S.INDIVIDUAL, S.X, S.Y], "labels")
    keys = [S.IMAGE, S.SCORER] if per_scorer and S.SCORER in labels.columns else [S.IMAGE]
    frames = labels[keys + ([S.VIDEO] if S.VIDEO in labels.columns else [])].drop_duplicates(keys)
    present = present_individuals(labels, per_scorer)
    animals = present[present[S.INDIVIDUAL] != S.SINGLE]
    n = animals.groupby(keys).size().rename("n_animals").reset_index()
    out = frames.astype({k: str for k in keys}).merge(n, on=keys, how="left")
    out["n_animals"] = out["n_animals"].fillna(0).astype(int)
    return out.sort_values(keys, kind="stable").reset_index(drop=True)
