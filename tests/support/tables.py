"""Synthetic single-animal tables: consensus labels, predictions and split of 12 videos in 3
conditions (test and high-dose frames predicted worse), for metrics, evaluate, report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from poseops.core import schema as S

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
CONDITIONS = ["vehicle", "low_dose", "high_dose"]


def synthetic_tables(seed: int = 0, n_images: int = 60):
    """Consensus labels, predictions and split for ``n_images`` frames of 12 videos."""
    rng = np.random.default_rng(seed)
    rows, preds, split_rows = [], [], []
    for i in range(n_images):
        v = i % 12
        video = f"v{v}"
        image = f"labeled-data/{video}/img{i:04d}.png"
        cond = CONDITIONS[v % 3]
        animal = f"m{v % 4}"
        split = S.TEST if v in (3, 4, 5, 10) else S.VAL if v in (2, 8) else S.TRAIN
        split_rows.append({S.IMAGE: image, S.VIDEO: video, S.GROUP: video, S.SPLIT: split})
        for j, bp in enumerate(BODYPARTS):
            x, y = 20.0 + 10 * j + rng.normal(0, 3), 50.0 + rng.normal(0, 3)
            if rng.random() < 0.08 and bp not in ("snout", "leftear"):
                x = y = np.nan
            rows.append(
                {S.IMAGE: image, S.VIDEO: video, S.BODYPART: bp, S.X: x, S.Y: y,
                 S.ANIMAL: animal, S.SESSION: f"s{i % 2}", S.CONDITION: cond}
            )
            scale = 1.0 + 0.5 * (cond == "high_dose") + (split == S.TEST)
            px = (x if np.isfinite(x) else 30.0) + rng.normal(0, scale)
            py = (y if np.isfinite(y) else 50.0) + rng.normal(0, scale)
            preds.append({S.IMAGE: image, S.BODYPART: bp, S.X: px, S.Y: py,
                          S.LIKELIHOOD: rng.uniform(0.2, 1.0)})
    return pd.DataFrame(rows), pd.DataFrame(preds), pd.DataFrame(split_rows)


def compare_errors(seed: int = 0, shift: dict[str, float] | None = None, n_images: int = 40,
                   n_videos: int = 8, train_row: bool = True) -> pd.DataFrame:
    """A synthetic errors table for compare: n_images test images x 3 bodyparts from n_videos
    videos (even number: the condition is constant within a video), 2 conditions; ``shift``
    adds px per bodypart; ``train_row`` appends one train-split row (compare must ignore it)."""
    shift = shift or {}
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        for bp in ("snout", "leftear", "tailbase"):
            rows.append({
                "image": f"labeled-data/v{i % n_videos}/img{i:04d}.png", "split": "test",
                "bodypart": bp, "video": f"v{i % n_videos}",
                "condition": "vehicle" if i % 2 else "drug",
                "error_px": abs(rng.normal(4, 1.5)) + shift.get(bp, 0.0),
                "likelihood": rng.uniform(0.2, 1.0), "labeled": True,
            })
    if train_row:
        rows.append({**rows[0], "image": "labeled-data/v0/img9999.png", "split": "train"})
    return pd.DataFrame(rows)
