"""`poseops outliers`: pick the frames the model struggles with for relabeling (DLC's refine
convention).

Reads params ``outliers`` and ``project`` (project folder and metadata CSV); the work is
:func:`poseops.refine.outliers.pick_outliers`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.refine.outliers import pick_outliers

log = logging.getLogger(__name__)


def run(
    project: str | Path | None = None,
    metadata: str | Path | None = None,
    predictions: str | None = None,
    videos_dir: str | Path | None = None,
    params_file: str | Path | None = None,
    bodyparts: list[str] | None = None,
    conditions: list[str] | None = None,
    ensemble: list[str] | None = None,
) -> pd.DataFrame:
    """params.yaml ``outliers`` (``predictions``, ``bodyparts``, ``conditions``, ``ensemble``
    override it),
    ``merge.pending`` (frames a partial merge left) and ``project`` (default project folder,
    metadata CSV and format: a Lightning Pose folder gets its own convention) ->
    :func:`pick_outliers`. Returns the manifest."""
    cfg = PipelineParams.load(params_file)
    params = cfg.outliers
    if predictions:
        params.predictions = predictions
    if bodyparts:
        params.bodyparts = list(bodyparts)
    if conditions:
        params.conditions = list(conditions)
    if ensemble:
        params.ensemble = list(ensemble)
    params.pending = cfg.merge.pending
    proj = cfg.project
    return pick_outliers(params, project or proj.path, metadata or proj.metadata, videos_dir,
                         fmt=proj.format)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outliers", help="pick outlier frames for relabeling (DLC refine convention)")
    p.add_argument("--project", help="DLC project folder (default: params project.path)")
    p.add_argument("--metadata", help="per-video metadata CSV (default: params project.metadata)")
    p.add_argument("--predictions", help="tidy predictions from `poseops analyze`")
    p.add_argument("--videos-dir", help="where the analysed videos are, if not in the project")
    p.add_argument("--bodypart", action="append", dest="bodyparts", metavar="BODYPART",
                   help="score only this bodypart (repeatable; default: params outliers.bodyparts)")
    p.add_argument("--condition", action="append", dest="conditions", metavar="CONDITION",
                   help="only videos of this condition (repeatable; default: params "
                        "outliers.conditions)")
    p.add_argument("--ensemble", action="append", metavar="PREDICTIONS",
                   help="another seed's predictions of the same videos: rule disagreement "
                        "(repeatable; default: params outliers.ensemble)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.project, args.metadata, args.predictions, args.videos_dir, args.params_file,
        bodyparts=args.bodyparts, conditions=args.conditions, ensemble=args.ensemble)
    return 0
