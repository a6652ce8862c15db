"""Overhead of poseops' MLflow tracking on DeepLabCut training (target: <= 2 %).

Trains the same DLC configuration (same working project, params, seed, offline init) twice per
repeat, interleaved: (A) DeepLabCut's own `apis.training.train` with no logger, and (B) poseops'
`train_model` (per-epoch MLflow logging through the DLC logger hook, resumable state every
train.resume_interval_s, the outbox sending from a background thread). Prints the median wall time of the DLC training call in each and their ratio
(the in-loop overhead), plus B's fixed end-of-run cost (artifacts, pyfunc model, registry).

    .venv/bin/python benchmarks/tracking_overhead.py [--epochs 5] [--repeats 2] [--small]
    .venv/bin/python benchmarks/tracking_overhead.py --smoke   # = --small --epochs 1 --repeats 1
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def _tables(root: Path, small: bool):
    from poseops.config.data import SplitParams
    from poseops.config.demo import DemoParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo

    p = DemoParams.small() if small else DemoParams()
    project = generate_demo(root / "demo", p, metadata=root / "videos.csv")
    labels = build_consensus(ingest_project(project, root / "videos.csv"))
    sp = SplitParams(stratify_by=None) if small else SplitParams()
    return labels, make_split(labels, sp), project


def plain_dlc(params, labels, split, project: Path, workdir: Path) -> tuple[float, float]:
    """DLC's training call alone on a prepared project; returns its (wall, CPU) time in s."""
    from deeplabcut.pose_estimation_pytorch import utils as dlc_utils
    from deeplabcut.pose_estimation_pytorch.apis.training import train
    from deeplabcut.pose_estimation_pytorch.task import Task

    from poseops.train.project import dlc_loader as _loader
    from poseops.train.project import prepare_dlc_project
    from poseops.train.session import offline_init as _offline_init

    ds = prepare_dlc_project(labels, split, project, workdir, params)
    loader = _loader(ds.config_path)
    init = _offline_init(loader, ds.pytorch_config_path.parent / "init.pt", params.seed)
    dlc_utils.fix_seeds(params.seed)
    t, c = time.perf_counter(), time.process_time()
    train(loader=loader, run_config=loader.model_cfg, task=Task(loader.model_cfg.get("method", "bu")),
          device=params.device, logger_config=None, snapshot_path=str(init),
          max_snapshots_to_keep=params.max_snapshots)
    return time.perf_counter() - t, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="the small demo (36 frames)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true",
                    help="checks the script runs: --small --epochs 1 --repeats 1")
    args = ap.parse_args()
    if args.smoke:
        args.small, args.epochs, args.repeats = True, 1, 1
    logging.basicConfig(level=logging.WARNING)

    from poseops.config.train import TrainParams
    from poseops.train.trainer import train_model

    params = TrainParams(epochs=args.epochs, pretrained=False, device=args.device, save_epochs=5,
                         crop_width=160, crop_height=120, registered_model="bench",
                         experiment="bench")
    plain, tracked, fixed, cpu_a, cpu_b = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="poseops-bench-") as tmp:
        root = Path(tmp)
        labels, split, project = _tables(root, args.small)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        for i in range(args.repeats):
            a, ca = plain_dlc(params, labels, split, project, root / f"a{i}")
            res = train_model(params, labels, split, project, root / f"b{i}", tracking_uri=uri)
            plain.append(a)
            cpu_a.append(ca)
            tracked.append(res.timings["train_s"])
            cpu_b.append(res.timings["train_cpu_s"])
            fixed.append(res.timings["finalize_s"])
            print(f"repeat {i + 1}: DLC alone {a:.2f} s (CPU {ca:.2f} s), with poseops tracking "
                  f"{res.timings['train_s']:.2f} s (CPU {res.timings['train_cpu_s']:.2f} s)"
                  f" + end of run {res.timings['finalize_s']:.2f} s", flush=True)
    med = statistics.median
    a, b, f = med(plain), med(tracked), med(fixed)
    print(f"epochs {args.epochs}, repeats {args.repeats}, frames {labels['image'].nunique()}")
    print(f"median DLC training alone:         {a:.2f} s wall, {med(cpu_a):.2f} s CPU")
    print(f"median DLC training with tracking: {b:.2f} s wall, {med(cpu_b):.2f} s CPU")
    print(f"in-loop overhead ratio (wall): {b / a:.4f} ({100 * (b / a - 1):+.2f} %, target <= +2 %)")
    print(f"in-loop overhead ratio (CPU time, all threads; robust to other load): "
          f"{med(cpu_b) / med(cpu_a):.4f} ({100 * (med(cpu_b) / med(cpu_a) - 1):+.2f} %)")
    print(f"end-of-run cost (artifacts, pyfunc model, registry): {f:.2f} s, once per training")
    print(f"end-to-end ratio incl. end of run (wall): {(b + f) / a:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
