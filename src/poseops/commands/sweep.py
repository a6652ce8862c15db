"""`poseops sweep`: hyperparameter sweeps with Optuna, shared across GPU servers, one MLflow run each.

The command reads params.yaml (``sweep:``, ``train:`` and the paths of the consensus, split and
project stages) and argv, then runs one worker here (:func:`run`), one per GPU of this server
(``--gpus``), a SLURM job array of workers (``--slurm``), or promotes the best trial's params into
params.yaml ``train:`` (``--promote``). The science is in :mod:`poseops.sweep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poseops.config.loader import params_path, update_params
from poseops.config.pipeline import PipelineParams
from poseops.config.sweep import SweepParams
from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.sweep import launch as L
from poseops.sweep.results import MeasureFn, info_test_metrics, report_promoted_test
from poseops.sweep.space import TrainInputs, space_hash, study_name_for, table_digest
from poseops.sweep.worker import TrainFn, run_worker

log = logging.getLogger(__name__)

SECTION = "sweep"
STORAGE_ENV = "POSEOPS_SWEEP_STORAGE"  # the storage URL (keeps passwords out of params.yaml)
# a SLURM array task runs the worker without the CLI: the same "nothing may call home" settings
NO_CALLING_HOME = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                   "DVC_NO_ANALYTICS": "1"}


def register(subparsers: Any) -> None:
    ap = subparsers.add_parser(
        "sweep",
        help="hyperparameter sweep (Optuna; run it on several GPUs/servers with one storage)",
        description=__doc__.splitlines()[0],
    )
    ap.add_argument("--params", default=None, help="params.yaml (default: ./params.yaml)")
    ap.add_argument("--study", default=None, help="study name (default: sweep.study_name)")
    ap.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or journal file path (default: $POSEOPS_SWEEP_STORAGE, "
        "else sweep.storage)",
    )
    ap.add_argument("--n-trials", type=int, default=None, help="total trials of the study")
    ap.add_argument("--worker-trials", type=int, default=None, help="at most N trials here")
    ap.add_argument("--device", default=None, help="e.g. cuda:0 (default: train.device)")
    ap.add_argument("--out", default=None, help="output folder (default: sweep.out)")
    ap.add_argument(
        "--promote",
        action="store_true",
        help="copy best_params.yaml into params.yaml train: (runs no trials); with "
        "sweep.log_test, also measure the promoted trial's test error, once",
    )
    ap.add_argument(
        "--gpus",
        default=None,
        help="one worker per GPU of this server, e.g. 0,1,2,3 or all (each pinned with "
        "CUDA_VISIBLE_DEVICES; one progress line; Ctrl-C fails and re-queues running trials)",
    )
    ap.add_argument(
        "--slurm",
        action="store_true",
        help="submit sweep.slurm.n_workers workers as a SLURM job array (submitit; "
        "sweep.slurm: partition, GPUs, time, memory); needs a PostgreSQL storage",
    )
    ap.add_argument("--wait", action="store_true",
                    help="--slurm: follow the study's progress until the jobs end")
    ap.add_argument(
        "--train-fn",
        default=None,
        help="module:function with train_model's signature (default: poseops.train.trainer:train_model)",
    )
    ap.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    pfile, p = sweep_params(args)
    if args.promote:
        train = promote(p.best_params_path, pfile)
        print(f"promoted into {pfile} train: {train}")
        if p.log_test:
            test = report_promoted_test(p, measure=promoted_measure(pfile, args.device))
            if test:
                print(f"test error of the promoted trial {test['trial']} (reported once, never "
                      f"chosen on): {test['metrics']}")
        return 0
    if args.gpus and args.slurm:
        raise PoseopsError("--gpus and --slurm exclude each other (SLURM pins the GPUs)")
    if args.gpus or args.slurm:
        p = dataclasses.replace(p, study_name=resolved_study_name(p, pfile))
        if args.gpus:
            devices = L.parse_gpus(args.gpus, L.cuda_device_ids())
            return L.run_local_gpus(p, worker_options(args), pfile, devices)
        jobs = submit_slurm(p, args, pfile)
        return L.wait_jobs(p, jobs) if args.wait else 0
    print(json.dumps(worker_report(args), default=str))
    return 0


def run(
    params_file: str | Path | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    out: str | None = None,
    device: str | None = None,
    worker_trials: int | None = None,
    train_fn: str | None = None,
) -> dict[str, Any]:
    """One worker on this process's device: run trials of the shared study, return the
    WorkerReport as a dict. ``train_fn``: ``module:function`` (default: train_model)."""
    pfile, p = load_sweep_params(params_file, study=study, storage=storage, n_trials=n_trials,
                                 out=out)
    fn = resolve_callable(train_fn) if train_fn else None
    report = run_worker(
        p,
        load_train_base(pfile),
        load_inputs(pfile),
        train_fn=fn,
        device=device,
        worker_trials=worker_trials,
    )
    return dataclasses.asdict(report)


# --------------------------------------------------------------------------------------------
# params.yaml and argv


def load_sweep_params(params_file: str | Path | None = None, *, study: str | None = None,
                      storage: str | None = None, n_trials: int | None = None,
                      out: str | None = None) -> tuple[Path, SweepParams]:
    """params.yaml's ``sweep:`` with overrides (None: keep); the storage falls back on
    ``$POSEOPS_SWEEP_STORAGE`` before ``sweep.storage``."""
    pfile = params_path(params_file)
    p = PipelineParams.load(pfile).sweep
    overrides = {
        "study_name": study,
        "storage": storage or os.environ.get(STORAGE_ENV),  # keeps passwords out of
        # params.yaml and the process list
        "n_trials": n_trials,
        "out": out,
    }
    return pfile, dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})


def sweep_params(args: argparse.Namespace) -> tuple[Path, SweepParams]:
    """params.yaml's ``sweep:`` with the command-line overrides."""
    return load_sweep_params(args.params, study=args.study, storage=args.storage,
                             n_trials=args.n_trials, out=args.out)


def load_train_base(params_file: str | Path | None) -> TrainParams:
    """params.yaml ``train:``, the params every trial starts from."""
    return PipelineParams.load(params_file).train


def load_inputs(params_file: str | Path | None) -> TrainInputs:
    """The consensus labels, the split and the DLC project, from the paths in params.yaml."""
    cfg = PipelineParams.load(params_file)
    import pandas as pd

    labels = Path(cfg.consensus.out)
    split = Path(cfg.split.out)
    project = Path(cfg.project.path)
    for f, stage in ((labels, "consensus"), (split, "split")):
        if not f.exists():
            raise PoseopsError(f"missing input: run `poseops {stage}` (or dvc repro) first", file=f)
    if not (project / "config.yaml").exists():
        raise PoseopsError("not a DeepLabCut project (no config.yaml)", file=project)
    return TrainInputs(pd.read_parquet(labels), pd.read_csv(split), project)


def resolve_callable(spec: str) -> TrainFn:
    """``module:attr`` -> the callable (for --train-fn)."""
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise PoseopsError(f"--train-fn must look like 'package.module:function', not {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise PoseopsError(f"--train-fn {spec}: {e}") from e
    return fn


def resolved_study_name(p: SweepParams, pfile: Path) -> str:
    """The study the workers of ``p`` will share (sweep.study_name or the fingerprint name)."""
    if p.study_name:
        return p.study_name
    inputs = load_inputs(pfile)
    base = dataclasses.asdict(load_train_base(pfile))
    return study_name_for(p, space_hash(p, base, table_digest(inputs.labels, inputs.split)))


# --------------------------------------------------------------------------------------------
# workers: here, or launched (--gpus, --slurm)


def worker_report(args: argparse.Namespace) -> dict[str, Any]:
    """One worker on this process's device (:func:`run` with the command-line flags)."""
    return run(args.params, study=args.study, storage=args.storage, n_trials=args.n_trials,
               out=args.out, device=args.device, worker_trials=args.worker_trials,
               train_fn=args.train_fn)


def worker_options(args: argparse.Namespace) -> L.WorkerOptions:
    """The flags the launchers pass on to each worker."""
    return L.WorkerOptions(study=args.study, n_trials=args.n_trials,
                           worker_trials=args.worker_trials, out=args.out,
                           train_fn=args.train_fn, device=args.device)


def slurm_task(argv: list[str]) -> dict[str, Any]:
    """A SLURM array task: ``poseops sweep <argv>`` as one worker in this process (parsed with
    this command's own parser); returns its report."""
    for key, value in NO_CALLING_HOME.items():  # as poseops.cli does (not imported here)
        os.environ.setdefault(key, value)
    parser = argparse.ArgumentParser(prog="poseops")
    register(parser.add_subparsers(dest="command"))
    return worker_report(parser.parse_args(argv))


def submit_slurm(p: SweepParams, args: argparse.Namespace, pfile: Path) -> list[Any]:
    """Submit ``sweep.slurm.n_workers`` workers (:func:`slurm_task`) as one job array."""
    return L.submit_slurm(p, worker_options(args), pfile, slurm_task)


# --------------------------------------------------------------------------------------------
# --promote


def promote(best_params: str | Path, params_file: str | Path | None = None) -> dict[str, Any]:
    """Copy the best trial's params (best_params.yaml ``train:``) into params.yaml ``train:``
    (comments and order kept), so the next ``dvc repro`` trains them. Returns what was set."""
    import yaml

    path = Path(best_params)
    if not path.exists():
        raise PoseopsError("no best parameters yet: run `poseops sweep` first", file=path)
    doc = yaml.safe_load(path.read_text()) or {}
    train = doc.get("train")
    if not isinstance(train, dict) or not train:
        raise PoseopsError("expected a non-empty 'train:' mapping", file=path)
    update_params({"train": train}, params_file)
    return train


def trial_test_metrics(workdir: Path, params_file: str | Path | None, device: str
                       ) -> dict[str, float]:
    """Test error of the trial trained in ``workdir`` (its selected snapshot; DLC inference):
    ``test.mean_px`` (DLC's "rmse") and ``test.rmse_px``; {} when it cannot be measured."""
    from poseops.train.record import load_result

    try:
        result = load_result(workdir)
    except PoseopsError as e:
        log.warning("test error not measured: %s", e)
        return {}
    return info_test_metrics(result, load_inputs(params_file), device)


def promoted_measure(pfile: Path, device: str | None) -> MeasureFn:
    """``measure(workdir)`` for report_promoted_test: :func:`trial_test_metrics` on ``device``
    (None: train.device, read only when a measurement is due)."""
    def measure(workdir: Path) -> Mapping[str, float]:
        dev = device or getattr(load_train_base(pfile), "device", "auto")
        return trial_test_metrics(workdir, pfile, dev)

    return measure
