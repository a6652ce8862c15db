"""The training transform: DeepLabCut's own (``build_transforms`` of pytorch_config.yaml
``data.train``), extended where DLC 3 has no setting (issue 24).

- ``covering`` (occlusion): DLC's builder turns any truthy ``data.train.covering`` into its
  CoarseDropout with fixed values (10 patches of 1-5 % of the image side, p 0.5). poseops writes a
  mapping ``{p, max_holes, min_size, max_size}`` there (DLC's schema accepts a dict, and DLC's
  own tools still build their fixed covering from it); :func:`build_train_transform` builds DLC's
  CoarseDropout class with those values, at DLC's place in the pipeline (keypoints under a patch
  become NaN, as in DLC). DLC's covering is black holes anywhere that drop the keypoints under
  them; ``covering_fill: floor``, ``covering_place: keypoints`` and ``covering_labels: keep`` (written
  as ``fill``, ``place``, ``labels`` in the same mapping) make it look like bedding instead: patches of
  the image's median colour, each centred on a labeled keypoint, the keypoint kept labeled
  (:class:`Covering`).
- lighting (brightness / contrast / gamma): not in DLC 3's builder and not in its strict config
  schema (an unknown ``data.train`` key is refused), so it comes from the train params:
  albumentations ``RandomBrightnessContrast`` and ``RandomGamma`` (image-only transforms:
  keypoints untouched) inserted before the noise / normalisation steps.

With neither in use :func:`train_transform` returns None and DLC builds its transform itself,
exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poseops.config.train import TrainParams

# DLC's covering: black patches anywhere, keypoints under them dropped (the mapping's defaults)
_DLC_STYLE = {"fill": "black", "place": "image", "labels": "drop"}


def covering_config(params: TrainParams) -> dict[str, Any] | None:
    """pytorch_config ``data.train.covering`` for these params (None: off, key not written);
    ``fill`` / ``place`` / ``labels`` are written only where they differ from DLC's covering."""
    if not params.covering > 0:
        return None
    lo, hi = params.covering_size
    out: dict[str, Any] = {"p": float(params.covering), "max_holes": int(params.covering_holes),
                           "min_size": float(lo), "max_size": float(hi)}
    style = {"fill": params.covering_fill, "place": params.covering_place, "labels": params.covering_labels}
    out.update({k: v for k, v in style.items() if v != _DLC_STYLE[k]})
    return out


def lighting_config(params: TrainParams) -> dict[str, float] | None:
    """The lighting transform's settings (None: no lighting augmentation)."""
    if not (params.brightness > 0 or params.contrast > 0 or params.gamma > 0):
        return None
    return {"brightness": float(params.brightness), "contrast": float(params.contrast),
            "gamma": float(params.gamma), "p": float(params.lighting_p)}


def lighting_transforms(lighting: Mapping[str, float]) -> list[Any]:
    """albumentations RandomBrightnessContrast (limits +/- brightness, contrast) and RandomGamma
    (gamma in [1 - g, 1 + g], albumentations' percent units), each with probability ``p``."""
    import albumentations as A

    out: list[Any] = []
    b, c, g, p = (float(lighting.get(k, 0.0)) for k in ("brightness", "contrast", "gamma", "p"))
    if b > 0 or c > 0:
        out.append(A.RandomBrightnessContrast(brightness_limit=b, contrast_limit=c, p=p))
    if g > 0:
        out.append(A.RandomGamma(gamma_limit=(100 * (1 - g), 100 * (1 + g)), p=p))
    return out


def _covering_transform(cfg: Mapping[str, Any]) -> Any:
    """DLC's CoarseDropout with the mapping's p, max_holes and sizes; poseops' :class:`Covering`
    (the same class, filled / placed / labelled differently) when fill, place or labels differ."""
    from deeplabcut.pose_estimation_pytorch.data.transforms import CoarseDropout

    holes, p = int(cfg.get("max_holes", 10)), float(cfg.get("p", 0.5))
    lo, hi = float(cfg.get("min_size", 0.01)), float(cfg.get("max_size", 0.05))
    style = {k: str(cfg.get(k, v)) for k, v in _DLC_STYLE.items()}
    if style != _DLC_STYLE:
        from poseops.train.covering import Covering

        return Covering(max_holes=holes, size=(lo, hi), p=p, **style)
    return CoarseDropout(max_holes=holes, max_height=hi, min_height=lo, max_width=hi,
                         min_width=lo, p=p)


_BEFORE = ("GaussNoise", "PadIfNeeded", "Normalize", "ScaleToUnitRange")


def build_train_transform(data_train: Mapping[str, Any],
                          lighting: Mapping[str, float] | None = None) -> Any:
    """DLC's ``build_transforms(data_train)`` with a mapping ``covering`` honoured (its p,
    max_holes, min_size, max_size) and the ``lighting`` transforms inserted before the first
    noise / padding / normalisation step (after the crop); same keypoint and bbox processing."""
    import albumentations as A
    from deeplabcut.pose_estimation_pytorch.data.transforms import CoarseDropout, build_transforms

    base = build_transforms(data_train)
    steps = list(base.transforms)
    cover = data_train.get("covering")
    if isinstance(cover, Mapping):
        steps = [_covering_transform(cover) if isinstance(t, CoarseDropout) else t for t in steps]
    extra = lighting_transforms(lighting) if lighting else []
    if extra:
        crop = max((i for i, t in enumerate(steps) if type(t).__name__ == "KeypointAwareCrop"),
                   default=-1)
        at = next((i for i, t in enumerate(steps) if i > crop and type(t).__name__ in _BEFORE),
                  len(steps))
        steps[at:at] = extra
    return A.Compose(steps, keypoint_params=base.processors["keypoints"].params,
                     bbox_params=base.processors["bboxes"].params)


def train_transform(data_train: Mapping[str, Any], params: TrainParams) -> Any | None:
    """The transform DLC's training loop is given (``apis.training.train(transform=...)``), or
    None when DLC's own builder gives the same (no covering mapping, no lighting)."""
    lighting = lighting_config(params)
    if lighting is None and not isinstance(data_train.get("covering"), Mapping):
        return None
    return build_train_transform(data_train, lighting)
