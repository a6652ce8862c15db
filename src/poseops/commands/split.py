"""`poseops split`: assign every labeled image to train / val / test without leakage.

Reads params.yaml ``split``, the labels table (``split.input``) and, when it exists, the previous
iteration's split (``split.fixed_split``, kept: fixed test set); writes ``split.out``
(see :mod:`poseops.data.split` for the modes and the table; ``split.cohorts``:
:mod:`poseops.data.cohorts`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.fileio import write_csv
from poseops.data.cohorts import cohort_members, enforce_cohorts
from poseops.data.labels import read_table
from poseops.data.split import drop_gap_frames, honour_fixed_split, make_split, summary

log = logging.getLogger(__name__)


def run(params_file: str | None = None, input_path: str | None = None) -> pd.DataFrame:
    """Split the labels table of params ``split`` (or ``input_path``) and write ``split.out``."""
    cfg = PipelineParams.load(params_file)
    p = cfg.split
    labels = read_table(input_path or p.input)
    fixed = bool(p.fixed_split and Path(p.fixed_split).is_file())
    split = make_split(labels, p, gaps=not fixed)  # gaps after the fixed split is applied
    if fixed:
        split = honour_fixed_split(
            split, pd.read_csv(p.fixed_split), held_out=p.mode == "leave-one-out"
        )
        if p.cohorts:  # a cohort's frames stay held out whatever the fixed split said
            split = enforce_cohorts(split, cohort_members(labels, p.cohorts))
        if p.mode == "temporal-blocks":
            needed = (S.TRAIN, S.VAL, S.TEST) if p.val_fraction > 0 else (S.TRAIN, S.TEST)
            split = drop_gap_frames(split, p.gap_frames, needed)
        log.info("split: kept the previous iteration's split from %s", p.fixed_split)
    write_csv(split, p.out)
    log.info("split (%s, seed %d): %s -> %s", p.mode, p.seed, summary(split), p.out)
    return split


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split",
        help="grouped, stratified train/val/test split without leakage (data/processed/split.csv)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--input", help="labels table (default: params split.input)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params_file, a.input)
    return 0
