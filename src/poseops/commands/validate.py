"""`poseops validate`: Great Expectations checks on the labels table before anything trains on it.

Reads params.yaml ``validate`` (and ``project.path`` for the images and config.yaml), runs the
suite over the tables of :func:`poseops.quality.dataset.dataset_tables` (plus ``validate.tables``)
and writes the results JSON (``validate.out``) and Data Docs (``validate.docs``); failures stop the
stage unless ``validate.fail_on_error`` is false or ``--warn-only`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from poseops.config.pipeline import PipelineParams
from poseops.data.labels import read_table
from poseops.quality.dataset import config_params, dataset_tables

log = logging.getLogger(__name__)


def run(
    params_file: str | None = None,
    input_path: str | None = None,
    project: str | None = None,
    fail_on_error: bool | None = None,
) -> Any:
    """Validate the labels table; write results JSON + Data Docs; raise on failures."""
    cfg = PipelineParams.load(params_file)
    from poseops.quality import gx

    vp = cfg.validate
    project = project or cfg.project.path
    labels = read_table(input_path or vp.input)
    config = config_params(project, labels)
    tables = dataset_tables(
        labels, image_root=project if vp.check_images else None,
        individuals=config.get("individuals"),
    )
    for name, path in vp.tables.items():
        tables[name] = read_table(path)
    params = {**cfg.data, "validate": dataclasses.asdict(vp), "config": config}
    log.info(
        "validating %d label rows (%d frames) with %s", len(labels), len(tables["frames"]), vp.suite
    )
    result = gx.validate_tables(vp.suite, tables, params, docs_dir=vp.docs)
    result.save(vp.out)
    log.info("results: %s; Data Docs: %s", vp.out, result.docs_index)
    result.check(vp.fail_on_error if fail_on_error is None else fail_on_error)
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate",
        help="Great Expectations checks on the labels table (expectations/dataset.json)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--input", help="labels table (default: params validate.input)")
    p.add_argument("--project", help="DLC project folder (default: params project.path)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.add_argument(
        "--warn-only", action="store_true", help="report failures without failing the stage"
    )
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params_file, a.input, a.project, fail_on_error=False if a.warn_only else None)
    return 0
