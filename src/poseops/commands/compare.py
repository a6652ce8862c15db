"""`poseops compare BASELINE CANDIDATE`: did the refinement iteration help, on the same test set?

Reads params ``compare``; the work is :func:`poseops.refine.compare.compare_models`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from poseops.config.pipeline import PipelineParams
from poseops.refine.compare import compare_models

log = logging.getLogger(__name__)


def run(
    baseline: str,
    candidate: str,
    out: str | None = None,
    log_mlflow: bool = True,
    params_file: str | Path | None = None,
) -> dict:
    """params.yaml ``compare`` (``out`` overrides it; ``log_mlflow=False``: no MLflow run) ->
    :func:`compare_models`. BASELINE / CANDIDATE: an errors file, an iteration number or an
    MLflow run id. Returns the result tables and summary."""
    cfg = PipelineParams.load(params_file)
    params = cfg.compare
    if out:
        params.out = out
    if not log_mlflow:
        params.log_mlflow = False
    return compare_models(params, baseline, candidate)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired comparison of two models on the fixed test set")
    p.add_argument("baseline", help="errors file, iteration number or MLflow run id")
    p.add_argument("candidate", help="errors file, iteration number or MLflow run id")
    p.add_argument("--out", help="output folder (default: params compare.out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.baseline, args.candidate, args.out, log_mlflow=not args.no_mlflow)
    return 0
