"""`poseops validate-report`: Great Expectations checks on the evaluation metrics.

Reads params.yaml ``validate_report``, the evaluation outputs (``evaluate.out``: summary.json,
errors.parquet), the consensus table (``consensus.out``: the expected conditions) and the model's
pytorch_config.yaml (the expected bodyparts); writes ``validate_report.out`` and tags the
training's MLflow run (see :mod:`poseops.quality.report_checks`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.dlc.files import read_pytorch_config
from poseops.quality.report_checks import tag_run, validate

log = logging.getLogger(__name__)


def run(params_file: str | None = None, fail_on_error: bool | None = None) -> Any:
    """The DVC stage: data/eval + consensus + DLC config -> reports/validation/report.json."""
    cfg = PipelineParams.load(params_file)
    params = cfg.validate_report
    ep = cfg.evaluate
    allp = cfg.data
    out = Path(ep.out)
    for p in (out / "summary.json", out / "errors.parquet"):
        if not p.exists():
            raise PoseopsError("evaluation output missing (run `poseops evaluate`)", file=p)
    summary = json.loads((out / "summary.json").read_text())
    errors = pd.read_parquet(out / "errors.parquet")
    labels_path = Path(cfg.consensus.out)
    conditions: list[str] = []
    if labels_path.exists():
        labels = pd.read_parquet(labels_path)
        if S.CONDITION in labels.columns:
            conditions = sorted(labels[S.CONDITION].dropna().astype(str).unique())
    bodyparts = sorted(errors[S.BODYPART].astype(str).unique())
    pcfg = summary.get("pytorch_config")
    if pcfg and Path(pcfg).exists():
        meta = read_pytorch_config(Path(pcfg))["metadata"]
        # multi-animal: the unique bodyparts are evaluated too
        bodyparts = list(meta["bodyparts"]) + list(meta.get("unique_bodyparts") or [])
    result = validate(params, summary["headline"], errors, conditions, bodyparts, allp,
                      max_cohort_drop_pct=ep.max_cohort_drop_pct)
    result.save(params.out)
    if summary.get("run_id"):
        try:
            tag_run(summary["run_id"], result)
        except Exception as e:  # noqa: BLE001 - tracking must not hide the validation outcome
            log.warning("could not tag the MLflow run: %s", e)
    result.check(params.fail_on_error if fail_on_error is None else fail_on_error)
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate-report", help="Great Expectations checks on the evaluation metrics"
    )
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fail-on-error", dest="fail", action="store_true", default=None)
    g.add_argument("--warn-only", dest="fail", action="store_false")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params, a.fail)
    return 0
