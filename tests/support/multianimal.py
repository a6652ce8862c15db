"""Synthetic multi-animal tables: labeled individuals ({image: {individual: (n_bp, 2)}}) and
predicted assemblies ({image: (assemblies, n_bp, 3)}) as consensus / evaluate.predict write them,
on 200 x 150 images with bodyparts nose, body, tail (+ unique bodypart corner)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate.matching import MA_PREDICTION_COLUMNS

W, H = 200, 150
BPS = ["nose", "body", "tail"]


def labels_table(gt: dict[str, dict[str, np.ndarray]], unique: dict[str, np.ndarray] | None = None,
                 ubps: tuple[str, ...] = ("corner",)) -> pd.DataFrame:
    """Consensus-like table from {image: {individual: (n_bp, 2)}} (+ unique {image: (n_u, 2)})."""
    rows = []
    for image, animals in gt.items():
        for ind, xy in animals.items():
            for bp, (x, y) in zip(BPS, xy, strict=True):
                rows.append((image, ind, bp, x, y))
        if unique is not None:
            for bp, (x, y) in zip(ubps, unique[image], strict=True):
                rows.append((image, S.SINGLE, bp, x, y))
    df = pd.DataFrame(rows, columns=[S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y])
    df[S.VIDEO] = df[S.IMAGE].str.split("/").str[1]
    df[S.SCORER] = S.CONSENSUS_SCORER
    df[S.WIDTH], df[S.HEIGHT] = W, H
    df[S.LABELED] = df[S.X].notna() & df[S.Y].notna()
    return df


def preds_table(pred: dict[str, np.ndarray], unique: dict[str, np.ndarray] | None = None,
                ubps: tuple[str, ...] = ("corner",)) -> pd.DataFrame:
    """Predictions table from {image: (assemblies, n_bp, 3)} as evaluate.predict writes it."""
    rows = []
    for image, arr in pred.items():
        for a, asm in enumerate(arr):
            for bp, (x, y, s) in zip(BPS, asm, strict=True):
                rows.append((image, a, bp, x, y, s))
        if unique is not None:
            for bp, (x, y, s) in zip(ubps, unique[image], strict=True):
                rows.append((image, -1, bp, x, y, s))
    return pd.DataFrame(rows, columns=MA_PREDICTION_COLUMNS)


def split_table(images, split=S.TEST) -> pd.DataFrame:
    return pd.DataFrame({S.IMAGE: list(images), S.SPLIT: split})


def animal(cx: float, cy: float) -> np.ndarray:
    return np.array([[cx + 15, cy - 6], [cx, cy], [cx - 15, cy + 8]], float)


def with_scores(xy: np.ndarray, s: float = 0.9) -> np.ndarray:
    return np.concatenate([xy, np.full((len(xy), 1), s)], axis=1)


def random_project(seed: int):
    """Images with 0-3 labeled animals (some keypoints unlabeled, one outside the image),
    2-4 predicted assemblies (missing ones with score -1), a unique bodypart."""
    rng = np.random.default_rng(seed)
    names = ["a1", "a2", "a3"]
    gt, pred, ug, up = {}, {}, {}, {}
    for k in range(12):
        image = f"labeled-data/v{k % 2}/img{k:03d}.png"
        present = [n for n in names if rng.random() < 0.8]
        animals = {}
        for n in names:
            xy = animal(rng.uniform(20, 180), rng.uniform(10, 140)) if n in present \
                else np.full((3, 2), np.nan)
            xy[rng.random(3) < 0.15] = np.nan
            animals[n] = xy
        if k == 3:
            animals["a1"][0] = [-5.0, 20.0]  # outside the image: DLC ignores it
        gt[image] = animals
        n_pred = rng.integers(2, 5)
        arr = np.empty((n_pred, 3, 3))
        for a in range(n_pred):
            src = animals[names[a % 3]]
            base = np.where(np.isnan(src), rng.uniform(0, 150, src.shape), src)
            arr[a, :, :2] = base + rng.normal(0, 4, (3, 2))
            arr[a, :, 2] = rng.uniform(0, 1, 3)
        arr[rng.random((n_pred, 3)) < 0.1, 2] = -1.0
        pred[image] = arr
        ug[image] = np.array([[8.0, 8.0]]) if k != 5 else np.array([[np.nan, np.nan]])
        up[image] = np.array([[8.0 + rng.normal(0, 2), 8.0, rng.uniform(0, 1)]])
    return (labels_table(gt, ug), preds_table(pred, up), names)


def dlc_arrays(labels: pd.DataFrame, preds: pd.DataFrame, images, names: list[str]):
    """DeepLabCut's inputs to ``deeplabcut.core.metrics.compute_metrics``, built directly from
    the tables above (independently of poseops' ``pose_arrays``): per image, ground truth
    (individuals, bodyparts, 3) with visibility 2 inside the image and 0 (and x = y = 0) when
    unlabeled or outside, predictions (assemblies, bodyparts, 3), and the unique bodypart's
    (1, 1, 3) ground truth and prediction. Returns (gt, pred, gt_unique, pred_unique)."""
    gt, pr, gu, pu = {}, {}, {}, {}
    for image in images:
        lab = labels[labels[S.IMAGE] == image]
        g = np.zeros((len(names), len(BPS), 3))
        for i, n in enumerate(names):
            for b, bp in enumerate(BPS):
                r = lab[(lab[S.INDIVIDUAL] == n) & (lab[S.BODYPART] == bp)].iloc[0]
                ok = np.isfinite(r[S.X]) and 0 < r[S.X] < W and 0 < r[S.Y] < H
                g[i, b] = [r[S.X], r[S.Y], 2] if ok else [0, 0, 0]
        gt[image] = g
        p = preds[(preds[S.IMAGE] == image) & (preds[S.ASSEMBLY] >= 0)]
        pr[image] = p[[S.X, S.Y, S.LIKELIHOOD]].to_numpy().reshape(-1, len(BPS), 3)
        u = lab[lab[S.INDIVIDUAL] == S.SINGLE].iloc[0]
        gu[image] = np.array([[[u[S.X], u[S.Y], 2 if np.isfinite(u[S.X]) else 0]]])
        gu[image][np.isnan(gu[image])] = 0
        q = preds[(preds[S.IMAGE] == image) & (preds[S.ASSEMBLY] < 0)]
        pu[image] = q[[S.X, S.Y, S.LIKELIHOOD]].to_numpy().reshape(1, 1, 3)
    return gt, pr, gu, pu
