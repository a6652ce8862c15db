"""Time to generate the default demo project (target < 20 s) and to ingest it, plus how ingest
grows with the number of labeled frames (target: linear; PNG sizes read from headers only).

Run: .venv/bin/python benchmarks/demo_ingest.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from poseops.data.ingest import ingest_project
from poseops.demo.project import DemoParams, generate_demo


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t_gen, _ = timed(generate_demo, root / "d", DemoParams(), metadata=root / "m.csv")
        print(f"generate default demo: {t_gen:.2f} s  (target 20 s, ratio {t_gen / 20:.2f})")
        rows = []
        for k, labeled in enumerate((10, 40, 80)):
            p = DemoParams(labeled_per_video=labeled, frames_per_video=90)
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
