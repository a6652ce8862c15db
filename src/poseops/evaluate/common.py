"""Building blocks shared by the single- and multi-animal error tables (no I/O, no DLC).

- the prediction / reference-length column names of the errors table;
- ``Pcutoff``: one likelihood cutoff, or one per bodypart, and :func:`pcutoff_array`;
- :func:`reference_lengths`: per-image distance between two reference bodyparts (for the
  normalised error and PCK as a fraction of it);
- :func:`check_images`: the image checks predictions must pass before they are scored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

PRED_X, PRED_Y = "pred_x", "pred_y"
REF_LENGTH = "ref_length_px"

Pcutoff = float | Mapping[str, float]


def reference_lengths(labels: pd.DataFrame, bodyparts: Sequence[str]) -> pd.Series:
    """Per-image distance (px) between the two labeled reference bodyparts (e.g. snout, tailbase).

    ``labels``: one row per (image, bodypart) with ``x, y``. Returns a Series indexed by image,
    NaN where either reference bodypart is unlabeled in that image.
    """
    if len(bodyparts) != 2:
        raise PoseopsError(f"reference bodyparts must be a pair, got {list(bodyparts)}")
    known = set(labels[S.BODYPART].unique())
    for bp in bodyparts:
        if bp not in known:
            raise PoseopsError(
                f"reference bodypart not in the labels (known: {sorted(known)})", bodypart=bp
            )
    a, b = (
        labels.loc[labels[S.BODYPART] == bp].drop_duplicates(S.IMAGE).set_index(S.IMAGE)[[S.X, S.Y]]
        for bp in bodyparts
    )
    a, b = a.align(b, join="outer")
    return pd.Series(
        np.hypot(a[S.X] - b[S.X], a[S.Y] - b[S.Y]), index=a.index, name=REF_LENGTH
    )


def pcutoff_array(bodyparts: pd.Series | np.ndarray, pcutoff: Pcutoff) -> np.ndarray:
    """One cutoff per row: the scalar, or the bodypart's entry of a mapping (all must be given)."""
    if isinstance(pcutoff, Mapping):
        bps = pd.Series(np.asarray(bodyparts))
        missing = sorted(set(bps.unique()) - set(pcutoff))
        if missing:
            raise PoseopsError(f"pcutoff: no value for bodypart(s) {missing}", bodypart=missing[0])
        return bps.map(dict(pcutoff)).to_numpy(float)
    return np.full(len(bodyparts), float(pcutoff))


def check_images(labels: pd.DataFrame, predictions: pd.DataFrame, split: pd.DataFrame) -> None:
    """The image checks of the errors tables (stray, unlabeled, unpredicted images): every
    predicted image must be in the split and in the labels, and every labeled image of the split
    must have predictions (PoseopsError naming the first culprit otherwise)."""
    split_images = pd.Index(split[S.IMAGE].unique())
    pred_images = pd.Index(predictions[S.IMAGE].unique())
    stray = pred_images.difference(split_images)
    if len(stray):
        raise PoseopsError(
            f"predictions for {len(stray)} image(s) not in the split, e.g. {stray[0]!r}",
            row=stray[0],
        )
    unlabeled = pred_images.difference(pd.Index(labels[S.IMAGE].unique()))
    if len(unlabeled):
        raise PoseopsError(
            f"predictions for {len(unlabeled)} image(s) without labels, e.g. {unlabeled[0]!r}",
            row=unlabeled[0],
        )
    has_label = labels[S.X].notna() & labels[S.Y].notna()
    labeled_images = pd.Index(labels.loc[has_label, S.IMAGE].unique())
    missing = labeled_images.intersection(split_images).difference(pred_images)
    if len(missing):
        raise PoseopsError(
            f"no predictions for {len(missing)} labeled image(s) of the split, e.g. {missing[0]!r}",
            row=missing[0],
        )

