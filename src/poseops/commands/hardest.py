"""`poseops hardest`: the labeled frames with the highest error (one bodypart, one condition...),
written in DeepLabCut's refine layout for a relabeling check.

Reads params ``hardest``, ``evaluate`` (its errors table: ``<evaluate.out>/errors.parquet``) and
``project``; the work is :func:`poseops.refine.hardest.export_hardest`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.refine.hardest import export_hardest

log = logging.getLogger(__name__)


def run(
    project: str | Path | None = None,
    errors: str | None = None,
    n_frames: int | None = None,
    bodyparts: list[str] | None = None,
    conditions: list[str] | None = None,
    params_file: str | Path | None = None,
) -> pd.DataFrame:
    """params.yaml ``hardest`` (the arguments override it), the errors table of ``evaluate``
    and the project folder of ``project`` -> :func:`export_hardest`. Returns the manifest."""
    cfg = PipelineParams.load(params_file)
    params = cfg.hardest
    params.errors = errors or str(Path(cfg.evaluate.out) / "errors.parquet")
    if n_frames is not None:
        params.n_frames = n_frames
    if bodyparts:
        params.bodyparts = list(bodyparts)
    if conditions:
        params.conditions = list(conditions)
    return export_hardest(params, project or cfg.project.path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hardest", help="labeled frames with the highest error, for relabeling "
                                       "(DLC refine layout)")
    p.add_argument("--bodypart", action="append", dest="bodyparts", metavar="BODYPART",
                   help="rank frames by this bodypart's error (repeatable; default: params "
                        "hardest.bodyparts, empty = all)")
    p.add_argument("--condition", action="append", dest="conditions", metavar="CONDITION",
                   help="only frames of this condition (repeatable)")
    p.add_argument("-n", "--n-frames", type=int, help="how many frames (default: params "
                   "hardest.n_frames)")
    p.add_argument("--errors", help="errors table (default: <params evaluate.out>/errors.parquet)")
    p.add_argument("--project", help="DLC project folder (default: params project.path)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.project, args.errors, args.n_frames, args.bodyparts, args.conditions,
        args.params_file)
    return 0
