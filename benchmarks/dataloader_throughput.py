"""Does data loading keep the GPU busy? DeepLabCut's train dataloader vs the model's step.

For the demo project (160x120) and a synthetic 640x480 project (the demo generator at that size),
at batch 8 and 16, with poseops' settings (``train.dataloader_workers``, default ``auto``; pinned
memory on CUDA; crop = image size), this builds DeepLabCut's own training dataset, DataLoader,
model and training runner (``apis.training.train``'s pieces, random init) and times a few
batches:

- ``data img/s``: the DataLoader alone (decode + augmentation + collate), i.e. the most images
  per second the input pipeline can feed;
- ``train img/s``: the real loop (next batch, then ``runner.step``: forward, loss, backward,
  optimizer step; CUDA synchronised before the clock is read);
- ``wait ms`` / ``step ms`` per batch, and the busy share = step / (step + wait): the share of
  the loop's time the device computes. The claim "data loading keeps the GPU >= 90 % busy"
  holds when busy >= 90 % on a GPU (on a CPU the "device" and the loader share the cores, so
  the number only shows the pipeline works).

    .venv/bin/python benchmarks/dataloader_throughput.py                  # CPU, 2 batches a row
    .venv/bin/python benchmarks/dataloader_throughput.py --device cuda --batches 50 --workers auto
    .venv/bin/python benchmarks/dataloader_throughput.py --smoke    # one 160x120 row, 1 batch
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def make_project(root: Path, width: int, height: int, small: bool):
    """Demo project at width x height: consensus labels, split, DLC project."""
    from poseops.config.data import SplitParams
    from poseops.config.demo import DemoParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo

    p = DemoParams.small(width=width, height=height) if small else DemoParams(width=width,
                                                                             height=height)
    project = generate_demo(root / f"demo-{width}x{height}", p, metadata=root / "videos.csv")
    labels = build_consensus(ingest_project(project, root / "videos.csv"))
    sp = SplitParams(stratify_by=None) if small else SplitParams()
    return labels, make_split(labels, sp), project


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure(labels, split, project: Path, workdir: Path, *, batch: int, device: str,
            workers: str, batches: int, warmup: int, net_type: str) -> dict[str, float]:
    import torch
    from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.pose_estimation_pytorch.runners import build_training_runner
    from deeplabcut.pose_estimation_pytorch.task import Task
    from torch.utils.data import DataLoader

    from poseops.config.train import TrainParams, resolve_dataloader_workers
    from poseops.train.project import dlc_loader as _loader
    from poseops.train.project import prepare_dlc_project

    w = int(workers) if workers.isdigit() else workers
    params = TrainParams(net_type=net_type, batch_size=batch, epochs=1, device=device,
                         crop_width=None, crop_height=None, dataloader_workers=w,
                         registered_model=None)
    ds = prepare_dlc_project(labels, split, project, workdir, params)
    loader = _loader(ds.config_path)
    cfg = loader.model_cfg
    n_workers = resolve_dataloader_workers(w)
    task = Task(cfg.get("method", "bu"))
    dataset = loader.create_dataset(transform=build_transforms(cfg["data"]["train"]),
                                    mode="train", task=task)
    pin = bool(cfg["train_settings"].get("dataloader_pin_memory", False))

    def batches_of(n: int):
        """n batches, cycling through the (small) dataset as epochs do."""
        got = 0
        while got < n:
            dl = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=n_workers,
                            pin_memory=pin, drop_last=True,
                            persistent_workers=False)
            for b in dl:
                yield b
                got += 1
                if got >= n:
                    return

    # 1) the data pipeline alone
    t = time.perf_counter()
    n_img = 0
    for i, b in enumerate(batches_of(warmup + batches)):
        if i == warmup:
            t, n_img = time.perf_counter(), 0
        n_img += int(b["image"].shape[0])
    data_ips = n_img / (time.perf_counter() - t)

    # 2) the training loop: wait for a batch, then one optimisation step
    torch.manual_seed(0)
    model = PoseModel.build(cfg["model"], pretrained_backbone=False).to(device)
    runner = build_training_runner(runner_config=cfg["runner"], model_folder=loader.model_folder,
                                   task=task, model=model, device=device)
    model.train()
    wait = step = 0.0
    n_img = 0
    it = iter(batches_of(warmup + batches))
    for i in range(warmup + batches):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        runner.step(b, mode="train")
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            wait += t1 - t0
            step += t2 - t1
            n_img += int(b["image"].shape[0])
    return {
        "workers": n_workers,
        "pin": pin,
        "data_ips": data_ips,
        "train_ips": n_img / (wait + step),
        "wait_ms": 1000 * wait / batches,
        "step_ms": 1000 * step / batches,
        "busy": step / (wait + step),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--batches", type=int, default=2, help="timed batches per setting")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    ap.add_argument("--workers", default="auto", help="train.dataloader_workers: N or auto")
    ap.add_argument("--batch-sizes", default="8,16")
    ap.add_argument("--sizes", default="160x120,640x480", help="WxH of the synthetic projects")
    ap.add_argument("--net-type", default="cspnext_s")
    ap.add_argument("--full", action="store_true", help="the full-size demo (more frames)")
    ap.add_argument("--smoke", action="store_true",
                    help="checks the script runs: 160x120, batch 8, 1 timed batch, no warm-up")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.batch_sizes, args.batches, args.warmup = "160x120", "8", 1, 0
    logging.basicConfig(level=logging.WARNING)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here", file=sys.stderr)
            return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="poseops-dl-") as tmp:
        root = Path(tmp)
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            labels, split, project = make_project(root, width, height, small=not args.full)
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                r = measure(labels, split, project, root / f"work-{size}-{bs}", batch=bs,
                            device=args.device, workers=args.workers, batches=args.batches,
                            warmup=args.warmup, net_type=args.net_type)
                rows.append((size, bs, r))
                print(f"  {size} batch {bs}: done", file=sys.stderr, flush=True)
    head = (f"{'project':>9} {'batch':>5} {'workers':>7} {'pin':>5} {'data img/s':>10} "
            f"{'train img/s':>11} {'wait ms':>8} {'step ms':>8} {'busy':>6}")
    print(f"device {args.device}, {args.net_type}, {args.batches} timed batches per row, "
          f"{os.cpu_count()} CPUs")
    print(head)
    for size, bs, r in rows:
        print(f"{size:>9} {bs:>5} {r['workers']:>7} {str(r['pin']):>5} {r['data_ips']:>10.1f} "
              f"{r['train_ips']:>11.1f} {r['wait_ms']:>8.1f} {r['step_ms']:>8.1f} "
              f"{100 * r['busy']:>5.1f}%")
    if args.device.startswith("cuda"):
        low = [f"{s} b{b}" for s, b, r in rows if r["busy"] < 0.9]
        print("GPU >= 90 % busy in every setting" if not low else
              f"GPU below 90 % busy (data-bound): {', '.join(low)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
