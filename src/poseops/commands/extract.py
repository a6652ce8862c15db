"""`poseops extract [VIDEO...]`: pick condition-balanced, diverse frames for a first labeling round.

Reads params ``extract`` and ``project`` (project folder and metadata CSV); the work is
:func:`poseops.refine.frames.extract_frames`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.refine.frames import extract_frames

log = logging.getLogger(__name__)


def run(
    project: str | Path | None = None,
    metadata: str | Path | None = None,
    videos: list[str] | None = None,
    n_frames: int | None = None,
    params_file: str | Path | None = None,
) -> pd.DataFrame:
    """params.yaml ``extract`` (``n_frames`` overrides it) and ``project`` (default project folder
    and metadata CSV) -> :func:`extract_frames`. Returns the manifest (one row per frame)."""
    cfg = PipelineParams.load(params_file)
    params = cfg.extract
    if n_frames is not None:
        params.n_frames = n_frames
    proj = cfg.project
    return extract_frames(params, project or proj.path, metadata or proj.metadata, videos)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="pick condition-balanced, diverse frames to label (k-means)")
    p.add_argument("videos", nargs="*", help="videos (default: params extract.videos / video_sets)")
    p.add_argument("--project", help="DLC project folder (default: params project.path)")
    p.add_argument("--metadata", help="per-video metadata CSV (default: params project.metadata)")
    p.add_argument("--n-frames", type=int, help="total frames to pick")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.project, args.metadata, args.videos, args.n_frames)
    return 0
