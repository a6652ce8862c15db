"""A DeepLabCut training session: DLC's own training loop, hooked for poseops.

:class:`TrainingSession` receives DLC's per-epoch logs (through the logger registered by
poseops.tracking) and sees DLC's snapshot manager (:func:`hook_runner`): after each epoch whose
state is on disk it commits the epoch's metrics to the MLflow outbox and calls the user's epoch
callback (a sweep's pruner). Resume: :func:`latest_state` finds the most advanced readable state
(DLC snapshot or poseops' own resumable state, ``RESUME_FILE``), setting corrupt ones aside.
Fingerprints (:func:`dataset_version`, :func:`fingerprint`) tell whether an earlier training in
the workdir is the same one (then it resumes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv
from poseops.train.record import read_learning_stats

log = logging.getLogger(__name__)

RESUME_FILE = "poseops-resume.pt"
INIT_FILE = "poseops-init.pt"
RNG_KEY = "poseops_rng"  # the random generators' state, in each saved training state


def rng_state() -> dict[str, Any]:
    """The state of every random generator training draws from (torch, CUDA, numpy, random),
    as tensors, ints and lists (loadable with torch.load(weights_only=True))."""
    import random

    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "python": [int(version), [int(v) for v in internal], py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))


def saved_rng_state(path: Path | None) -> dict[str, Any] | None:
    """The RNG state saved in a training state file (None: none saved, e.g. an older file)."""
    if path is None:
        return None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False).get(RNG_KEY)
    except Exception as e:  # noqa: BLE001 - the resume itself reports an unreadable state
        log.warning("no RNG state read from %s: %s", path, e)
        return None



class TrainingSession:
    """Receives DLC's per-epoch logs; after each epoch's state is on disk, commits the epoch's
    metrics to the MLflow outbox, prints progress and calls the user's epoch callback."""

    def __init__(self, outbox: Any, train_dir: Path, total_epochs: int, start_epoch: int,
                 callback: Callable[[int, dict[str, float]], None] | None,
                 best_metric: float | None, resume_interval_s: float = 60.0,
                 steering: Any | None = None) -> None:
        self.outbox = outbox
        self.steering = steering  # poseops.train.steering.Steering: freeze, early stop, plateau
        self.train_dir = train_dir
        self.total = total_epochs
        self.start_epoch = start_epoch
        self.callback = callback
        self.best_metric = best_metric
        self.resume_interval_s = resume_interval_s
        self._pending: dict[int, dict[str, float]] = {}
        self._uncommitted: list[int] = []  # epochs run since the last resumable state
        self._last_durable = time.monotonic()
        self.committed: list[int] = []
        journaled = {int(op["step"]) for op in getattr(outbox, "_ops", [])
                     if op.get("op") in ("log_metrics", "redo_metrics") and op.get("step")}
        # epochs already in the journal up to the resume point: never logged again; those after
        # it (their state was lost: trained again) are logged again as redone, so MLflow holds
        # the values learning_stats.csv has
        self._logged = {e for e in journaled if e <= start_epoch}
        self._redo = {e for e in journaled if e > start_epoch}
        self.restore_rng: dict[str, Any] | None = None  # RNG state to restore before training

    def on_log(self, metrics: dict[str, float], step: int) -> None:
        from poseops.tracking.runs import mlflow_key

        cur = self._pending.setdefault(step, {})
        for k, v in metrics.items():
            cur[mlflow_key(k)] = float(v)

    def attach_runner(self, runner: Any) -> None:
        sm = runner.snapshot_manager
        if self.best_metric is not None:
            sm._best_metric = self.best_metric  # resume: keep the best of the earlier epochs
        orig = sm.update

        def update(epoch: int, state_dict: dict, last: bool = False) -> None:
            state_dict[RNG_KEY] = rng_state()  # saved with the snapshot: a resume draws the same
            orig(epoch, state_dict, last)
            stop = None
            if self.steering is not None:
                stop = self.steering.after_epoch(runner, epoch, state_dict["metadata"]["metrics"])
                if last:
                    stop = None  # patience ran out at the last epoch: not an early stop
                elif stop is not None:
                    orig(epoch, state_dict, True)  # the stop epoch's snapshot: the run's last
            self.after_epoch(epoch, state_dict, sm)
            if stop is not None:
                self.commit()
                raise stop

        sm.update = update
        orig_epoch = runner._epoch

        def epoch_run(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("mode", "train") == "train":
                epoch = int(runner.current_epoch)
                self._pending.setdefault(epoch, {})["train.lr"] = float(runner.optimizer.param_groups[0]["lr"])
                if self.steering is not None:
                    self.steering.before_train_epoch(runner, epoch)
            if self.restore_rng is not None and kwargs.get("mode", "train") == "train":
                set_rng_state(self.restore_rng)  # where the interrupted run was after its epoch
                self.restore_rng = None
            return orig_epoch(*args, **kwargs)

        runner._epoch = epoch_run

    def after_epoch(self, epoch: int, state_dict: dict, sm: Any) -> None:
        saved = any(s.epochs == epoch for s in sm.snapshots())
        now = time.monotonic()
        durable = saved or epoch >= self.total or now - self._last_durable >= self.resume_interval_s
        resume = self.train_dir / RESUME_FILE
        if saved:
            resume.unlink(missing_ok=True)
        elif durable:  # a full state: a resume restarts after this epoch
            self._save_resume(state_dict)
        metrics = dict(self._pending.get(epoch, {}))
        self._uncommitted.append(epoch)
        if durable:
            self._last_durable = now
            self.commit()
        msg = f"epoch {epoch}/{self.total}"
        for key, label, unit in (
            ("train.total_loss", "train loss", ""),
            ("val.total_loss", "val loss", ""),
            ("val.rmse", "val rmse", " px"),
        ):
            if key in metrics:
                msg += f", {label} {metrics[key]:.4g}{unit}"
        log.info(msg)
        if self.callback is not None:
            try:
                self.callback(epoch, metrics)
            except BaseException:
                # the run ends here (pruned, or the callback failed): keep what it did, with a
                # state covering it, so a resume starts after the epochs logged now
                if self._uncommitted and not saved:
                    try:
                        self._save_resume(state_dict)
                    except Exception as e:  # noqa: BLE001 - the callback's error comes first
                        log.warning("resumable state after epoch %d not saved: %s", epoch, e)
                self.commit()
                raise

    def _save_resume(self, state_dict: dict) -> None:
        import torch

        resume = self.train_dir / RESUME_FILE
        tmp = resume.with_suffix(".tmp")
        torch.save(state_dict, tmp)
        os.replace(tmp, resume)

    def commit(self) -> None:
        """Send the metrics of the epochs run since the last resumable state, in order; an
        epoch already in the journal (logged before a resume) is not logged again."""
        for epoch in self._uncommitted:
            metrics = self._pending.pop(epoch, {})
            if epoch in self._logged:
                log.info("epoch %d is already logged to MLflow: not logged again", epoch)
                continue
            if epoch in self._redo:  # trained again after a resume fell back: new values
                log.info("epoch %d was trained again: its MLflow values are replaced", epoch)
                self.outbox.put("redo_metrics", metrics=metrics, step=epoch,
                                timestamp=int(time.time() * 1000))
                self._redo.discard(epoch)
            else:
                self.outbox.put("log_metrics", metrics=metrics, step=epoch,
                                timestamp=int(time.time() * 1000))
            self._logged.add(epoch)
            self.committed.append(epoch)
        self._uncommitted.clear()


@contextmanager
def hook_runner(session: TrainingSession):
    """Let the session see DLC's runner (snapshot manager) built inside apis.training.train."""
    import deeplabcut.pose_estimation_pytorch.apis.training as dlc_training

    orig = dlc_training.build_training_runner

    def build(*args: Any, **kwargs: Any) -> Any:
        runner = orig(*args, **kwargs)
        session.attach_runner(runner)
        return runner

    dlc_training.build_training_runner = build
    try:
        yield
    finally:
        dlc_training.build_training_runner = orig


@contextmanager
def file_log(path: Path):
    """Also write INFO logs (DLC's and ours) to the train log file."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


# --------------------------------------------------------------------------------------------
# Resume: saved states, learning_stats, replay
# --------------------------------------------------------------------------------------------


def _looks_corrupt(path: Path) -> bool:
    """True when the file itself is damaged: empty, or not a whole zip archive (torch.save's
    format; a kill during the write leaves it without its central directory) or one whose CRCs
    fail. An intact archive that does not load is incompatible (another torch/DLC), not corrupt."""
    import zipfile

    try:
        if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
            return True
        with zipfile.ZipFile(path) as z:
            return z.testzip() is not None
    except (OSError, zipfile.BadZipFile, EOFError):
        return True


def _state_epoch(path: Path) -> int | None:
    """Epoch stored in a saved training state; None when the file is corrupt (DLC writes
    snapshots in place, so a kill during torch.save leaves a truncated file). An intact file
    that cannot be loaded here (e.g. saved by another torch version) stops with a PoseopsError:
    it is the training's progress, not garbage."""
    import torch

    try:
        snap = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - corrupt or incompatible, told apart below
        if _looks_corrupt(path):
            log.warning("training state %s is corrupt (%s)", path, type(e).__name__)
            return None
        cause = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise PoseopsError(
            f"training state cannot be loaded here, the file is intact and kept ({cause}); "
            "was it saved by another torch/DeepLabCut version? Resume with that version, or "
            "move the file away to resume from an earlier state", file=path) from e
    return int((snap.get("metadata") or {}).get("epoch", 0))


def _set_aside_corrupt(path: Path) -> Path:
    """Rename a corrupt state to ``<name>.corrupt`` (DLC no longer lists it; never deleted)."""
    dest = path.with_name(path.name + ".corrupt")
    n = 1
    while dest.exists():
        dest, n = path.with_name(f"{path.name}.{n}.corrupt"), n + 1
    os.replace(path, dest)
    log.warning("moved the corrupt training state %s aside to %s", path, dest.name)
    return dest


def latest_state(train_dir: Path) -> tuple[Path | None, int]:
    """The most advanced readable training state in a DLC train folder: (path, epoch).
    Corrupt snapshot files (a kill while saving) are renamed to ``*.corrupt`` so DLC never lists
    them; an intact one that does not load here stops the resume (PoseopsError, file kept)."""
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    candidates = [s.path for s in list_snapshots(train_dir, "snapshot", best_in_last=False)]
    if (train_dir / RESUME_FILE).exists():
        candidates.append(train_dir / RESUME_FILE)
    found = []
    for path in candidates:
        epoch = _state_epoch(path)
        if epoch is None:
            _set_aside_corrupt(path)
        else:
            found.append((epoch, path))
    if not found:
        return None, 0
    epoch, path = max(found, key=lambda t: (t[0], t[1].name == RESUME_FILE))
    return path, epoch


def truncate_learning_stats(train_dir: Path, epoch: int) -> pd.DataFrame:
    """Drop rows of epochs after the resume point (DLC's CSV logger reloads the file)."""
    stats = read_learning_stats(train_dir)
    if len(stats) and (stats["step"] > epoch).any():
        stats = stats[stats["step"] <= epoch]
        if stats.empty:
            (Path(train_dir) / "learning_stats.csv").unlink()
        else:
            write_csv(stats, Path(train_dir) / "learning_stats.csv")
    return stats


def replay_uncommitted(outbox: Any, stats: pd.DataFrame, upto: int) -> None:
    """Epochs whose state was saved but whose metrics never reached the outbox (a kill between
    the two): commit them from learning_stats.csv (the same values DLC logged)."""
    from poseops.tracking.runs import mlflow_key

    done = {int(op["step"]) for op in outbox._ops if op["op"] == "log_metrics"}
    for _, row in stats.iterrows():
        step = int(row["step"])
        if step <= upto and step not in done:
            metrics = {mlflow_key(k): float(v) for k, v in row.items() if k != "step" and pd.notna(v)}
            outbox.put("log_metrics", metrics=metrics, step=step, timestamp=int(time.time() * 1000))


def best_so_far(stats: pd.DataFrame, params: TrainParams) -> float | None:
    """The best key metric of the epochs in learning_stats (None: not logged yet)."""
    col = f"metrics/{params.key_metric}"
    if col not in stats.columns or stats[col].dropna().empty:
        return None
    return float(stats[col].max() if params.key_metric_asc else stats[col].min())


def offline_init(loader: Any, path: Path, seed: int) -> Path:
    """Random-init weights saved as a snapshot: DLC then skips the hub download (NOTES.md).

    Seeded: these weights replace the ones DLC draws after its own seeding, so an unseeded init
    would make two runs with the same ``seed`` differ from the first epoch."""
    import torch
    from deeplabcut.pose_estimation_pytorch import utils as dlc_utils
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    dlc_utils.fix_seeds(seed)
    model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
    torch.save({"model": model.state_dict()}, path)
    return path


def run_dlc_training(
    loader: Any, params: TrainParams, session: TrainingSession, train_dir: Path, state: Path | None,
    start_epoch: int, init: Path | None = None,
) -> None:
    """Run DLC's training loop from ``start_epoch`` (``state``: the saved state to resume from;
    None: a fresh start, from ``init`` (a warm start's weights-only snapshot), else a seeded
    random init unless ``params.init_mode`` is imagenet), with the session hooked in and the
    logs also written to ``train_dir/train.txt``."""
    from deeplabcut.pose_estimation_pytorch import utils as dlc_utils
    from deeplabcut.pose_estimation_pytorch.apis.training import train
    from deeplabcut.pose_estimation_pytorch.task import Task

    from poseops.dlc.inference import per_image_paf_assembly
    from poseops.tracking.hooks import register_dlc_logger
    from poseops.train.augment import train_transform

    logger_type = register_dlc_logger()
    # DLC adds the snapshot's epoch to train_settings.epochs when resuming
    loader.model_cfg.set_nested("train_settings.epochs", params.epochs - start_epoch)
    snapshot_path = state if state is not None else init
    if snapshot_path is None and params.init_mode == "random":
        snapshot_path = offline_init(loader, train_dir / INIT_FILE, params.seed)
    dlc_utils.fix_seeds(params.seed)
    session.restore_rng = saved_rng_state(state)  # a resume draws what the first run would have
    device = params.device
    # per-epoch validation of PAF models: one image's peak pairs at a time (bounded memory)
    with file_log(train_dir / "train.txt"), hook_runner(session), per_image_paf_assembly():
        train(
            loader=loader,
            run_config=loader.model_cfg,
            task=Task(loader.model_cfg.get("method", "bu")),
            device=device,
            logger_config={"type": logger_type, "sink": session},
            snapshot_path=str(snapshot_path) if snapshot_path else None,
            max_snapshots_to_keep=params.max_snapshots,
            transform=train_transform(loader.model_cfg["data"]["train"], params),  # None: DLC's
        )


# --------------------------------------------------------------------------------------------
# Versions / fingerprints
# --------------------------------------------------------------------------------------------


def frame_digest(df: pd.DataFrame) -> str:
    """md5 of a table's content (row order and column names included)."""
    h = hashlib.md5(usedforsecurity=False)
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()


def bytes_md5(data: bytes) -> str:
    """md5 of a file's bytes: what DVC records for a file output (so tags match dvc.lock)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_training_inputs(labels_path: Path, split_path: Path
                         ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(consensus labels, split, {path: md5 of the bytes parsed}). The md5s come from the bytes
    read here, not dvc.lock, which may still hold the previous run's while `dvc repro` runs."""
    for path in (labels_path, split_path):
        if not path.exists():
            raise PoseopsError("input missing (run the earlier stages: dvc repro)", file=path)
    labels_bytes, split_bytes = labels_path.read_bytes(), split_path.read_bytes()
    labels = pd.read_parquet(io.BytesIO(labels_bytes))
    split = pd.read_csv(io.BytesIO(split_bytes))
    md5s = {str(labels_path): bytes_md5(labels_bytes), str(split_path): bytes_md5(split_bytes)}
    return labels, split, md5s


def dataset_version(labels: pd.DataFrame, split: pd.DataFrame, recorded: dict[str, str] | None = None) -> str:
    """Short hash identifying (labels, split): from the md5s of the files read when given
    (``recorded``: {path: md5 of the bytes}), else from the tables' content."""
    parts = sorted(recorded.values()) if recorded else [frame_digest(labels), frame_digest(split)]
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:12]


def fingerprint(params: TrainParams, version: str) -> str:
    """md5 of the params that shape the model, and the dataset version: an earlier training
    in the workdir with the same fingerprint is resumed."""
    d = dataclasses.asdict(params)
    # settings that change how a run is executed or tracked, not the model it trains
    for k in ("device", "tracking_timeout_s", "resume_interval_s", "experiment", "registered_model",
              "run_name",
              "metrics", "system_metrics", "system_metrics_interval_s", "dataloader_workers"):
        d.pop(k, None)
    # issue 22's settings at their defaults leave the fingerprint as it was (an interrupted
    # training from before them still resumes)
    for k, default in (("init", None), ("freeze_backbone_epochs", 0), ("finetune_lr", None),
                       ("early_stopping_patience", None), ("early_stopping_min_delta", 0.0),
                       ("lr_on_plateau", None)):
        if k in d and d[k] == default:
            d.pop(k)
    return hashlib.md5(json.dumps([d, version], sort_keys=True, default=str).encode(), usedforsecurity=False).hexdigest()
