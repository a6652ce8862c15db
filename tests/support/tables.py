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
