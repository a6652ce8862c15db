"""Synthetic learning curves (60 epochs, 1 % multiplicative noise) of each kind in the guide's
Table 1: healthy, overfitting, underfitting, plateau, volatile (columns of poseops' diagnose)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from poseops.evaluate import diagnose as D

EPOCHS = np.arange(1, 61)


def _curves(train: np.ndarray, val: np.ndarray, seed: int, noise: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        D.EPOCH: EPOCHS,
        D.TRAIN_LOSS: train * (1 + rng.normal(0, noise, len(train))),
        D.VAL_LOSS: val * (1 + rng.normal(0, noise, len(val))),
    })


def healthy(seed):
    t = 0.05 + 0.95 * np.exp(-EPOCHS / 25)
    return _curves(t, t * 1.15, seed)


def overfitting(seed):
    t = 0.02 + 0.98 * np.exp(-EPOCHS / 12)
    v = 0.2 + 0.8 * np.exp(-EPOCHS / 10) + 0.006 * np.maximum(EPOCHS - 25, 0)
    return _curves(t, v, seed)


def underfitting(seed):
    t = 1.0 - 0.004 * EPOCHS  # slow, still high: -24 % after 60 epochs
    return _curves(t, t * 1.05, seed)


def plateau(seed):
    t = 0.3 + 0.7 * np.exp(-EPOCHS / 4)
    return _curves(t, t * 1.1, seed, noise=0.002)


def volatile(seed):
    t = 0.05 + 0.95 * np.exp(-EPOCHS / 25)
    v = t * 1.1
    rng = np.random.default_rng(100 + seed)
    spikes = rng.choice(np.arange(5, 55), size=6, replace=False)
    v[spikes] *= 2.0
    return _curves(t, v, seed)
