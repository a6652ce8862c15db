"""Time of the consensus stage (consensus table + every labeler QC table) on labels tables of N
rows (image x scorer x bodypart), and how it grows with N (target: linear; 1e6 rows < 30 s on
2 cores), plus the speed-up of the vectorised aggregation over a per-group pandas loop.

Run: .venv/bin/python benchmarks/consensus_scaling.py [--smoke]

``--smoke``: 2e3..1e4 rows (checks the script runs; the targets are for 1e6 rows).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.data import consensus as C

BODYPARTS = ["snout", "leftear", "rightear", "shoulder", "spine1", "spine2", "spine3", "tailbase"]
LABELERS = ["alice", "bob", "carol", "dave"]


def synthetic_labels(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Alice labels every frame, the others 30% of them; 1.5 px noise, 3% gross errors."""
    rng = np.random.default_rng(seed)
    per_frame = len(BODYPARTS) * (1 + 0.3 * (len(LABELERS) - 1))
    n_frames = max(1, int(n_rows / per_frame))
    parts = []
    truth = rng.uniform(0, 640, (n_frames, len(BODYPARTS), 2))
    for i, lab in enumerate(LABELERS):
        frames = np.arange(n_frames) if i == 0 else np.flatnonzero(rng.random(n_frames) < 0.3)
        xy = truth[frames] + rng.normal(0, 1.5, (len(frames), len(BODYPARTS), 2))
        gross = rng.random(xy.shape[:2]) < 0.03
        xy[gross] += rng.normal(0, 40, (gross.sum(), 2))
        f = np.repeat(frames, len(BODYPARTS))
        parts.append(
            pd.DataFrame(
                {
                    S.IMAGE: [f"labeled-data/v{k // 200}/img{k:06d}.png" for k in f],
                    S.VIDEO: [f"v{k // 200}" for k in f],
                    S.FRAME: f,
                    S.SCORER: lab,
                    S.BODYPART: np.tile(BODYPARTS, len(frames)),
                    S.X: xy[..., 0].ravel(),
                    S.Y: xy[..., 1].ravel(),
                    S.LABELED: True,
                    S.WIDTH: 640,
                    S.HEIGHT: 480,
                    S.SESSION: [f"s{k // 2000}" for k in f],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def naive_consensus(labels: pd.DataFrame, p: ConsensusParams) -> pd.DataFrame:
    """The same rule, one (image, bodypart) group at a time (the reference for the speed-up)."""
    rows = []
    for (image, bp), g in labels.groupby([S.IMAGE, S.BODYPART]):
        x, y = g[S.X].to_numpy(), g[S.Y].to_numpy()
        mx, my = np.median(x), np.median(y)
        d = np.hypot(x - mx, y - my)
        keep = np.ones(len(x), bool)
        if len(x) >= 3:
            keep = d <= p.mad_k * max(np.median(d), p.min_scale_px)
        rows.append((image, bp, np.median(x[keep]), np.median(y[keep])))
    return pd.DataFrame(rows, columns=[S.IMAGE, S.BODYPART, S.X, S.Y])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="2e3..1e4 rows")
    args = ap.parse_args(argv)
    p = ConsensusParams()
    base = None
    for n in (2_000, 5_000, 10_000) if args.smoke else (50_000, 200_000, 1_000_000):
        labels = synthetic_labels(n)
        t0 = time.perf_counter()
        cons = C.build_consensus(labels, p)
        t1 = time.perf_counter()
        res = C.analyse(labels, p)
        t2 = time.perf_counter()
        per_row = (t2 - t1) / len(labels)
        base = base or per_row
        print(
            f"{len(labels):>9,} rows: consensus {t1 - t0:6.2f} s, consensus + QC {t2 - t1:6.2f} s"
            f" ({per_row / base:4.2f}x the smallest size's time per row);"
            f" removed {res.summary['removed_share']:.3f}"
        )
    small = synthetic_labels(2_000 if args.smoke else 20_000)
    t0 = time.perf_counter()
    ref = naive_consensus(small, p)
    t1 = time.perf_counter()
    cons = C.build_consensus(small, p)
    t2 = time.perf_counter()
    got = cons.set_index([S.IMAGE, S.BODYPART]).loc[ref.set_index([S.IMAGE, S.BODYPART]).index]
    same = np.allclose(got[[S.X, S.Y]].to_numpy(), ref[[S.X, S.Y]].to_numpy())
    print(
        f"vectorised vs per-group loop on {len(small):,} rows: {(t1 - t0) / (t2 - t1):.0f}x "
        f"faster, identical results: {same}"
    )


if __name__ == "__main__":
    main()
