"""`poseops composition`: the dataset composition metrics every iteration should report.

Reads params.yaml ``composition`` (and ``project.metadata`` for the design's conditions,
``split`` for the split's mode, ``consensus`` for multi-animal identity matching); writes the
metrics JSON and the long table (see :mod:`poseops.data.composition`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.fileio import write_csv, write_json
from poseops.data.composition import composition_metrics, composition_table
from poseops.data.labels import read_table
from poseops.data.metadata import design_conditions

log = logging.getLogger(__name__)


def run(params_file: str | None = None) -> dict[str, Any]:
    """Compute the composition metrics of params ``composition`` and write its two outputs."""
    cfg = PipelineParams.load(params_file)
    p = cfg.composition
    labels = read_table(p.input)
    split = read_table(p.split) if p.split else None
    conditions = design_conditions(cfg.project.metadata)
    split_params = cfg.split if split is not None else None
    consensus_params = (
        cfg.consensus if S.INDIVIDUAL in labels else None
    )
    metrics = composition_metrics(labels, split, conditions or None, split_params, consensus_params)
    if split is not None and metrics["split"]["leakage_warning"]:
        log.warning("composition: %s", metrics["split"]["leakage_warning"])
    write_json(metrics, p.metrics)
    write_csv(composition_table(metrics), p.table)
    log.info(
        "%d frames, condition coverage %s%%, %s -> %s, %s",
        metrics["total_frames"],
        metrics["condition_coverage_pct"],
        f"groups crossing splits {metrics['split']['groups_crossing_splits']}"
        if split is not None
        else "no split",
        p.metrics,
        p.table,
    )
    return metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "composition",
        help="dataset composition metrics + split leakage check (reports/composition.json)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params_file)
    return 0
