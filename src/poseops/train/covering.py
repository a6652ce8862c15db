"""Occlusion patches that look like what hides keypoints in an arena (issue 24).

DeepLabCut's covering (albumentations CoarseDropout) cuts *black* holes *anywhere* in the image
and drops the keypoints under them from the loss. In an open field what hides a paw is bedding or
clutter: floor-coloured, on the animal, and the labeler still marks the paw. :class:`Covering`
is DLC's class with three choices (``params.yaml`` ``train.covering_fill``,
``covering_place``, ``covering_labels``; see :mod:`poseops.train.augment`):

- ``fill``: ``black`` (DLC) or ``floor``: the image's per-channel median, which in a top-view arena
  is the floor (most pixels are floor);
- ``place``: ``image`` (uniform position, DLC) or ``keypoints``: each patch centred within a quarter of
  its side of a labeled keypoint drawn at random (so the keypoint lies under it);
- ``labels``: ``drop`` (a keypoint under a patch becomes NaN, as DLC does) or ``keep``.

Images are (height, width, channels) uint8 at this point of DLC's pipeline (after the affine and
crop, before noise and normalisation); keypoints are albumentations' internal tuples
``(x, y, angle, scale, ...)`` in pixels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from deeplabcut.pose_estimation_pytorch.data.transforms import CoarseDropout

Hole = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)


def _labeled_points(keypoints: Sequence[Sequence[float]] | None, h: int, w: int) -> list[tuple[float, float]]:
    """(x, y) of the keypoints that are labeled and inside the (h, w) image."""
    out = []
    for kp in keypoints or []:
        x, y = float(kp[0]), float(kp[1])
        if np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h:
            out.append((x, y))
    return out


def _place(side: int, limit: int, centre: float | None) -> int:
    """The first pixel of a patch ``side`` long inside [0, limit): uniform, or centred on
    ``centre`` give or take a quarter of the side."""
    if centre is None:
        return random.randint(0, limit - side)
    start = int(round(centre + random.uniform(-side / 4, side / 4) - side / 2))
    return min(max(start, 0), limit - side)


class Covering(CoarseDropout):
    """DLC's CoarseDropout (``max_holes`` patches per image, each side a ``size`` = (min, max)
    fraction of the image's side; albumentations' cutout paints them; with ``labels: drop`` DLC's
    own rule makes a keypoint under a patch NaN; bounding boxes untouched) with the patches
    filled and placed as ``fill`` / ``place`` say, and ``labels: keep`` leaving keypoints as they
    are."""

    def __init__(self, max_holes: int = 10, size: tuple[float, float] = (0.01, 0.05),
                 fill: str = "black", place: str = "image", labels: str = "drop",
                 always_apply: bool = False, p: float = 0.5) -> None:
        lo, hi = float(size[0]), float(size[1])
        super().__init__(max_holes=int(max_holes), max_height=hi, max_width=hi, min_height=lo,
                         min_width=lo, always_apply=always_apply, p=p)
        self.size, self.fill, self.place, self.labels = (lo, hi), fill, place, labels

    @property
    def targets_as_params(self) -> list[str]:
        return ["image", "keypoints"]

    def get_params_dependent_on_targets(self, params: dict[str, Any]) -> dict[str, Any]:
        img = params["image"]
        h, w = img.shape[:2]
        points = _labeled_points(params.get("keypoints"), h, w) if self.place == "keypoints" else []
        holes: list[Hole] = []
        for _ in range(self.max_holes):  # as DLC's CoarseDropout: exactly max_holes patches
            hh = min(h, max(1, int(h * random.uniform(*self.size))))
            ww = min(w, max(1, int(w * random.uniform(*self.size))))
            cx, cy = random.choice(points) if points else (None, None)
            x1, y1 = _place(ww, w, cx), _place(hh, h, cy)
            holes.append((x1, y1, x1 + ww, y1 + hh))
        fill: Any = 0
        if self.fill == "floor":  # per-channel median, shape (channels,) or () for one channel
            median = np.median(img.reshape(h * w, -1), axis=0).astype(img.dtype)
            fill = median if img.ndim == 3 else median[0]
        # not "fill_value": albumentations' update_params overwrites that with self.fill_value
        return {"holes": holes, "patch_fill": fill}

    def apply(self, img: np.ndarray, holes: Sequence[Hole] = (), patch_fill: Any = 0,
              **params: Any) -> np.ndarray:
        from albumentations.augmentations.dropout.functional import cutout

        return cutout(img, holes, patch_fill)

    def apply_to_keypoints(self, keypoints: Sequence[Any], holes: Sequence[Hole] = (),
                           **params: Any) -> list[Any]:
        if self.labels == "keep":
            return list(keypoints)
        return super().apply_to_keypoints(keypoints, holes=holes, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_holes", "size", "fill", "place", "labels")
