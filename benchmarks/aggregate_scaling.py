"""Time to build every evaluation table (stratified, headline, PCK curve, condition bias) from an
errors table of N keypoint rows, and how it grows with N (target: 1e6 rows in < 2 s, linear).

Run: .venv/bin/python benchmarks/aggregate_scaling.py [--smoke]

``--smoke``: 1e3..1e4 rows, one repeat (checks the script runs; the 2 s target is for 1e6 rows).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate import metrics as M
from poseops.evaluate.common import REF_LENGTH

BODYPARTS = ["snout", "leftear", "rightear", "shoulder", "spine1", "spine2", "spine3", "tailbase"]
CONDITIONS = ["vehicle", "low_dose", "high_dose"]


def synthetic_errors(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """A realistic errors table: 8 bodyparts per frame, 200 frames per video, 5% unlabeled."""
    rng = np.random.default_rng(seed)
    n_frames = n_rows // len(BODYPARTS)
    frame = np.repeat(np.arange(n_frames), len(BODYPARTS))
    video = frame // 200
    splits = np.array([S.TRAIN, S.TRAIN, S.TRAIN, S.VAL, S.TEST])
    err = rng.gamma(2.0, 1.5, len(frame))
    err[rng.random(len(frame)) < 0.05] = np.nan
    return pd.DataFrame(
        {
            S.IMAGE: pd.Categorical(frame.astype(str)),
            S.SPLIT: pd.Categorical(splits[video % 5]),
            S.BODYPART: pd.Categorical(np.tile(BODYPARTS, n_frames)),
            S.VIDEO: pd.Categorical(video.astype(str)),
            S.ANIMAL: pd.Categorical((video % 12).astype(str)),
            S.SESSION: pd.Categorical((video % 3).astype(str)),
            S.CONDITION: pd.Categorical(np.array(CONDITIONS)[video % 3]),
            S.ERROR_PX: err,
            S.LIKELIHOOD: rng.uniform(0, 1, len(frame)),
            REF_LENGTH: np.repeat(rng.normal(60, 5, n_frames), len(BODYPARTS)),
        }
    )


def build_all(errors: pd.DataFrame) -> None:
    spec = M.MetricSpec(pcutoff=0.6, pck_px=(2.0, 5.0, 10.0), pck_fractions=(0.05, 0.1, 0.2))
    table = M.stratified_table(errors, spec)
    M.headline_metrics(table)
    M.pck_curve(errors, np.linspace(0, 20, 41))
    M.condition_bias(errors)


def best_time(n_rows: int, repeats: int = 3) -> float:
    errors = synthetic_errors(n_rows)
    build_all(errors)  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        build_all(errors)
        times.append(time.perf_counter() - t0)
    return min(times)


def _e(n: int) -> str:
    """1_000_000 -> '1e6', 300_000 -> '3e5'."""
    return f"{n:.0e}".replace("e+0", "e")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1e3..1e4 rows, one repeat")
    args = ap.parse_args(argv)
    small, mid, big = (1_000, 3_000, 10_000) if args.smoke else (100_000, 300_000, 1_000_000)
    times = {n: best_time(n, repeats=1 if args.smoke else 3) for n in (small, mid, big)}
    for n, t in times.items():
        print(f"{n:>9,d} rows: {t:6.3f} s  ({t / n * 1e6:.2f} us/row)")
    r = times[big] / times[small]
    print(f"time ratio {_e(big)}/{_e(small)} = {r:.1f} (rows ratio 10; linear ~10)")
    print(f"time ratio {_e(big)}/{_e(mid)} = {times[big] / times[mid]:.2f} (rows ratio 3.33)")
    if args.smoke:
        print(f"{_e(big)} rows: {times[big]:.3f} s (smoke run: the 2 s target is for 1e6 rows)")
        return
    verdict = "OK" if times[big] < 2.0 else "SLOWER THAN TARGET"
    print(f"1e6 rows: {times[big]:.3f} s vs target 2 s: {verdict}")


if __name__ == "__main__":
    main()
