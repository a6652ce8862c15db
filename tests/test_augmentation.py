"""Issue 24 item 1: occlusion (covering), grayscale, elastic and lighting augmentation as named
``train:`` settings. Each reaches DeepLabCut's pytorch_config.yaml (read back from disk and
through DLC's own loader), the transform DLC's training loop gets masks real patches (pixels
counted), lighting changes pixels and never keypoints, and ``sweep.augmentation`` searches them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.train import small_tables, tiny

from poseops.config.sweep import SweepParams
from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError

# only the augmentation under test changes a flat image (no affine, noise or blur)
QUIET = dict(affine_p=0.0, gaussian_noise=0.0, motion_blur=False)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # DLC's Normalize


def _written(small_demo_root: Path, tmp_path: Path, **kw) -> tuple[dict, object]:
    """pytorch_config.yaml of a working project built with these params: (the file's YAML,
    DLC's loader of it)."""
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader

    from poseops.train.project import prepare_dlc_project

    labels, split, project = small_tables(small_demo_root)
    ds = prepare_dlc_project(labels, split, project, tmp_path / "w", tiny(**kw))
    cfg = yaml.safe_load(ds.pytorch_config_path.read_text())
    loader = DLCLoader(config=str(ds.config_path), shuffle=ds.shuffle, trainset_index=ds.trainset_index)
    return cfg, loader


def _pixels(image: np.ndarray) -> np.ndarray:
    """DLC's normalised float image back to 0-255 pixel values."""
    return np.rint((image * STD + MEAN) * 255)


def test_each_setting_reaches_dlc_pytorch_config(small_demo_root: Path, tmp_path: Path) -> None:
    from deeplabcut.pose_estimation_pytorch.data.transforms import (
        CoarseDropout,
        ElasticTransform,
        Grayscale,
    )

    cfg, loader = _written(small_demo_root, tmp_path, covering=0.7, covering_holes=4,
                           covering_size=[0.1, 0.2], grayscale=True, elastic=True)
    train = cfg["data"]["train"]
    assert train["covering"] == {"p": 0.7, "max_holes": 4, "min_size": 0.1, "max_size": 0.2}
    assert train["grayscale"] is True and train["elastic_transform"] is True
    # DLC's strict config schema accepts the file, and its own builder makes the three transforms
    from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms

    kinds = [type(t) for t in build_transforms(loader.model_cfg["data"]["train"]).transforms]
    assert {CoarseDropout, Grayscale, ElasticTransform} <= set(kinds)
    # defaults: none of the keys is written (pytorch_config.yaml stays as DLC makes it)
    default, _ = _written(small_demo_root, tmp_path / "d")
    assert not {"covering", "grayscale", "elastic_transform"} & {
        k for k, v in default["data"]["train"].items() if v not in (None, False)}


def test_covering_masks_patches_of_the_set_size_and_probability(
    small_demo_root: Path, tmp_path: Path
) -> None:
    """The transform DLC's training loop gets (built from the written config) blacks out one
    patch of 10-20 % of the image side per covered image, on about ``covering`` of the images."""
    import random

    from poseops.train.augment import train_transform

    params = tiny(covering=0.5, covering_holes=1, covering_size=[0.1, 0.2], **QUIET)
    _, loader = _written(small_demo_root, tmp_path, **dataclasses.asdict(params))
    tf = train_transform(loader.model_cfg["data"]["train"], params)
    assert tf is not None
    h, w = 120, 160
    flat = np.full((h, w, 3), 128, np.uint8)
    random.seed(0)  # albumentations 1.4 draws from python's and numpy's global generators
    np.random.seed(0)
    covered = 0
    for _ in range(40):
        out = tf(image=flat, keypoints=[(80.0, 60.0)], class_labels=["nose"], bboxes=[],
                 bbox_labels=[])
        px = _pixels(out["image"])
        dark = (px == 0).all(axis=2)
        assert ((px == 128).all(axis=2) | dark).all()  # nothing else touched
        if not dark.any():
            continue
        covered += 1
        rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
        # one filled rectangle whose sides are 10-20 % of the image's
        assert dark[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert int(0.1 * h) <= len(rows) <= int(np.ceil(0.2 * h)) + 1
        assert int(0.1 * w) <= len(cols) <= int(np.ceil(0.2 * w)) + 1
    assert 8 <= covered <= 32  # p = 0.5 of 40 (binomial: outside [8, 32] has p < 1e-4)


def test_lighting_changes_pixels_and_never_keypoints(small_demo_root: Path, tmp_path: Path) -> None:
    import random

    from poseops.train.augment import train_transform

    params = tiny(brightness=0.3, contrast=0.3, gamma=0.4, lighting_p=1.0, **QUIET)
    _, loader = _written(small_demo_root, tmp_path, **dataclasses.asdict(params))
    tf = train_transform(loader.model_cfg["data"]["train"], params)
    names = [type(t).__name__ for t in tf.transforms]
    assert names.index("RandomBrightnessContrast") < names.index("RandomGamma") < names.index("Normalize")
    rng = np.random.default_rng(1)
    image = rng.integers(30, 220, size=(120, 160, 3), dtype=np.uint8)
    kps = [(12.5, 7.25), (80.0, 60.0), (159.0, 119.0)]
    random.seed(1)
    np.random.seed(1)
    plain = image.astype(float)  # QUIET: without lighting only the normalisation acts
    changed = 0
    for _ in range(10):
        out = tf(image=image, keypoints=kps, class_labels=["a", "b", "c"], bboxes=[], bbox_labels=[])
        assert [tuple(k[:2]) for k in out["keypoints"]] == kps
        changed += int(np.abs(_pixels(out["image"]) - plain).mean() > 2)
    assert changed >= 8
    # no lighting and no covering: DLC builds its own transform, as before
    assert train_transform(loader.model_cfg["data"]["train"], tiny(**QUIET)) is None


def test_bad_settings_are_one_line_errors() -> None:
    for kw, key in ((dict(covering=1.5), "covering"), (dict(covering_size=[0.3, 0.1]), "covering_size"),
                    (dict(covering_holes=0), "covering_holes"), (dict(gamma=1.0), "gamma"),
                    (dict(brightness=-0.1), "brightness")):
        with pytest.raises(PoseopsError, match=key):
            TrainParams(**kw).validate()


def test_sweep_augmentation_searches_the_new_keys() -> None:
    import optuna

    from poseops.sweep.space import as_train_params, check_augmentation_keys, suggest
    from poseops.train.project import config_updates

    space = {"covering": [0.0, 0.5], "grayscale": [False, True], "elastic": [False, True],
             "brightness": [0.0, 0.2], "gamma": [0.0, 0.3]}
    p = SweepParams(augmentation=space, epochs=1)
    check_augmentation_keys(p, {f.name for f in dataclasses.fields(TrainParams)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"lr": 1e-3, "batch_size": 4, "covering": 0.5, "grayscale": True,
                         "elastic": True, "brightness": 0.2, "gamma": 0.3})
    point = as_train_params(suggest(study.ask(), p), p)
    params = TrainParams(**{**dataclasses.asdict(tiny()), **point})
    up = config_updates(params, (160, 120))
    assert up["data.train.covering"]["p"] == 0.5
    assert up["data.train.grayscale"] is True and up["data.train.elastic_transform"] is True
    assert params.brightness == 0.2 and params.gamma == 0.3
