"""Peak memory of evaluate's inference (``poseops.dlc.inference.predict``) against the number of
frames, on generated multi-animal images (default 1280x720, as the maDLC project of issue 21).

A multi-animal model (``--net``, default resnet_50: DLC's PAF head) with random weights (no
download; the time and memory of inference do not depend on the weights) predicts every frame
count in a fresh process; each process prints its peak resident memory (``ru_maxrss``) and the
resident memory before predicting (``imports MB``: Python, torch and DeepLabCut imported, the
floor every evaluation pays). Target:
the peak is flat in the number of frames (evaluate keeps the tidy table, never every image's
outputs, and returns the heap freed by a batch before the next) and under 3 GB at 1280x720.
Measured (2 shared CPU cores, batch 8): 2894 / 2908 / 2909 MB at 8 / 16 / 32 frames, 1147 MB of
it imports (docs/evaluation.md has the before/after figures and where the growth came from).

    .venv/bin/python benchmarks/evaluate_memory.py [--frames 8 32] [--size 1280x720]
        [--batch 8] [--net resnet_50]
    .venv/bin/python benchmarks/evaluate_memory.py --smoke   # 160x120, 4 and 12 frames, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

INDIVIDUALS = ["animal1", "animal2", "animal3"]
BODYPARTS = ["nose", "ear_l", "ear_r", "neck", "body", "hip", "tail_base", "tail_tip"]
UNIQUE = ["corner"]


def make_project(root: Path, width: int, height: int, net: str = "resnet_50",
                 heatmap_bias: float = -7.0, n: int = 4) -> tuple[Path, Path]:
    """An ``n``-frame maDLC project on disk (the first 3/4 DLC's train frames, the rest its
    "test" frames) with a training shuffle of ``net`` and a random-weight snapshot:
    (pytorch_config.yaml, snapshot).

    ``heatmap_bias`` is added to the bodypart heatmaps' last bias: random weights put a peak at
    nearly every heatmap pixel (~700 per bodypart on a 640x360 frame), a pathological case for
    DLC's PAF assembly (quadratic in the peaks); -7 leaves a few dozen candidate peaks per
    bodypart on a 1280x720 frame, as a barely trained model."""
    import deeplabcut
    import numpy as np
    import pandas as pd
    import torch
    import yaml
    from deeplabcut.core.engine import Engine
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    d = root / "labeled-data" / "v1"
    d.mkdir(parents=True)
    for f in range(n):
        write_image(d / f"img{f:03d}.png", width, height, f)
    cols = [(i, b) for i in INDIVIDUALS for b in BODYPARTS] + [("single", b) for b in UNIQUE]
    rng = np.random.default_rng(0)
    vals = rng.uniform(10, min(width, height) - 10, (n, 2 * len(cols)))
    mi = pd.MultiIndex.from_tuples([("bench", i, b, c) for i, b in cols for c in "xy"],
                                   names=["scorer", "individuals", "bodyparts", "coords"])
    idx = pd.MultiIndex.from_tuples([("labeled-data", "v1", f"img{f:03d}.png") for f in range(n)])
    pd.DataFrame(vals, columns=mi, index=idx).to_hdf(d / "CollectedData_bench.h5",
                                                     key="df_with_missing")
    cfg = {"Task": "mem", "scorer": "bench", "date": "Jan1", "multianimalproject": True,
           "identity": False, "project_path": str(root), "engine": "pytorch",
           "video_sets": {str(root / "videos/v1.mp4"): {"crop": f"0, {width}, 0, {height}"}},
           "bodyparts": "MULTI!", "individuals": INDIVIDUALS, "uniquebodyparts": UNIQUE,
           "multianimalbodyparts": BODYPARTS, "skeleton": [], "pcutoff": 0.6, "dotsize": 8,
           "alphavalue": 0.7, "colormap": "rainbow", "TrainingFraction": [0.75], "iteration": 0,
           "default_net_type": net, "default_augmenter": "default", "snapshotindex": -1,
           "detector_snapshotindex": -1, "batch_size": 4, "cropping": False, "start": 0,
           "stop": 1, "numframes2pick": 10}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    n_train = max(1, 3 * n // 4)
    deeplabcut.create_training_dataset(str(config), Shuffles=[1],
                                       trainIndices=[list(range(n_train))],
                                       testIndices=[list(range(n_train, n))], net_type=net, engine=Engine.PYTORCH,
                                       userfeedback=False)
    loader = DLCLoader(config=str(config), shuffle=1, trainset_index=0)
    torch.manual_seed(0)
    model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
    with torch.no_grad():
        model.heads.bodypart.heatmap_head.deconv_layers[-1].bias += heatmap_bias
    snapshot = Path(loader.model_folder) / "snapshot-001.pt"
    torch.save({"model": model.state_dict()}, snapshot)
    return Path(loader.model_config_path), snapshot


def write_image(path: Path, width: int, height: int, seed: int) -> None:
    """A noisy frame with a few bright blobs (so the PAF predictor has peaks to assemble)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(12):
        x, y = rng.integers(8, width - 8), rng.integers(8, height - 8)
        img[y - 4:y + 4, x - 4:x + 4] = rng.integers(120, 256, 3)
    Image.fromarray(img).save(path)


def add_frames(project: Path, n: int, width: int, height: int) -> list[str]:
    """``n`` frames under labeled-data/v2 (DLC relative paths)."""
    d = project / "labeled-data" / "v2"
    d.mkdir(parents=True, exist_ok=True)
    images = []
    for f in range(n):
        p = d / f"img{f:04d}.png"
        if not p.exists():
            write_image(p, width, height, 1000 + f)
        images.append(f"labeled-data/v2/{p.name}")
    return images


def child(args: argparse.Namespace) -> None:
    """One frame count in this process: predict, print peak RSS as JSON."""
    if args.predict_from:  # another version of poseops.dlc.inference (before/after figures)
        import importlib.util

        spec = importlib.util.spec_from_file_location("inference_under_test", args.predict_from)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        predict = module.predict
    else:
        from poseops.dlc.inference import predict

    project = Path(args.project)
    images = add_frames(project, args.child, *args.wh)
    import deeplabcut.pose_estimation_pytorch.apis.utils  # noqa: F401 - the import floor
    import torch  # noqa: F401

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    table = predict(args.pytorch_config, args.snapshot, project, images, batch_size=args.batch,
                    device="cpu", multi_animal=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"frames": args.child, "peak_mb": peak / 1024, "before_mb": base / 1024,
                      "rows": len(table), "s_per_frame": wall / max(args.child, 1)}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--net", default="resnet_50")
    ap.add_argument("--smoke", action="store_true", help="160x120, 4 and 12 frames")
    ap.add_argument("--heatmap-bias", type=float, default=-7.0)
    ap.add_argument("--predict-from", help=argparse.SUPPRESS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    ap.add_argument("--pytorch-config", help=argparse.SUPPRESS)
    ap.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.frames, args.batch = "160x120", [4, 12], 4
    args.wh = tuple(int(v) for v in args.size.lower().split("x"))
    if args.child is not None:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        model_cfg, snapshot = make_project(project, *args.wh, net=args.net,
                                           heatmap_bias=args.heatmap_bias)
        print(f"{'size':>10} {'batch':>5} {'frames':>6} {'peak RSS MB':>11} {'s/frame':>8} "
              f"{'imports MB':>10}")
        peaks = []
        for n in args.frames:
            cmd = [sys.executable, __file__, "--child", str(n), "--project", str(project),
                   "--pytorch-config", str(model_cfg), "--snapshot", str(snapshot),
                   "--size", args.size, "--batch", str(args.batch)]
            cmd += ["--predict-from", args.predict_from] if args.predict_from else []
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                sys.exit(f"frame count {n} failed:\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            peaks.append(res["peak_mb"])
            print(f"{args.size:>10} {args.batch:>5} {n:>6} {res['peak_mb']:>11.0f} "
                  f"{res['s_per_frame']:>8.2f} {res['before_mb']:>10.0f}")
    growth = peaks[-1] / peaks[0]
    print(f"peak RSS growth: {args.frames[-1] / args.frames[0]:.1f}x frames -> {growth:.2f}x "
          f"memory ({peaks[-1] / 1024:.2f} GB at {args.frames[-1]} frames; target flat, < 3 GB)")


if __name__ == "__main__":
    main()
