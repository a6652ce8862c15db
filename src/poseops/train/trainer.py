"""Train a DeepLabCut 3 (PyTorch engine) model on our split, tracked in one MLflow run.

DLC is given trainIndices = our TRAIN frames and testIndices = our VAL frames, so its per-epoch
evaluation and best-snapshot choice (key metric: validation RMSE) never see the test frames, which
are not given to DLC training at all. Every epoch's losses and metrics go to MLflow live through a
logger plugged into DLC's training loop (see poseops.train.session). An interrupted training
resumes from its last saved state in the same MLflow run.

Working directory layout (`train.workdir`, default data/train):
    project/            working DLC project (config.yaml, labeled-data, dlc-models-pytorch, ...)
    run.json            run id, model URI, snapshots, status (written atomically)
    labels.parquet      the labels used (one scorer), logged as the MLflow dataset input
    tracking/           MLflow outbox (operations not yet acknowledged by the server)

The pieces: poseops.train.project (the working DLC project, pytorch_config.yaml),
poseops.train.session (DLC's loop hooked: epochs, resume, fingerprints), poseops.train.record
(run.json, TrainResult for later stages).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.train import TrainParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_parquet
from poseops.core.redact import install_log_redaction, redact
from poseops.train.project import (
    DlcDataset,
    dataset_from_run_json,
    dlc_loader,
    prepare_dlc_project,
    prune_paf_graph,
)
from poseops.train.record import (
    TrainResult,
    find_snapshots,
    metrics_at,
    read_learning_stats,
    read_run_json,
    single_scorer,
    write_run_json,
)
from poseops.train.session import (
    INIT_FILE,
    RESUME_FILE,
    TrainingSession,
    best_so_far,
    dataset_version,
    fingerprint,
    latest_state,
    replay_uncommitted,
    run_dlc_training,
    truncate_learning_stats,
)
from poseops.train.steering import EarlyStopped, Steering
from poseops.train.warm import Parent, check_bodyparts, find_parent, prepare_init

log = logging.getLogger(__name__)

RESUMABLE = {"running", "interrupted", "failed"}


def train_model(
    params: TrainParams,
    labels: pd.DataFrame,
    split: pd.DataFrame,
    source_project: Path,
    workdir: Path,
    *,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    mlflow_parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict | None = None,
    dvc_md5s: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Train a DLC model on (labels, split) in ``workdir``, tracked in one MLflow run.

    labels: labels/consensus table (poseops.core.schema; one scorer or a `consensus` scorer);
    split: image, split (train/val/test). ``epoch_callback(epoch, metrics)`` is called after each
    epoch with the MLflow-named metrics (val.rmse, val.total_loss, train.total_loss, ...); an
    exception it raises stops training and propagates (optuna.TrialPruned: the run ends KILLED
    with tag pruned=true). Re-running an interrupted training (same params and data) resumes
    from its last saved state in the same MLflow run. ``tracking_uri``: MLflow store (default:
    MLFLOW_TRACKING_URI, else sqlite:///mlflow.db); ``dvc_md5s``: {path: md5 of the bytes} of the
    labels/split files read (dataset version tag, resume fingerprint), else the tables are hashed.
    """
    from poseops.tracking.outbox import Outbox
    from poseops.tracking.runs import quiet_env
    from poseops.train.model import log_pose_model

    quiet_env()
    install_log_redaction()  # the console, DLC's train.txt (an MLflow artifact), every log line
    params.validate()
    t0 = time.perf_counter()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    labels = single_scorer(labels)
    version = dataset_version(labels, split, dvc_md5s)
    fp = fingerprint(params, version)
    prev = read_run_json(workdir)
    resume = (
        prev.get("status") in RESUMABLE
        and prev.get("fingerprint") == fp
        and Path(prev.get("config_path", "/nonexistent")).exists()
    )
    if params.warm_start and not resume:
        find_parent(params, workdir)  # no parent: refused before anything is touched
    kept = None if resume else set_aside_previous(workdir, prev)
    try:  # a failed start puts the previous training back, whole
        ds = _working_dataset(prev if resume else None, labels, split, source_project, workdir, params)
        outbox = Outbox(workdir / "tracking", tracking_uri, model_logger=log_pose_model)
        train_dir = ds.pytorch_config_path.parent
        loader = dlc_loader(ds.config_path)
        info = _run_info(ds, outbox, params, fp, version)
        parent = None if resume else _warm_start(params, workdir, ds, loader, info)
    except BaseException:
        if kept is not None:
            restore_previous(workdir, kept)
        raise
    if resume:
        info = {**prev, **info}
    write_run_json(info, workdir)
    if resume:
        outbox.put("set_status", status="RUNNING")
    else:
        lineage = {**(parent.tags() if parent else {"init": params.init_mode}), **(tags or {})}
        _open_run(outbox, params, ds, workdir, version, dvc_md5s, lineage, run_name, mlflow_parent_run_id)
    _start_sending(outbox, params)
    start_epoch, state = _resume_point(outbox, train_dir) if resume else (0, None)
    best_metric = best_so_far(read_learning_stats(train_dir), params) if start_epoch else None
    steering = Steering(params, read_learning_stats(train_dir) if start_epoch else None)
    session = TrainingSession(outbox, train_dir, params.epochs, start_epoch, epoch_callback, best_metric,
                              params.resume_interval_s, steering=steering)
    init = train_dir / INIT_FILE if params.warm_start and (train_dir / INIT_FILE).is_file() else None
    t1, c1 = time.perf_counter(), time.process_time()
    try:
        if start_epoch < params.epochs:
            run_dlc_training(loader, params, session, train_dir, state, start_epoch, init=init)
    except EarlyStopped as stop:
        _record_early_stop(stop, outbox, info, params)
    except BaseException as e:
        _record_failure(e, outbox, train_dir, params, workdir, info)
        raise
    t2, c2 = time.perf_counter(), time.process_time()
    result = _finalize(params, ds, workdir, info, outbox, train_dir)
    result.timings = {"prepare_s": t1 - t0, "train_s": t2 - t1, "train_cpu_s": c2 - c1,
                      "finalize_s": time.perf_counter() - t2}
    return result


PREVIOUS = "previous"
"""``workdir/previous/``: the last complete training, set aside while a new one starts and
trains; put back if the new one fails to start, deleted when the new one is complete."""
KEPT = ("project", "run.json", "labels.parquet", "split.csv")


def set_aside_previous(workdir: Path, prev: dict[str, Any]) -> Path | None:
    """Move a complete training's files (``KEPT``) into ``workdir/previous`` (renames: nothing is
    copied or deleted); None when there is no complete training to keep (an unfinished one is
    rebuilt, and an earlier set-aside complete one stays where it is)."""
    if prev.get("status") != "complete" or not (workdir / "project").exists():
        return None
    dest = workdir / PREVIOUS
    shutil.rmtree(dest, ignore_errors=True)  # an older complete one, superseded by this one
    dest.mkdir()
    for name in KEPT:
        if (workdir / name).exists():
            os.replace(workdir / name, dest / name)
    log.info("previous training set aside in %s until the new one is complete", dest)
    return dest


def restore_previous(workdir: Path, kept: Path) -> None:
    """Put the set-aside training back in place (the new one's partial files go)."""
    for name in KEPT:
        if (kept / name).exists():
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(kept / name, target)
    shutil.rmtree(kept, ignore_errors=True)
    log.warning("the new training did not start: the previous one is back in %s", workdir)


def _working_dataset(
    prev: dict[str, Any] | None, labels: pd.DataFrame, split: pd.DataFrame, source_project: Path,
    workdir: Path, params: TrainParams,
) -> DlcDataset:
    """The earlier training's working project (``prev``: its run.json, a resume), else a new one
    built from labels + split (with the tables used saved next to it)."""
    from poseops.tracking.sync import PENDING_DIR, set_aside_unsent

    if prev is not None:
        log.info("resuming the interrupted training in %s", workdir)
        return dataset_from_run_json(prev)
    # a new run: the old journal goes, but never with unsent operations (set aside, sent by
    # `poseops sync`, its files copied out of the working project rebuilt below)
    set_aside_unsent(workdir / "tracking", workdir / PENDING_DIR, "train-")
    log.info("building the DeepLabCut training set in %s", workdir / "project")
    ds = prepare_dlc_project(labels, split, source_project, workdir, params)
    write_parquet(labels.reset_index(drop=True), workdir / "labels.parquet")
    write_csv(split, workdir / "split.csv")
    return ds


def _warm_start(params: TrainParams, workdir: Path, ds: DlcDataset, loader: Any,
                info: dict[str, Any]) -> Parent | None:
    """train.init previous / a snapshot: the parent found and checked (same bodyparts, every
    weight fits the new model), its weights written for DLC's runner, run.json ``warm_start``."""
    parent = find_parent(params, workdir)
    if parent is None:
        return None
    check_bodyparts(parent, ds.pytorch_config_path)
    prepare_init(loader, parent, ds.pytorch_config_path.parent / INIT_FILE)
    info["warm_start"] = {**parent.record(), "lr": params.effective_lr,
                          "freeze_backbone_epochs": params.freeze_backbone_epochs}
    return parent


def _record_early_stop(stop: EarlyStopped, outbox: Any, info: dict[str, Any], params: TrainParams) -> None:
    """An early stop: a tag on the MLflow run and ``early_stopping`` in run.json."""
    log.info("stopped early at epoch %d of %d (best %s %.4g at epoch %d)", stop.epoch, params.epochs,
             params.key_metric, stop.best, stop.best_epoch)
    outbox.put_once("set_tags", tags={"stopped_early_at_epoch": stop.epoch})
    info["early_stopping"] = {"stopped_at_epoch": stop.epoch, "best_epoch": stop.best_epoch,
                              "best": stop.best, "key_metric": params.key_metric,
                              "patience": params.early_stopping_patience,
                              "min_delta": params.early_stopping_min_delta}


def _run_info(ds: DlcDataset, outbox: Any, params: TrainParams, fp: str, version: str) -> dict[str, Any]:
    """run.json at the start of a training (status running)."""
    return {
        "status": "running",
        "fingerprint": fp,
        "dataset_version": version,
        "config_path": str(ds.config_path),
        "shuffle": ds.shuffle,
        "trainset_index": ds.trainset_index,
        "model_dir": str(ds.model_dir),
        "pytorch_config_path": str(ds.pytorch_config_path),
        "images": ds.images,
        "train_indices": ds.train_indices,
        "val_indices": ds.val_indices,
        "iteration": ds.iteration,
        "tracking_uri": redact(outbox.uri),  # run.json is in a DVC output: no password
        "experiment": params.experiment,
    }


def _open_run(
    outbox: Any, params: TrainParams, ds: DlcDataset, workdir: Path, version: str,
    dvc_md5s: dict[str, str] | None, tags: dict | None, run_name: str | None,
    parent_run_id: str | None,
) -> None:
    """Queue a new MLflow run: its tags, params, pytorch_config.yaml and the labels dataset."""
    import poseops
    from poseops.tracking.runs import dvc_tags

    run_tags = {
        "git_commit": _git_commit(),
        "dataset_version": version,
        "dlc_iteration": ds.iteration,
        "shuffle": ds.shuffle,
        "net_type": params.net_type,
        "poseops_version": poseops.__version__,
        "deeplabcut_version": _dlc_version(),
        "train_fraction": ds.train_fraction,
        "n_train": len(ds.images[S.TRAIN]),
        "n_val": len(ds.images[S.VAL]),
        "n_test": len(ds.images[S.TEST]),
        **({"multianimal": True, "individuals": ",".join(ds.individuals)} if ds.multianimal else {}),
        **{f"dvc_md5.{k}": v for k, v in (dvc_md5s or {}).items()},
        **dvc_tags(),
        **(tags or {}),
    }
    # `mlflow run -e train` made a run for us (MLFLOW_RUN_ID): log into it
    adopt = os.environ.get("MLFLOW_RUN_ID") if parent_run_id is None else None
    outbox.put(
        "create_run",
        run_id=adopt,
        experiment=params.experiment,
        run_name=run_name or params.run_name or default_run_name(ds, params),
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in run_tags.items()},
    )
    outbox.put("log_params", params=flat_params(params))
    outbox.put("log_artifact", path=str(ds.pytorch_config_path), artifact_path="config")
    outbox.put(
        "log_input",
        path=str(workdir / "labels.parquet"),
        name=f"labels-{version}",
        context="training",
    )


def default_run_name(ds: DlcDataset, params: TrainParams) -> str:
    """``<project>-it<iteration>-<net_type>`` (project: the DLC config's Task)."""
    import yaml

    from poseops.dlc.files import read_config_unchecked
    from poseops.tracking.runs import training_run_name

    try:
        project = read_config_unchecked(ds.config_path).get("Task") or ds.config_path.parent.name
    except (OSError, ValueError, yaml.YAMLError):
        project = ds.config_path.parent.name
    return training_run_name(str(project), ds.iteration, params.net_type)


def _start_sending(outbox: Any, params: TrainParams) -> None:
    """Send the run's set-up now, before training, so the sender thread only has each epoch's
    metrics to send while DLC trains (an unreachable server fails fast and is retried later);
    then the sender thread and the system metrics."""
    outbox.flush_once()
    outbox.start()
    if params.system_metrics:
        from poseops.tracking.system import start_system_metrics

        start_system_metrics(outbox, params.system_metrics_interval_s)


def _resume_point(outbox: Any, train_dir: Path) -> tuple[int, Path | None]:
    """(epoch, state) a resume starts from; learning_stats is cut back to it, and epochs whose
    metrics never reached the outbox are replayed from it."""
    state, start_epoch = latest_state(train_dir)
    stats = truncate_learning_stats(train_dir, start_epoch)
    replay_uncommitted(outbox, stats, start_epoch)
    outbox.put("set_tags", tags={"resumed_from_epoch": start_epoch})
    log.info("resuming from epoch %d (%s)", start_epoch, state)
    return start_epoch, state


def _record_failure(
    e: BaseException, outbox: Any, train_dir: Path, params: TrainParams, workdir: Path,
    info: dict[str, Any],
) -> None:
    """A training that stopped: the MLflow run ends KILLED (pruned, interrupted) or FAILED,
    run.json says which (a later run with the same params resumes it)."""
    pruned = _is_pruned(e)
    status = "KILLED" if pruned or isinstance(e, KeyboardInterrupt) else "FAILED"
    if pruned:
        outbox.put("set_tags", tags={"pruned": "true"})
    _finish_tracking(outbox, train_dir, status, params, artifacts=True)
    info["status"] = "pruned" if pruned else ("interrupted" if status == "KILLED" else "failed")
    _write_final_run_json(workdir, info, outbox, train_dir)


def _finish_tracking(outbox: Any, train_dir: Path, status: str, params: TrainParams, artifacts: bool) -> None:
    if artifacts:
        for name in ("learning_stats.csv", "train.txt"):
            if (train_dir / name).exists():
                outbox.put("log_artifact", path=str(train_dir / name), artifact_path="train")
    outbox.put("end_run", status=status)
    if not outbox.close(timeout_s=params.tracking_timeout_s) and outbox.blocked is None:
        log.warning(
            "MLflow server %s unreachable: %d operation(s) kept in %s; nothing is lost. "
            "Send them when it is back with: poseops sync --workdir %s",
            outbox.uri,
            len(outbox.pending),
            outbox.journal,
            outbox.folder.parent,
        )


def _write_final_run_json(workdir: Path, info: dict[str, Any], outbox: Any, train_dir: Path) -> None:
    best, last = find_snapshots(train_dir)
    info.update(
        run_id=outbox.run_id,
        model_uri=outbox.state.get("model_uri"),
        model_name=outbox.state.get("model_name"),
        model_version=outbox.state.get("model_version"),
        best_snapshot=str(best) if best else None,
        last_snapshot=str(last) if last else None,
        tracking_pending=len(outbox.pending),
    )
    write_run_json(info, workdir)


def _finalize(
    params: TrainParams, ds: DlcDataset, workdir: Path, info: dict[str, Any], outbox: Any,
    train_dir: Path,
) -> TrainResult:
    """A finished training: the selected snapshot (best or last, ``params.snapshot``) with its
    PAF graph pruned, its validation metrics, logged and registered as the MLflow model; the
    run ends FINISHED and run.json says complete."""
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    for name in (RESUME_FILE, INIT_FILE):
        (train_dir / name).unlink(missing_ok=True)
    best, last = find_snapshots(train_dir)
    chosen = (best or last) if params.snapshot == "best" else (last or best)
    if chosen is None:
        raise PoseopsError("training produced no snapshot", file=train_dir)
    prune_paf_graph(ds, chosen, max_frames=params.paf_prune_frames)
    stats = read_learning_stats(train_dir)
    epoch = next(s.epochs for s in list_snapshots(train_dir, "snapshot") if s.path == chosen)
    metrics = metrics_at(stats, epoch)
    metrics["selected_epoch"] = float(epoch)
    summary = {f"selected.{k}": v for k, v in metrics.items()}
    # put_once: a finalisation run again after a kill (rerun) queues nothing twice
    outbox.put_once("log_metrics", metrics=summary, step=0, timestamp=int(time.time() * 1000))
    outbox.put_once("set_tags", tags={"selected_snapshot": chosen.name, "best_epoch": epoch})
    outbox.put_once("log_artifact", path=str(chosen), artifact_path="snapshots")
    outbox.put("log_artifact", path=str(ds.pytorch_config_path), artifact_path="config")
    example = next((ds.config_path.parent / i for s in (S.VAL, S.TRAIN) for i in ds.images.get(s) or []
                    if (ds.config_path.parent / i).exists()), None)  # the model's input example
    outbox.put_once("log_model", pytorch_config=str(ds.pytorch_config_path), snapshot=str(chosen),
                    **({"example_image": str(example)} if example else {}))
    if params.registered_model:
        from poseops.tracking.runs import model_description

        val = {k: v for k, v in metrics.items() if k.startswith("val.")}
        outbox.put_once(
            "register_model",
            name=params.registered_model,
            tags={k: f"{v:.4f}" for k, v in val.items()},
            description=model_description(val),
        )
    _finish_tracking(outbox, train_dir, "FINISHED", params, artifacts=True)
    info["status"] = "complete"
    info["selected_snapshot"] = str(chosen)
    info["metrics"] = metrics
    _write_final_run_json(workdir, info, outbox, train_dir)
    shutil.rmtree(workdir / PREVIOUS, ignore_errors=True)  # replaced by this complete one
    return TrainResult(
        config_path=ds.config_path,
        shuffle=ds.shuffle,
        trainset_index=ds.trainset_index,
        model_dir=ds.model_dir,
        pytorch_config_path=ds.pytorch_config_path,
        best_snapshot=best,
        last_snapshot=last,
        learning_stats=stats,
        run_id=outbox.run_id,
        metrics=metrics,
        images=ds.images,
        model_uri=outbox.state.get("model_uri"),
        model_version=outbox.state.get("model_version"),
        workdir=workdir,
        tracking_pending=len(outbox.pending),
    )


def flat_params(params: TrainParams, prefix: str = "") -> dict[str, Any]:
    """The params as MLflow params: one key each, a mapping's keys dotted (``scheduler_params.x``)."""
    out = {}
    for k, v in dataclasses.asdict(params).items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{prefix}{k}.{k2}"] = v2
        else:
            out[f"{prefix}{k}"] = v
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _dlc_version() -> str:
    from importlib.metadata import version

    try:
        return version("deeplabcut")
    except Exception:  # noqa: BLE001
        return "unknown"


def _is_pruned(exc: BaseException) -> bool:
    return type(exc).__name__ in {"TrialPruned", "Pruned"}
