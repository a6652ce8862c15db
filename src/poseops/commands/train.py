"""`poseops train` (DVC stage `train`): consensus table + split -> data/train + an MLflow run +
reports/train.json. Reads params.yaml ``train:`` (with ``-P key=value`` overrides) and the
consensus/split outputs and project path of the earlier stages; the training itself is
:func:`poseops.train.trainer.train_model`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from poseops.config.loader import from_dict, load_yaml
from poseops.config.pipeline import PipelineParams
from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json
from poseops.train.record import TrainResult
from poseops.train.session import read_training_inputs
from poseops.train.trainer import train_model

log = logging.getLogger(__name__)


def run(params_file: str | None = None, overrides: dict[str, Any] | None = None) -> TrainResult:
    """The DVC stage: consensus table + split -> data/train + MLflow run + metrics JSON."""
    cfg = PipelineParams.load(params_file)
    params = train_params(params_file, overrides, cfg=cfg)
    params.validate()  # every value checked before any output is touched
    project = Path(cfg.project.path)
    # the tags and the resume fingerprint come from the bytes parsed (read_training_inputs)
    labels, split, md5s = read_training_inputs(Path(cfg.consensus.out), Path(cfg.split.out))
    res = train_model(params, labels, split, project, Path(params.workdir), dvc_md5s=md5s)
    write_json({**res.metrics, "run_id": res.run_id}, params.metrics)
    log.info("trained: run %s, model %s, val rmse %.3f px", res.run_id, res.model_uri,
             res.metrics.get("val.rmse", float("nan")))
    return res


def train_params(params_file: str | None = None, overrides: dict[str, Any] | None = None, *,
                 cfg: PipelineParams | None = None) -> TrainParams:
    """params.yaml ``train:`` with ``-P`` overrides, checked like params.yaml (types, unknown
    keys, closest name); ``cfg``: the params file already parsed (else read ``params_file``)."""
    cfg = cfg or PipelineParams.load(params_file)
    cfg.require("train")
    params = cfg.train
    if not overrides:
        return params
    merged = dataclasses.asdict(params)
    for k, v in overrides.items():
        current = merged.get(k)
        if isinstance(current, int) and not isinstance(current, bool) and isinstance(v, float):
            if not v.is_integer():
                raise PoseopsError(f"train parameter {k} must be an integer, got {v}")
            v = int(v)  # MLproject parameters have no int type: -P epochs=5.0
        merged[k] = v
    return from_dict(TrainParams, merged, where="poseops train -P")


def _parse_value(text: str) -> Any:
    return load_yaml(text)  # YAML 1.2 floats: -P lr=1e-3 is a number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a DeepLabCut model on the split, tracked in MLflow")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    p.add_argument(
        "-P", "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a train parameter, e.g. -P epochs=5 (repeatable)",
    )
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise PoseopsError(f"-P expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v)
    res = run(args.params, overrides)
    print(json.dumps({"run_id": res.run_id, "model_uri": res.model_uri, **res.metrics}, indent=1))
    return 0
