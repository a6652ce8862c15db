"""`poseops demo`: generate the seeded demo DeepLabCut project (and the metadata CSV).

Reads params ``demo`` and ``project.metadata`` (the default metadata CSV); the work is
:func:`poseops.demo.project.generate_demo`, then
:func:`poseops.demo.scoring.write_behaviour_inputs` (manual_scoring.csv + arena.csv for
``poseops behaviour``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from poseops.config.pipeline import PipelineParams
from poseops.demo.project import generate_demo
from poseops.demo.scoring import write_behaviour_inputs

log = logging.getLogger(__name__)


def run(
    out: str | Path | None = None,
    metadata: str | Path | None = None,
    params_file: str | Path | None = None,
    small: bool = False,
    multi_animal: bool = False,
) -> Path:
    """CLI entry: params.yaml ``demo`` (and ``project.metadata`` as the default metadata path).
    ``small``: the tiny variant (:meth:`DemoParams.small` sizes); ``multi_animal``: a
    multi-animal project (``animals_per_video`` from params, 2 when it is 1)."""
    cfg = PipelineParams.load(params_file)
    p = cfg.demo
    if small:
        p = dataclasses.replace(p, animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
    if multi_animal and not p.multi:
        p = dataclasses.replace(p, animals_per_video=2)
    if metadata is None:
        metadata = cfg.project.metadata
    root = generate_demo(Path(out or p.out), p, Path(metadata) if metadata else None)
    write_behaviour_inputs(root, p)  # manual scoring + arena (behaviour stage)
    return root


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "demo",
        help="generate the seeded demo DeepLabCut project (data/raw/demo + metadata CSV)",
        description="`poseops demo`: a seeded generator of a complete small DeepLabCut project "
                    "(the bundled demo).",
    )
    sp.add_argument("--out", help="project folder (default: params demo.out)")
    sp.add_argument("--metadata", help="metadata CSV to write (default: params project.metadata)")
    sp.add_argument("--small", action="store_true", help="tiny variant (2 animals, 30 frames)")
    sp.add_argument("--multi-animal", action="store_true",
                    help="multi-animal (maDLC) project: params demo.animals_per_video, at least 2")
    sp.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    sp.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.out, args.metadata, args.params_file, args.small, args.multi_animal)
    return 0
