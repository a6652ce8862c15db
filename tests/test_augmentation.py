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
                    (dict(covering_size=[0.5, 1.0]), "covering_size"),
                    (dict(covering_holes=0), "covering_holes"), (dict(gamma=1.0), "gamma"),
                    (dict(brightness=-0.1), "brightness")):
        with pytest.raises(PoseopsError, match=key):
            TrainParams(**kw).validate()


def test_sweep_augmentation_searches_the_new_keys() -> None:
    import optuna

    from poseops.sweep.space import as_train_params, check_augmentation_keys, suggest
    from poseops.train.project import config_updates

    space = {"covering": [0.0, 0.5], "grayscale": [False, True], "elastic": [False, True],
             "brightness": [0.0, 0.2], "gamma": [0.0, 0.3], "covering_fill": ["black", "floor"]}
    p = SweepParams(augmentation=space, epochs=1)
    check_augmentation_keys(p, {f.name for f in dataclasses.fields(TrainParams)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"lr": 1e-3, "batch_size": 4, "covering": 0.5, "grayscale": True,
                         "elastic": True, "brightness": 0.2, "gamma": 0.3, "covering_fill": "floor"})
    point = as_train_params(suggest(study.ask(), p), p)
    params = TrainParams(**{**dataclasses.asdict(tiny()), **point})
    up = config_updates(params, (160, 120))
    assert up["data.train.covering"]["p"] == 0.5 and up["data.train.covering"]["fill"] == "floor"
    assert up["data.train.grayscale"] is True and up["data.train.elastic_transform"] is True
    assert params.brightness == 0.2 and params.gamma == 0.3


BEDDING = dict(covering=1.0, covering_holes=3, covering_size=[0.05, 0.08], covering_fill="floor",
               covering_place="keypoints", covering_labels="keep")


def test_bedding_style_covering_reaches_dlc_config(small_demo_root: Path, tmp_path: Path) -> None:
    """fill / on / labels are written into DLC's covering mapping (only where they differ from
    DLC's covering) and DLC's strict loader accepts the file."""
    cfg, loader = _written(small_demo_root, tmp_path, **BEDDING)
    assert cfg["data"]["train"]["covering"] == {
        "p": 1.0, "max_holes": 3, "min_size": 0.05, "max_size": 0.08,
        "fill": "floor", "place": "keypoints", "labels": "keep"}
    assert loader.model_cfg["data"]["train"]["covering"]["fill"] == "floor"
    dlc_style, _ = _written(small_demo_root, tmp_path / "b", covering=0.5)
    assert set(dlc_style["data"]["train"]["covering"]) == {"p", "max_holes", "min_size", "max_size"}


def _sample(dataset, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (h, w, 3), keypoints (individuals, bodyparts, 3)) of one DLC training item."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    item = dataset[index]
    image = np.asarray(item["image"]).transpose(1, 2, 0)
    return _pixels(image), np.asarray(item["annotations"]["keypoints"])


def test_bedding_covering_on_dlc_training_items(small_demo_root: Path, tmp_path: Path) -> None:
    """On real demo training items from DLC's own dataset: every changed pixel is the image's
    median colour, the changed pixels form 3 rectangles (fewer blobs where they overlap) of 5-8 %
    of the image side, each with a
    labeled keypoint under it, and no keypoint is dropped or moved (``labels: keep``)."""
    from scipy import ndimage

    from poseops.train.augment import train_transform

    params = tiny(**BEDDING, **QUIET)
    _, loader = _written(small_demo_root, tmp_path, **dataclasses.asdict(params))
    tf = train_transform(loader.model_cfg["data"]["train"], params)
    covered = loader.create_dataset(transform=tf, mode="train")
    import albumentations as A

    # the same pipeline without the covering step (it draws last, so the crop is the same)
    no_cover = A.Compose([t for t in tf.transforms if type(t).__name__ != "Covering"],
                         keypoint_params=tf.processors["keypoints"].params,
                         bbox_params=tf.processors["bboxes"].params)
    assert len(no_cover.transforms) == len(tf.transforms) - 1
    plain = loader.create_dataset(transform=no_cover, mode="train")
    for index in range(6):
        px, kps = _sample(covered, index, seed=index)
        px0, kps0 = _sample(plain, index, seed=index)
        np.testing.assert_array_equal(kps, kps0)  # kept labeled, not moved
        changed = (px != px0).any(axis=2)
        assert changed.any()
        floor = np.median(px0.reshape(-1, 3), axis=0)
        assert (np.abs(px[changed] - np.rint(floor)) <= 1).all()  # floor colour, not black
        labeled = kps0.reshape(-1, 3)[kps0.reshape(-1, 3)[:, 2] > 0, :2]
        h, w = changed.shape
        spans = []
        for sl in ndimage.find_objects(ndimage.label(changed)[0]):
            spans.append((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
            inside = ((labeled[:, 0] >= sl[1].start - 1) & (labeled[:, 0] < sl[1].stop + 1)
                      & (labeled[:, 1] >= sl[0].start - 1) & (labeled[:, 1] < sl[0].stop + 1))
            assert inside.any(), f"patch {sl} on no labeled keypoint"
        assert 1 <= len(spans) <= 3  # overlapping patches merge into one blob
        assert changed.sum() <= 3 * int(0.08 * h) * int(0.08 * w)  # at most 3 of the largest
        assert all(r >= int(0.05 * h) - 1 and c >= int(0.05 * w) - 1 for r, c in spans)


def test_covering_labels_drop_and_fill_black_follow_dlc(small_demo_root: Path, tmp_path: Path) -> None:
    """``labels: drop`` on keypoints: the keypoint under the patch leaves the loss (NaN, as DLC's
    CoarseDropout makes it); ``fill: black`` paints 0."""
    import random

    from poseops.train.augment import train_transform

    params = tiny(covering=1.0, covering_holes=1, covering_size=[0.1, 0.1], covering_place="keypoints",
                  **QUIET)
    _, loader = _written(small_demo_root, tmp_path, **dataclasses.asdict(params))
    tf = train_transform(loader.model_cfg["data"]["train"], params)
    image = np.full((120, 160, 3), 128, np.uint8)
    random.seed(3)
    kps = [(40.0, 30.0), (np.nan, np.nan)]  # the NaN one is never a patch centre
    for _ in range(10):
        out = tf(image=image, keypoints=kps, class_labels=["a", "b"], bboxes=[], bbox_labels=[])
        dark = (_pixels(out["image"]) == 0).all(axis=2)
        rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
        assert len(rows) == 12 and len(cols) == 16
        assert rows[0] <= 30 <= rows[-1] and cols[0] <= 40 <= cols[-1]
        assert np.isnan(out["keypoints"][0][:2]).all() and np.isnan(out["keypoints"][1][:2]).all()


def test_covering_choices_are_checked() -> None:
    for key, bad in (("covering_fill", "grey"), ("covering_place", "animal"), ("covering_labels", "x")):
        with pytest.raises(PoseopsError, match=key):
            TrainParams(**{key: bad}).validate()
