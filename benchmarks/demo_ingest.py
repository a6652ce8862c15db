"""Time to generate the default demo project (target < 20 s) and to ingest it, plus how ingest
grows with the number of labeled frames (target: linear; PNG sizes read from headers only).

Run: .venv/bin/python benchmarks/demo_ingest.py [--smoke]

``--smoke``: the small demo and 2..6 labeled frames per video (checks the script runs; the 20 s
target is for the default demo).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from poseops.config.demo import DemoParams
from poseops.data.ingest import ingest_project
from poseops.demo.project import generate_demo


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the small demo, 2..6 labeled per video")
    args = ap.parse_args(argv)
    demo = DemoParams.small if args.smoke else DemoParams
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t_gen, _ = timed(generate_demo, root / "d", demo(), metadata=root / "m.csv")
        if args.smoke:
            print(f"generate small demo: {t_gen:.2f} s  (smoke run: the 20 s target is for the "
                  "default demo)")
        else:
            print(f"generate default demo: {t_gen:.2f} s  (target 20 s, ratio {t_gen / 20:.2f})")
        rows = []
        for k, labeled in enumerate((2, 4, 6) if args.smoke else (10, 40, 80)):
            p = demo(labeled_per_video=labeled, frames_per_video=30 if args.smoke else 90)
            generate_demo(root / f"s{k}", p, metadata=root / f"m{k}.csv")
            t_ing, df = timed(ingest_project, root / f"s{k}", root / f"m{k}.csv")
            n_img = df["image"].nunique()
            rows.append((n_img, t_ing))
            print(f"ingest {n_img:5d} images / {len(df):6d} rows: {t_ing:.2f} s "
                  f"({1000 * t_ing / n_img:.2f} ms per image)")
        (n0, t0), (n1, t1) = rows[0], rows[-1]
        print(f"ingest growth: {n1 / n0:.1f}x images -> {t1 / t0:.1f}x time")


if __name__ == "__main__":
    main()
