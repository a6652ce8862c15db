"""`poseops analyze [VIDEO...]`: run the current model on new videos (DeepLabCut's video analysis).

Reads params ``analyze``; the work is :func:`poseops.refine.analyze.analyze_videos`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.refine.analyze import analyze_videos

log = logging.getLogger(__name__)


def run(
    videos: list[str | Path] | None = None,
    config: str | None = None,
    shuffle: int | None = None,
    device: str | None = None,
    params_file: str | Path | None = None,
    model_dir: str | Path | None = None,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """params.yaml ``analyze`` (``config``, ``shuffle``, ``device`` override it; ``model_dir``:
    a training's workdir holding its run.json, e.g. an ablation run ``data/ablation/runs/
    current-1``, replaces ``analyze.train_workdir`` and the config/shuffle of params.yaml;
    ``out`` replaces ``analyze.out``) -> :func:`analyze_videos` on ``videos`` (default: params
    ``analyze.videos``). Returns the tidy predictions."""
    cfg = PipelineParams.load(params_file)
    params = cfg.analyze
    if model_dir is not None:  # another member's model: its own run.json names config + shuffle
        params.train_workdir, params.config, params.shuffle = str(model_dir), None, None
    if out is not None:
        params.out = str(out)
    for key, value in (("config", config), ("shuffle", shuffle), ("device", device)):
        if value is not None:
            setattr(params, key, value)
    return analyze_videos(params, list(videos or params.videos))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="run the current model on videos (DLC video analysis)")
    p.add_argument("videos", nargs="*", help="video files (default: params analyze.videos)")
    p.add_argument("--config", help="working DLC config.yaml (default: from train run.json)")
    p.add_argument("--shuffle", type=int)
    p.add_argument("--device")
    p.add_argument("--model-dir", help="analyze with this training's model: its workdir holding "
                   "run.json, e.g. a seed-ensemble member data/ablation/runs/current-1 (default: "
                   "params analyze.train_workdir)")
    p.add_argument("--out", help="output folder (default: params analyze.out)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.videos, args.config, args.shuffle, args.device, params_file=args.params_file,
        model_dir=args.model_dir, out=args.out)
    return 0
