"""`poseops ingest`: a DeepLabCut (or Lightning Pose) project -> one tidy labels table (parquet).

Reads params.yaml ``project`` and ``ingest`` (arguments override them) and writes ``ingest.out``
(see :mod:`poseops.data.ingest` for the table).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from poseops.config.data import FORMATS, IngestParams, ProjectParams
from poseops.config.loader import load_params, params_path
from poseops.config.pipeline import PipelineParams
from poseops.core.fileio import write_parquet
from poseops.data.ingest import ingest_project

log = logging.getLogger(__name__)


def run(
    project: str | Path | None = None,
    metadata: str | Path | None = None,
    out: str | Path | None = None,
    fmt: str | None = None,
    params_file: str | Path | None = None,
) -> Path:
    """CLI entry: arguments override params.yaml ``project`` / ``ingest``; writes parquet atomically."""
    if params_path(params_file).exists():
        cfg = PipelineParams.load(params_file)
        proj, ing = cfg.project, cfg.ingest
    elif project is None or out is None:
        load_params(params_file)  # raises a clear "params file not found"
        raise AssertionError("unreachable")
    else:
        proj, ing = ProjectParams(metadata=""), IngestParams()
    df = ingest_project(
        Path(project or proj.path),
        Path(metadata or proj.metadata) if (metadata or proj.metadata) else None,
        fmt or proj.format,
    )
    dest = Path(out or ing.out)
    write_parquet(df, dest)
    log.info("wrote %s", dest)
    return dest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="read a DLC project's labels (every scorer) into data/interim/labels.parquet",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--project", help="project folder (default: params project.path)")
    p.add_argument("--metadata", help="per-video metadata CSV (default: params project.metadata)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, help="default: params project.format")
    p.add_argument("--out", help="output parquet (default: params ingest.out)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.project, a.metadata, a.out, a.fmt, a.params_file)
    return 0
