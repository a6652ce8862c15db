"""`poseops sweep`: hyperparameter sweeps with Optuna, shared across GPU servers, one MLflow run each.

Every worker (one per GPU, on any number of machines) runs the same command against the same study
name and storage; Optuna hands out trials, and each trial trains the real DeepLabCut model with
``poseops.train.trainer.train_model``. The validation error is reported after every epoch, so the pruner
(successive halving by default; median / percentile / hyperband / patience) stops hopeless trials
early. The test split is never used to choose, and no trial run carries a test error (a number
seen on every trial is a number chosen on): ``poseops sweep --promote`` measures it once, for the
promoted (best) trial, whose working copy the sweep keeps for that (``sweep.log_test``).

MLflow layout: one parent run per study (its id is stored in the study's user attrs, so every
worker's trials nest under it), one nested child run ``trial-<n>`` per trial (created by the
training logger; the sweep adds the trial's state, params and final metrics), and the study
summary (best trial, importances, history and parallel-coordinate figures) on the parent.

Robustness: the study is created exclusively (``create_study`` without ``load_if_exists``), so
exactly one worker makes the MLflow parent; storage set-up is retried (concurrent table creation
races on an empty database). With an RDB storage (SQLite, PostgreSQL) every running trial sends a
heartbeat; a worker that dies mid-trial leaves a stale trial that the next worker marks FAIL, and
``RetryHeartbeatStaleTrialCallback`` re-queues it with the same parameters. A worker with nothing
left to start waits for the running trials (re-running dead workers' ones), then writes the
summary; the last one closes the MLflow parent run.

The objective is the best validation error over a trial's epochs (DLC keeps the snapshot with the
lowest validation error). DLC reports NaN while no prediction matches a label (young models); the
sweep counts such an epoch as the image diagonal, the worst possible error.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import random
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.loader import load_params, params_path, section
from poseops.core.errors import PoseopsError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

SECTION = "sweep"
PRUNERS = ("none", "median", "percentile", "sha", "hyperband", "patience")
SAMPLERS = ("tpe", "random")

# study user attrs (shared by every worker through the storage)
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_SPACE = "poseops_space_hash"
# trial user attrs
ATTR_EPOCHS = "epochs_trained"
ATTR_CURVE = "val_curve"
ATTR_WORKER = "worker"
ATTR_GPU = "cuda_visible_devices"  # the device(s) the worker was pinned to (--gpus, SLURM)
# MLflow tags
TAG_STUDY = "poseops.sweep.study"
TAG_ROLE = "poseops.sweep.role"
TAG_TRIAL = "poseops.sweep.trial"
TAG_STATE = "poseops.sweep.state"
TAG_RETRY_OF = "poseops.sweep.retry_of"
TAG_WORKER = "poseops.sweep.worker"
TAG_STORAGE = "poseops.sweep.storage"
TAG_PROMOTED = "poseops.sweep.promoted_trial"  # parent run: the trial whose params were promoted

TrainFn = Callable[..., Any]


@dataclass
class SlurmParams:
    """params.yaml ``sweep.slurm:``: the job array ``poseops sweep --slurm`` submits (submitit)."""

    n_workers: int = 4  # array tasks = sweep workers, each on its own GPU
    partition: str | None = None  # --partition (null: the cluster's default)
    gpus_per_task: int = 1  # --gpus-per-node of each task (one worker uses one GPU)
    cpus_per_task: int = 8  # data loading workers + the training process
    mem_gb: int = 32  # --mem per task
    time_min: int = 720  # --time (minutes); a task killed at its limit has its trial retried
    array_parallelism: int | None = None  # at most N tasks at once (null: n_workers)
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint, e.g. a100
    job_name: str = "poseops-sweep"
    setup: list[str] = field(default_factory=list)  # shell lines before the worker, e.g.
    # ["module load cuda/12.4", "source .venv/bin/activate"]
    additional: dict[str, Any] = field(default_factory=dict)  # more sbatch options
    cluster: str | None = None  # null: SLURM if sbatch is here; "local": this machine (trying)
    folder: str = "data/sweep/slurm"  # submitit's job files and the workers' logs

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise PoseopsError(f"sweep.slurm.n_workers must be >= 1, not {self.n_workers}")
        if self.cluster not in (None, "slurm", "local", "debug"):
            raise PoseopsError(
                f"sweep.slurm.cluster must be null, slurm, local or debug, not {self.cluster!r}")


@dataclass
class SweepParams:
    """params.yaml ``sweep:``: the search space, the study and how workers share it."""

    study_name: str | None = None  # None: "poseops-<hash of search space, train base, data>"
    storage: str = "sqlite:///data/sweep/optuna.db"  # postgresql+psycopg://..., or a journal file
    n_trials: int = 12  # total over all workers, complete + pruned trials
    sampler: str = "tpe"  # tpe | random
    seed: int = 0
    n_startup_trials: int = 4  # random trials before TPE models / before median pruning
    pruner: str = "sha"  # none | median | percentile | sha | hyperband | patience
    n_warmup_steps: int = 2  # median/percentile: the first epoch at which a trial can be pruned
    percentile: float = 25.0  # percentile: keep a trial only while among the best N % at its epoch
    patience: int | None = None  # stop after N epochs without improvement (wraps median/hyperband)
    min_delta: float = 0.0  # patience: improvement smaller than this (px) does not count
    min_resource: int = 2  # sha/hyperband: epochs every trial gets
    reduction_factor: int = 3  # sha/hyperband: 1/reduction_factor of the trials go on at each rung
    metric: str = "val.rmse"  # per-epoch validation metric the trial reports (lower is better)
    lr: list[float] = field(default_factory=lambda: [1e-4, 1e-2])  # log-uniform bounds
    batch_size: list[int] = field(default_factory=lambda: [4, 8, 16])  # choices
    epochs: int | list[int] = 10  # per-trial budget (int) or choices
    net_type: list[str] | None = None  # choices, None = keep train.net_type
    augmentation: dict[str, list[Any]] = field(default_factory=dict)  # train key -> choices
    heartbeat_interval: int = 60  # seconds between heartbeats of a running trial (RDB storage)
    grace_period: int = 180  # a trial silent this long is failed and retried
    max_retry: int = 2  # retries of a failed (killed) trial
    max_consecutive_failures: int = 3  # a worker stops when its trials keep failing
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # points tried first (train keys)
    log_test: bool = True  # --promote: test error of the promoted trial, once (keeps the best
    # trial's working copy for it); trial runs never log a test error
    keep_trial_dirs: bool = False  # keep every trial's DLC working copy (models) on disk
    experiment: str | None = None  # MLflow experiment; None = train.experiment (trials log there)
    out: str = "data/sweep"  # best_params.yaml, summary.json, figures/, trials/
    poll_seconds: float = 5.0  # drain: how often to look at other workers' running trials
    slurm: SlurmParams = field(default_factory=SlurmParams)  # `poseops sweep --slurm`

    def __post_init__(self) -> None:
        if self.pruner not in PRUNERS:
            raise PoseopsError(f"sweep.pruner must be one of {PRUNERS}, not {self.pruner!r}")
        if self.sampler not in SAMPLERS:
            raise PoseopsError(f"sweep.sampler must be one of {SAMPLERS}, not {self.sampler!r}")
        if len(self.lr) != 2 or not 0 < self.lr[0] < self.lr[1]:
            raise PoseopsError(f"sweep.lr must be [low, high] with 0 < low < high, not {self.lr}")
        if not self.batch_size:
            raise PoseopsError("sweep.batch_size needs at least one choice")
        if self.n_trials < 1:
            raise PoseopsError(f"sweep.n_trials must be >= 1, not {self.n_trials}")
        if not 0 < self.percentile < 100:
            raise PoseopsError(f"sweep.percentile must be in (0, 100), not {self.percentile}")
        if self.pruner == "patience" and not self.patience:
            raise PoseopsError("sweep.pruner 'patience' needs sweep.patience >= 1")

    @property
    def max_epochs(self) -> int:
        return max(self.epochs) if isinstance(self.epochs, list) else int(self.epochs)

    @property
    def best_params_path(self) -> Path:
        return Path(self.out) / "best_params.yaml"

    @property
    def summary_path(self) -> Path:
        return Path(self.out) / "summary.json"


@dataclass
class TrainInputs:
    """What every trial trains on: the consensus labels table, the split table, the DLC project."""

    labels: Any  # pandas DataFrame (consensus labels, poseops.core.schema columns)
    split: Any  # pandas DataFrame (image, video, group, split)
    source_project: Path


@dataclass
class WorkerReport:
    """What one worker did, and the study as it stood when the worker left."""

    study_name: str
    parent_run_id: str
    trials_run: list[int]
    counts: dict[str, int]
    best: dict[str, Any] | None


# --------------------------------------------------------------------------------------------
# search space, sampler, pruner (pure)


def space_hash(p: SweepParams, train_base: Mapping[str, Any], data: str = "") -> str:
    """Fingerprint of what a trial means: search space, budget, metric, the fixed train params
    and the data (``data``: a digest of the labels and split tables)."""
    keys = ("lr", "batch_size", "epochs", "net_type", "augmentation", "metric", "enqueue")
    doc: dict[str, Any] = {k: getattr(p, k) for k in keys}
    doc["train"] = {k: v for k, v in sorted(train_base.items()) if k != "device"}
    doc["data"] = data
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def study_name_for(p: SweepParams, fingerprint: str) -> str:
    return p.study_name or f"poseops-{fingerprint}"


def table_digest(*tables: Any) -> str:
    """Content digest of pandas tables (row order and values), for the study fingerprint."""
    import pandas as pd

    h = hashlib.sha256()
    for df in tables:
        if df is None:
            continue
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:12]


def suggest(trial: optuna.Trial, p: SweepParams) -> dict[str, Any]:
    """Sample one point of the search space; keys are ``train:`` keys of params.yaml."""
    out: dict[str, Any] = {
        "lr": trial.suggest_float("lr", p.lr[0], p.lr[1], log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(p.batch_size)),
    }
    if isinstance(p.epochs, list):
        out["epochs"] = trial.suggest_categorical("epochs", list(p.epochs))
    else:
        out["epochs"] = int(p.epochs)
    if p.net_type:
        out["net_type"] = trial.suggest_categorical("net_type", list(p.net_type))
    for key, choices in p.augmentation.items():
        out[key] = trial.suggest_categorical(key, list(choices))
    return out


def build_sampler(p: SweepParams, seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    if p.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=p.n_startup_trials)


def no_improvement(values: list[float], patience: int, min_delta: float = 0.0) -> bool:
    """The guide's stop rule (lower is better): True when the last ``patience`` evaluations did
    not beat the best earlier value by at least ``min_delta``.

    Unlike Optuna's PatientPruner (which stops only when the recent values are all *worse*
    than the earlier best), a plateau counts as no improvement."""
    vals = [v for v in values if v == v]  # NaN evaluations carry no information
    if len(vals) <= patience:
        return False
    return not min(vals[-patience:]) < min(vals[:-patience]) - min_delta


def build_pruner(p: SweepParams) -> optuna.pruners.BasePruner:
    """median / percentile (a trial goes on while its best error so far is among the best
    ``percentile`` % of the finished trials' errors at the same epoch) / sha (successive halving:
    rungs at min_resource * reduction_factor**k epochs, the best 1/reduction_factor go on) /
    hyperband (several sha brackets) / patience (the guide's "no improvement for N evaluations ->
    stop"). ``patience`` set with another pruner stops a trial only when both agree (it has
    stalled *and* it is worse than the others)."""
    import optuna

    if p.pruner == "none":
        return optuna.pruners.NopPruner()
    if p.pruner == "patience":
        return _patience_pruner(None, int(p.patience), p.min_delta)
    base: optuna.pruners.BasePruner
    if p.pruner == "median":
        base = optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    elif p.pruner == "percentile":
        base = optuna.pruners.PercentilePruner(
            p.percentile, n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    elif p.pruner == "sha":
        base = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    else:
        base = optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=p.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.patience:
        return _patience_pruner(base, int(p.patience), p.min_delta)
    return base


def _patience_pruner(
    wrapped: optuna.pruners.BasePruner | None, patience: int, min_delta: float
) -> optuna.pruners.BasePruner:
    import optuna

    class PatiencePruner(optuna.pruners.BasePruner):
        """Stop a trial after ``patience`` evaluations without improvement (see no_improvement),
        optionally only when ``wrapped`` agrees."""

        def __init__(self) -> None:
            self.wrapped = wrapped
            self.patience = patience
            self.min_delta = min_delta

        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            iv = trial.intermediate_values
            values = [iv[k] for k in sorted(iv)]
            if not no_improvement(values, self.patience, self.min_delta):
                return False
            return self.wrapped is None or self.wrapped.prune(study, trial)

    return PatiencePruner()


def check_enqueue(p: SweepParams) -> None:
    """Enqueued points must name searched keys only (lr, batch_size, ...)."""
    known = {"lr", "batch_size", *p.augmentation}
    if isinstance(p.epochs, list):
        known.add("epochs")
    if p.net_type:
        known.add("net_type")
    for i, point in enumerate(p.enqueue):
        if not isinstance(point, dict) or set(point) - known:
            raise PoseopsError(
                f"sweep.enqueue[{i}] = {point!r}: a mapping of searched keys {sorted(known)}"
            )


def check_metric(p: SweepParams) -> None:
    """The study minimizes ``sweep.metric``: a higher-is-better one (DLC's multi-animal mAP /
    mAR) would pick the worst trial."""
    name = p.metric.lower().rsplit(".", 1)[-1]
    if name.startswith(("map", "mar")):
        raise PoseopsError(
            f"sweep.metric {p.metric!r} is higher-is-better; the sweep minimizes an error: use "
            "val.rmse (multi-animal projects: DLC's rmse after matching animals)")


def check_augmentation_keys(p: SweepParams, train_fields: set[str]) -> None:
    unknown = [k for k in p.augmentation if k not in train_fields]
    if unknown:
        raise PoseopsError(
            f"sweep.augmentation names unknown train key(s) {unknown}; train has {sorted(train_fields)}"
        )
    empty = [k for k, v in p.augmentation.items() if not isinstance(v, list) or not v]
    if empty:
        raise PoseopsError(f"sweep.augmentation: give a non-empty list of choices for {empty}")


# --------------------------------------------------------------------------------------------
# storage and study (race-free)


def redact(url: str) -> str:
    """The storage URL without its password (for logs and MLflow tags)."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as its scheme only
        return url.split("://", 1)[0] + "://..."


def is_rdb_url(url: str) -> bool:
    return "://" in url


def open_storage(p: SweepParams, *, attempts: int = 8) -> optuna.storages.BaseStorage:
    """RDBStorage (heartbeat + retry of failed trials) for a database URL, JournalStorage for a
    file path. Retries: workers that start together on an empty database race to create tables."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = p.storage
    if not is_rdb_url(url):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        log.warning(
            "journal storage %s has no heartbeat: a killed worker's trial stays RUNNING "
            "(use an RDB URL for automatic fail-and-retry)",
            path,
        )
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            _quiet_experimental_warnings()  # heartbeat_interval & co. are "experimental"
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=p.heartbeat_interval,
                grace_period=p.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=p.max_retry
                ),
            )
        except SQLAlchemyError as e:  # e.g. "table studies already exists" from a sibling
            last = e
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise PoseopsError(f"cannot open Optuna storage {redact(url)}: {last}")


def open_study(
    p: SweepParams,
    storage: optuna.storages.BaseStorage,
    name: str,
    fingerprint: str,
    make_parent: Callable[[str], tuple[str, str]],
    *,
    wait_s: float = 120.0,
) -> tuple[optuna.Study, str]:
    """Create the study exclusively or join it; returns (study, MLflow parent run id).

    Only the worker whose ``create_study`` succeeds makes the MLflow parent run
    (``make_parent(study_name) -> (run_id, experiment_id)``) and stores its id in the study; the
    others wait for that attribute. A study made from another search space is an error."""
    import optuna

    pruner = build_pruner(p)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="minimize",
            sampler=build_sampler(p, p.seed),
            pruner=pruner,
        )
        study.set_user_attr(ATTR_SPACE, fingerprint)
        for point in p.enqueue:  # e.g. the current train: params as a baseline
            study.enqueue_trial(point, skip_if_exists=True)
        run_id, exp_id = make_parent(name)
        study.set_user_attr(ATTR_EXPERIMENT, exp_id)
        study.set_user_attr(ATTR_PARENT, run_id)
        log.info("created study %s (MLflow parent run %s)", name, run_id)
        return study, run_id
    except optuna.exceptions.DuplicatedStudyError:
        pass
    # Joining: a different seed per worker, or all workers would sample the same first points.
    seed = p.seed + 1 + os.getpid() % 100_000
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=build_sampler(p, seed), pruner=pruner
    )
    deadline = time.monotonic() + wait_s
    while ATTR_PARENT not in study.user_attrs:
        if time.monotonic() > deadline:
            raise PoseopsError(
                f"study {name!r} has no MLflow parent run after {wait_s:.0f} s "
                "(the worker that created it died early?): use a new sweep.study_name"
            )
        time.sleep(0.5)
    theirs = study.user_attrs.get(ATTR_SPACE)
    if theirs != fingerprint:
        raise PoseopsError(
            f"study {name!r} in {redact(p.storage)} was created with another search space or "
            f"train base ({theirs} != {fingerprint}): use the same params.yaml on every worker, "
            "or a new sweep.study_name"
        )
    log.info("joined study %s (MLflow parent run %s)", name, study.user_attrs[ATTR_PARENT])
    return study, study.user_attrs[ATTR_PARENT]


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    from optuna.trial import TrialState

    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return counts


def budget_used(counts: Mapping[str, int]) -> int:
    """Trials that count toward ``n_trials``: finished ones plus those running or queued
    (failed trials do not count: their retries do)."""
    return sum(counts[s] for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))


# --------------------------------------------------------------------------------------------
# MLflow (parent + per-trial bookkeeping)


def make_parent_factory(p: SweepParams, experiment: str) -> Callable[[str], tuple[str, str]]:
    def make_parent(study_name: str) -> tuple[str, str]:
        client = _client()
        tags = {TAG_STUDY: study_name, TAG_ROLE: "parent", TAG_STORAGE: redact(p.storage)}
        outer = os.environ.get("MLFLOW_RUN_ID")  # `mlflow run -e sweep`: its run is the parent
        if outer:
            run = client.get_run(outer)
            for k, v in tags.items():
                client.set_tag(outer, k, v)
        else:
            from poseops.tracking.runs import ensure_experiment, tracking_uri

            exp_id = ensure_experiment(client, experiment, tracking_uri())
            run = client.create_run(exp_id, run_name=study_name, tags=tags)
        skip = {"storage", "poll_seconds", "experiment", "slurm"}
        params = [
            _param(f"sweep.{k}", v) for k, v in dataclasses.asdict(p).items() if k not in skip
        ]
        client.log_batch(run.info.run_id, params=params)
        return run.info.run_id, run.info.experiment_id

    return make_parent


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    from poseops.tracking.runs import quiet_env, tracking_uri

    quiet_env()
    return MlflowClient(tracking_uri=tracking_uri())


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, json.dumps(value) if isinstance(value, list | dict) else str(value))


def find_child_run(experiment_id: str | None, study_name: str, number: int) -> str | None:
    """The MLflow run of trial ``number`` (tagged by the training logger), or None."""
    client = _client()
    exp_ids = (
        [experiment_id] if experiment_id else [e.experiment_id for e in client.search_experiments()]
    )
    runs = client.search_runs(
        exp_ids,
        filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_TRIAL}` = '{number}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def finish_child_run(
    study: optuna.Study,
    parent_run_id: str,
    trial: optuna.trial.FrozenTrial | optuna.Trial,
    state: str,
    sampled: Mapping[str, Any],
    curve: list[float],
    epochs: int,
    extra_metrics: Mapping[str, float] | None = None,
    run_id: str | None = None,
) -> str:
    """Tag the trial's child run with its state and log sampled params and final metrics; create
    the child run if the training function did not (e.g. it failed before logging)."""
    from mlflow.entities import Metric, RunTag

    client = _client()
    exp_id = study.user_attrs.get(ATTR_EXPERIMENT)
    run_id = run_id or find_child_run(exp_id, study.study_name, trial.number)
    if run_id is None:
        exp_id = exp_id or client.get_run(parent_run_id).info.experiment_id
        run_id = client.create_run(
            exp_id,
            run_name=f"trial-{trial.number}",
            tags=_child_tags(study, trial.number, parent_run_id),
        ).info.run_id
    run = client.get_run(run_id)
    now = int(time.time() * 1000)
    new_params = [_param(k, v) for k, v in sampled.items() if k not in run.data.params]
    metrics = [Metric("epochs_trained", float(epochs), now, 0)]
    if curve:
        metrics.append(Metric("best_val_error", float(min(curve)), now, 0))
    for k, v in (extra_metrics or {}).items():
        if v is not None and math.isfinite(float(v)):
            metrics.append(Metric(k, float(v), now, 0))
    tags = [RunTag(TAG_STATE, state)]
    client.log_batch(run_id, metrics=metrics, params=new_params, tags=tags)
    if run.info.status == "RUNNING":
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        client.set_terminated(run_id, status=status)
    return run_id


def _child_tags(study: optuna.Study, number: int, parent_run_id: str) -> dict[str, str]:
    return {
        "mlflow.parentRunId": parent_run_id,
        TAG_STUDY: study.study_name,
        TAG_TRIAL: str(number),
        TAG_ROLE: "trial",
        TAG_WORKER: worker_name(),
    }


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------------------------
# the objective


def make_objective(
    p: SweepParams,
    study: optuna.Study,
    parent_run_id: str,
    train_base: Any,
    inputs: TrainInputs,
    train_fn: TrainFn,
    *,
    device: str | None = None,
) -> Callable[[optuna.Trial], float]:
    """One trial = one real training run (``train_fn`` has ``poseops.train.trainer.train_model``'s
    signature), validation error reported each epoch, pruned by the study's pruner.

    Returns the lowest validation error over the trial's epochs (the snapshot DLC keeps when it
    selects on validation). No test error is computed or logged here (see
    :func:`report_promoted_test`)."""
    import optuna

    penalty = nan_penalty(inputs.labels)

    def objective(trial: optuna.Trial) -> float:
        sampled = suggest(trial, p)
        overrides = dict(sampled)
        if device:
            overrides["device"] = device
        params = dataclasses.replace(train_base, **overrides)
        trial.set_user_attr(ATTR_WORKER, worker_name())
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            trial.set_user_attr(ATTR_GPU, os.environ["CUDA_VISIBLE_DEVICES"])
        curve: list[float] = []  # validation error of each evaluated epoch
        epochs = [0]  # epochs trained so far (a list: written by the callback)

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            epochs[0] = int(epoch)
            trial.set_user_attr(ATTR_EPOCHS, int(epoch))
            if p.metric not in metrics:  # not an evaluation epoch (train.eval_interval > 1)
                return
            raw = float(metrics[p.metric])
            # DLC reports NaN when the model places no keypoint (early epochs, hopeless lr):
            # as bad as it gets, so the pruner and the sampler see the worst error, not a gap
            value = raw if math.isfinite(raw) else penalty
            curve.append(value)
            trial.set_user_attr(ATTR_CURVE, curve)
            trial.report(value, epoch)
            log.info("trial %d epoch %d: %s = %.4g", trial.number, epoch, p.metric, raw)
            # pruning saves the epochs still to come: at the last one the trial is complete
            if epoch < params.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {p.metric} {value:.3f}")

        workdir = Path(p.out) / "trials" / f"trial-{trial.number}"
        if workdir.exists():  # left by an earlier study with the same trial numbers
            remove_trial_dir(workdir, p)
        tags = _child_tags(study, trial.number, parent_run_id)
        tags.pop("mlflow.parentRunId")
        retry_of = _trial_by_number(study, trial.number).system_attrs.get("failed_trial")
        if retry_of is not None:
            tags[TAG_RETRY_OF] = str(retry_of)
        state = "fail"
        extra: dict[str, float] = {}
        run_id = None
        try:
            result = train_fn(
                params,
                inputs.labels,
                inputs.split,
                inputs.source_project,
                workdir,
                epoch_callback=on_epoch,
                mlflow_parent_run_id=parent_run_id,
                run_name=f"trial-{trial.number}",
                tags=tags,
            )
            if not curve:
                raise PoseopsError(f"training reported no {p.metric!r} (sweep.metric) in any epoch")
            extra = _result_metrics(result)
            run_id = getattr(result, "run_id", None)
            state = "complete"
            return min(curve)
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            run_id = run_id or _run_id_from_workdir(workdir)
            try:
                finish_child_run(
                    study, parent_run_id, trial, state, sampled, curve, epochs[0], extra, run_id
                )
            except Exception as e:  # noqa: BLE001 - tracking trouble must not hide the trial's
                log.warning("trial %d: MLflow bookkeeping failed: %s", trial.number, e)
            if not p.keep_trial_dirs:
                try:
                    tidy_trial_dirs(study, p, trial.number,
                                    min(curve) if state == "complete" else None)
                except Exception as e:  # noqa: BLE001 - storage trouble: just drop this copy
                    log.warning("trial %d: keeping the best trial's copy failed: %s",
                                trial.number, e)
                    remove_trial_dir(workdir, p)

    return objective


def info_test_metrics(result: Any, inputs: TrainInputs, device: str) -> dict[str, float]:
    """Test error of a finished trial's selected snapshot: ``test.mean_px`` (DLC's "rmse": mean
    distance) and ``test.rmse_px``; multi-animal projects also ``test.mAP`` and ``test.mAR``
    (DLC's, after matching predictions to labeled animals as ``poseops evaluate`` does). Only
    for the promoted trial, after the choice (:func:`report_promoted_test`); never on a trial
    run."""
    images = (getattr(result, "images", None) or {}).get("test") or []
    snapshot = getattr(result, "snapshot", None)
    if not images or snapshot is None:
        return {}
    from poseops.evaluate import metrics as M
    from poseops.evaluate.evaluation import predict

    multi = M.is_multianimal(inputs.labels)
    try:
        preds = predict(
            result.pytorch_config_path,
            snapshot,
            Path(result.config_path).parent,
            list(images),
            device=device,
            multi_animal=multi,
        )
        return split_test_metrics(inputs.labels, preds, inputs.split, Path(result.config_path))
    except Exception as e:  # noqa: BLE001 - information only: never fail a trial for it
        log.warning("test error not logged: %s", e)
        return {}


def split_test_metrics(labels: Any, preds: Any, split: Any, config_path: Path | None = None,
                 ) -> dict[str, float]:
    """``test.mean_px`` / ``test.rmse_px`` of the predictions of the split's test images (the
    evaluate stage's errors table). Multi-animal labels: the assemblies are matched to the
    labeled animals first (evaluate's matching, config order of the individuals from
    ``config_path``) and DLC's own ``test.mAP`` / ``test.mAR`` are added."""
    import numpy as np

    from poseops.core import schema as S
    from poseops.evaluate import metrics as M
    from poseops.evaluate.evaluation import _config_individuals, _config_pcutoff

    test = split[split[S.SPLIT] == S.TEST]
    preds = preds[preds[S.IMAGE].isin(test[S.IMAGE])]
    out: dict[str, float] = {}
    if M.is_multianimal(labels):
        individuals = _config_individuals(config_path) if config_path else None
        preds = M.match_predictions(labels, preds, individuals)
        images = sorted(set(test[S.IMAGE]) & set(preds[S.IMAGE]))
        pcutoff = _config_pcutoff(config_path) if config_path else 0.6
        dlc = M.dlc_multianimal_metrics(labels, preds, images, pcutoff, individuals)
        out.update({f"test.{k}": dlc[k] for k in ("mAP", "mAR") if np.isfinite(dlc[k])})
    err = M.compute_errors(labels, preds, test)[S.ERROR_PX].dropna().to_numpy()
    if not len(err):
        return out
    return {"test.mean_px": float(err.mean()), "test.rmse_px": float(np.sqrt((err**2).mean())),
            **out}


def nan_penalty(labels: Any) -> float:
    """Validation error (px) that stands for a NaN one: the largest image diagonal (no
    prediction is as wrong as the farthest one); 1e4 px when the table has no image sizes."""
    from poseops.core import schema as S

    try:
        w = labels[S.WIDTH].astype(float)
        h = labels[S.HEIGHT].astype(float)
        diag = float(((w**2 + h**2) ** 0.5).max())
    except (KeyError, TypeError, ValueError, AttributeError):
        return 1e4
    return diag if math.isfinite(diag) and diag > 0 else 1e4


def _run_id_from_workdir(workdir: Path) -> str | None:
    """The training's MLflow run id from ``<workdir>/run.json`` (written by train_model)."""
    try:
        return json.loads((workdir / "run.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def _result_metrics(result: Any) -> dict[str, float]:
    """Numeric final metrics of a training result (``metrics`` mapping or dataclass fields), for
    the child run; test metrics (``test.*``, ``test_*``) are left out: trials never show one."""
    if result is None:
        return {}
    raw = getattr(result, "metrics", None)
    if not isinstance(raw, Mapping):
        raw = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else {}
    out = {}
    for k, v in raw.items():
        if is_test_metric(k):
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[f"final_{k}"] = float(v)
    return out


def is_test_metric(name: str) -> bool:
    """``test.rmse_px``, ``final_test.rmse``, ``test_mean_px``...: a test-split metric."""
    name = name.removeprefix("final_")
    return name.startswith(("test.", "test_", "test/"))


def tidy_trial_dirs(study: optuna.Study, p: SweepParams, number: int, value: float | None) -> None:
    """Remove trial ``number``'s working copy, unless it is the best complete trial so far
    (``value``: its objective; None when it did not complete) and ``p.log_test`` wants the
    promoted trial's model for one test evaluation: then keep it and remove the copies of the
    other finished trials (never a running one's: another worker may be using it)."""
    from optuna.trial import TrialState

    folder = Path(p.out) / "trials"
    mine = folder / f"trial-{number}"
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    done = [(n, t.value) for n, t in trials.items()
            if n != number and t.state == TrialState.COMPLETE and t.value is not None]
    # ties go to the earlier trial, as best_trial_info does
    best_now = value is not None and all(value < v or (value == v and number < n)
                                         for n, v in done)
    if not (p.log_test and best_now):
        if mine.exists():
            remove_trial_dir(mine, p)
        return
    for d in folder.glob("trial-*"):
        try:
            n = int(d.name.removeprefix("trial-"))
        except ValueError:
            continue
        t = trials.get(n)
        if n != number and (t is None or t.state.is_finished()):
            remove_trial_dir(d, p)


def remove_trial_dir(workdir: Path, p: SweepParams) -> None:
    """Delete a trial's working copy, but never its MLflow journal's unsent operations: those
    (with the files they upload) move to ``<sweep.out>/tracking-pending/`` first, sent by
    ``poseops sync --workdir <sweep.out>``."""
    from poseops.tracking.runs import PENDING_DIR, set_aside_unsent

    try:
        set_aside_unsent(workdir / "tracking", Path(p.out) / PENDING_DIR, f"{workdir.name}-")
    except OSError as e:  # keep the whole copy rather than lose its journal
        log.error("%s: unsent MLflow operations could not be set aside (%s): copy kept", workdir, e)
        return
    shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the worker loop


def run_worker(
    p: SweepParams,
    train_base: Any,
    inputs: TrainInputs,
    *,
    train_fn: TrainFn | None = None,
    device: str | None = None,
    worker_trials: int | None = None,
    summarize: bool = True,
) -> WorkerReport:
    """Run trials of the shared study until it holds ``p.n_trials`` finished trials (or this
    worker ran ``worker_trials``), then wait for the other workers' running trials (failing and
    re-running the stale ones of dead workers), and write the summary.

    ``train_fn`` defaults to ``poseops.train.trainer.train_model``; any callable with its signature works
    (tests use a cheap stand-in to time kills)."""
    import optuna

    if train_fn is None:
        from poseops.train.trainer import train_model as train_fn  # type: ignore[no-redef]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_experimental_warnings()
    base_dict = dataclasses.asdict(train_base)
    check_augmentation_keys(p, set(base_dict))
    check_enqueue(p)
    check_metric(p)
    fingerprint = space_hash(p, base_dict, table_digest(inputs.labels, inputs.split))
    name = study_name_for(p, fingerprint)
    train_base, experiment = trial_train_base(p, train_base)
    storage = open_storage(p)
    study, parent = open_study(p, storage, name, fingerprint, make_parent_factory(p, experiment))
    train_base = _in_parent_experiment(train_base, study)
    objective = make_objective(p, study, parent, train_base, inputs, train_fn, device=device)

    mine: list[int] = []
    heartbeat = isinstance(storage, optuna.storages.RDBStorage)

    def remember(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mine.append(trial.number)

    try:
        _work(study, objective, p, mine, remember, heartbeat, worker_trials)
    except KeyboardInterrupt:  # Ctrl-C (or the --gpus launcher): fail and re-queue our trials
        retried = requeue_interrupted(study, p, done=set(mine))
        log.warning("interrupted: trial(s) %s failed and re-queued with the same params",
                    retried)
        raise
    counts = state_counts(study)
    best = best_trial_info(study)
    log.info("worker done: ran trials %s; study %s: %s", mine, name, counts)
    if summarize:
        write_outputs(study, p, parent)
    finished = counts["RUNNING"] == 0 and counts["WAITING"] == 0
    if finished and budget_used(counts) >= p.n_trials:
        _client().set_terminated(parent, status="FINISHED")  # the study is done
    return WorkerReport(name, parent, mine, counts, best)


def requeue_interrupted(study: optuna.Study, p: SweepParams, done: set[int] = frozenset()
                        ) -> list[int]:
    """After Ctrl-C: the trial this worker was running (its RUNNING or FAIL trials not in
    ``done``, the ones it finished before) is failed and re-queued (WAITING, same params,
    ``failed_trial`` = the original), as the heartbeat does for a killed worker. Returns the
    interrupted trial numbers."""
    import optuna
    from optuna.trial import TrialState

    me = worker_name()
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=p.max_retry)
    trials = study.get_trials(deepcopy=False)
    retried_from = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    out = []
    for t in trials:
        if t.user_attrs.get(ATTR_WORKER) != me or t.number in retried_from | done:
            continue
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        elif t.state != TrialState.FAIL:
            continue
        retry(study, study._storage.get_trial(t._trial_id))
        out.append(t.number)
    return out


def _work(study: optuna.Study, objective: Callable[[optuna.Trial], float], p: SweepParams,
          mine: list[int], remember: Callable[..., None], heartbeat: bool,
          worker_trials: int | None) -> None:
    import optuna

    failures = 0
    while worker_trials is None or len(mine) < worker_trials:
        counts = state_counts(study)
        if counts["WAITING"] == 0 and budget_used(counts) >= p.n_trials:
            if counts["RUNNING"] == 0 or not heartbeat:
                break
            # Drain: other workers' trials are running; if one of them died, its trial goes
            # stale after the grace period, is failed and re-queued (WAITING) for us.
            time.sleep(p.poll_seconds)
            optuna.storages.fail_stale_trials(study)
            continue
        n_before = len(mine)
        study.optimize(objective, n_trials=1, callbacks=[remember], catch=(Exception,))
        last = _trial_by_number(study, mine[-1]) if len(mine) > n_before else None
        if last is not None and last.state.name == "FAIL":
            failures += 1
            if failures >= p.max_consecutive_failures:
                raise PoseopsError(
                    f"{failures} trials in a row failed on this worker (last: trial "
                    f"{last.number}); see the log above"
                )
        else:
            failures = 0


def _in_parent_experiment(train_base: Any, study: optuna.Study) -> Any:
    """Trials log into the parent's experiment (nesting is per experiment in the MLflow UI)."""
    exp_id = study.user_attrs.get(ATTR_EXPERIMENT)
    if not exp_id or "experiment" not in {f.name for f in dataclasses.fields(train_base)}:
        return train_base
    name = _client().get_experiment(exp_id).name
    return dataclasses.replace(train_base, experiment=name)


def trial_train_base(p: SweepParams, train_base: Any) -> tuple[Any, str]:
    """The train params every trial starts from: trials log into the sweep's experiment (so they
    nest under the parent in the MLflow UI) and register no model (promote + retrain does)."""
    experiment = p.experiment or getattr(train_base, "experiment", None) or "poseops"
    names = {f.name for f in dataclasses.fields(train_base)}
    changes: dict[str, Any] = {}
    if "experiment" in names:
        changes["experiment"] = experiment
    if "registered_model" in names:
        changes["registered_model"] = None
    return dataclasses.replace(train_base, **changes), experiment


def _trial_by_number(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _quiet_experimental_warnings() -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --------------------------------------------------------------------------------------------
# summary: best params file, study table, figures, MLflow parent


def best_trial_info(study: optuna.Study) -> dict[str, Any] | None:
    """Best complete trial: number, value (validation error), params; None if none completed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    best = min(done, key=lambda t: t.value)
    return {"number": best.number, "value": best.value, "params": dict(best.params)}


def trials_table(study: optuna.Study) -> Any:
    """One row per trial: number, state, value, epochs_trained, retry_of, worker, params_*."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs_trained": t.user_attrs.get(ATTR_EPOCHS, 0),
            "retry_of": t.system_attrs.get("failed_trial"),
            "worker": t.user_attrs.get(ATTR_WORKER),
        }
        row.update({f"params_{k}": v for k, v in t.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(study: optuna.Study, p: SweepParams, parent_run_id: str) -> dict[str, Any]:
    """best_params.yaml + summary.json + figures (atomic), and the same on the MLflow parent."""
    from poseops.core.fileio import write_csv, write_json, write_yaml

    out = Path(p.out)
    best = best_trial_info(study)
    counts = state_counts(study)
    table = trials_table(study)
    summary = {
        "study_name": study.study_name,
        "storage": redact(p.storage),
        "mlflow_parent_run_id": parent_run_id,
        "counts": counts,
        "epochs_trained": int(table["epochs_trained"].sum()) if len(table) else 0,
        "best": best,
        "importances": param_importances(study),
    }
    write_json(summary, p.summary_path)
    write_csv(table, out / "trials.csv")
    if best is not None:
        best_doc = {"train": _as_train_params(best["params"], p)}
        write_yaml(best_doc, p.best_params_path)
    close_failed_child_runs(study)
    figures = write_figures(study, out / "figures")
    _log_parent(parent_run_id, summary, [p.summary_path, out / "trials.csv", *figures], p)
    return summary


def close_failed_child_runs(study: optuna.Study) -> list[str]:
    """Child runs of FAIL trials (a killed worker never closed them): tag ``fail``, end FAILED."""
    from mlflow.entities import RunTag
    from optuna.trial import TrialState

    client = _client()
    closed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = find_child_run(study.user_attrs.get(ATTR_EXPERIMENT), study.study_name, t.number)
        if run_id is None:
            continue
        run = client.get_run(run_id)
        if run.data.tags.get(TAG_STATE) != "fail":
            client.log_batch(run_id, tags=[RunTag(TAG_STATE, "fail")])
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status="FAILED")
            closed.append(run_id)
    return closed


def _as_train_params(params: Mapping[str, Any], p: SweepParams) -> dict[str, Any]:
    doc = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
    if not isinstance(p.epochs, list):
        doc["epochs"] = int(p.epochs)
    return doc


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importances, or None with fewer than 2 complete trials or a constant space."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:  # e.g. every trial has the same params
        log.info("no parameter importances: %s", e)
        return None
    return {k: float(v) for k, v in imp.items()}


def write_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """optimization_history.png, intermediate_values.png, parallel_coordinate.png (from one
    complete trial on) and param_importances.png (from two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from poseops.core.fileio import atomic_path

    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots: dict[str, Callable[[], Any]] = {}
    if n_done >= 1:
        plots["optimization_history"] = lambda: ovm.plot_optimization_history(study)
        plots["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
        plots["parallel_coordinate"] = lambda: ovm.plot_parallel_coordinate(study)
    if n_done >= 2:
        if param_importances(study):
            plots["param_importances"] = lambda: ovm.plot_param_importances(study)
    written = []
    for fname, plot in plots.items():
        try:
            with warnings.catch_warnings():  # e.g. singular axis limits with one trial
                warnings.simplefilter("ignore")
                ax = plot()
        except Exception as e:  # noqa: BLE001 - a figure is a nice-to-have, never a failure
            log.warning("figure %s skipped: %s", fname, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        path = folder / f"{fname}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _log_parent(run_id: str, summary: Mapping[str, Any], files: list[Path], p: SweepParams) -> None:
    from mlflow.entities import Metric, RunTag

    client = _client()
    now = int(time.time() * 1000)
    counts = summary["counts"]
    metrics = [Metric(f"n_{k.lower()}", float(v), now, 0) for k, v in counts.items()]
    metrics.append(Metric("epochs_trained", float(summary["epochs_trained"]), now, 0))
    tags = []
    best = summary["best"]
    if best is not None:
        metrics.append(Metric("best_val_error", float(best["value"]), now, 0))
        tags.append(RunTag("best_trial", str(best["number"])))
        tags += [RunTag(f"best.{k}", str(v)) for k, v in best["params"].items()]
    for k, v in (summary["importances"] or {}).items():
        metrics.append(Metric(f"importance.{k}", v, now, 0))
    client.log_batch(run_id, metrics=metrics, tags=tags)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path="sweep")
    if p.best_params_path.exists():
        client.log_artifact(run_id, str(p.best_params_path), artifact_path="sweep")


# --------------------------------------------------------------------------------------------
# promote


def promote(best_params: str | Path, params_file: str | Path | None = None) -> dict[str, Any]:
    """Copy the best trial's params (best_params.yaml ``train:``) into params.yaml ``train:``
    (comments and order kept), so the next ``dvc repro`` trains them. Returns what was set."""
    import yaml

    from poseops.config.loader import update_params

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
    from poseops.train.trainer import load_result

    try:
        result = load_result(workdir)
    except PoseopsError as e:
        log.warning("test error not measured: %s", e)
        return {}
    return info_test_metrics(result, load_inputs(params_file), device)


MeasureFn = Callable[..., Mapping[str, float]]  # (workdir, params_file, device) -> test metrics


def report_promoted_test(
    p: SweepParams,
    params_file: str | Path | None = None,
    *,
    device: str | None = None,
    measure: MeasureFn | None = None,
) -> dict[str, Any] | None:
    """The test error of the promoted (best) trial, measured once and logged on that trial's
    MLflow run (``test.mean_px``, ``test.rmse_px``); the parent run is tagged with the trial.

    The only place the sweep looks at the test split, after the choice is made. Needs the best
    trial's working copy (kept by the sweep when ``log_test``); without it (trained on another
    machine, or an older sweep) nothing is measured: ``poseops evaluate`` reports the test error
    of the model ``dvc repro`` retrains with the promoted params. A second promotion of the same
    trial reuses the logged numbers (no second look). Returns ``{trial, run_id, metrics}`` or
    None; also written to ``<out>/promoted_test.json``."""
    try:
        summary = json.loads(p.summary_path.read_text())
    except (OSError, ValueError):
        log.warning("no %s: test error of the promoted trial not measured", p.summary_path)
        return None
    best = summary.get("best") or {}
    if "number" not in best:
        return None
    try:
        return _report_promoted_test(p, summary, int(best["number"]), params_file, device,
                                     measure or trial_test_metrics)
    except Exception as e:  # noqa: BLE001 - the params are promoted already; say why, go on
        log.warning("test error of the promoted trial not reported: %s", e)
        return None


def _report_promoted_test(p: SweepParams, summary: Mapping[str, Any], number: int,
                          params_file: str | Path | None, device: str | None,
                          measure: MeasureFn) -> dict[str, Any] | None:
    from mlflow.entities import Metric, RunTag

    from poseops.core.fileio import write_json

    study_name, parent = summary["study_name"], summary["mlflow_parent_run_id"]
    client = _client()
    run_id = find_child_run(client.get_run(parent).info.experiment_id, study_name, number)
    workdir = Path(p.out) / "trials" / f"trial-{number}"
    if run_id is None:
        log.warning("no MLflow run for trial %d of %s: test error not logged", number, study_name)
        return None
    logged = client.get_run(run_id).data.metrics
    metrics = {k: v for k, v in logged.items() if k.startswith("test.")}
    if not metrics:
        if not workdir.exists():
            log.warning("trial %d's model is not kept in %s (another machine, or "
                        "sweep.log_test was off): its test error is reported by `poseops "
                        "evaluate` after `dvc repro` retrains the promoted params",
                        number, workdir)
            return None
        dev = device or getattr(load_train_base(params_file), "device", "auto")
        metrics = dict(measure(workdir, params_file, dev))
        if not metrics:
            return None
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         tags=[RunTag("poseops.sweep.promoted", "true")])
    client.set_tag(parent, TAG_PROMOTED, str(number))
    out = {"trial": number, "study_name": study_name, "run_id": run_id, "metrics": metrics}
    write_json(out, Path(p.out) / "promoted_test.json")
    return out


# --------------------------------------------------------------------------------------------
# CLI


def load_train_base(params_file: str | Path | None) -> Any:
    from poseops.train.trainer import TrainParams

    return section("train", TrainParams, params_file)


def load_inputs(params_file: str | Path | None) -> TrainInputs:
    """The consensus labels, the split and the DLC project, from the paths in params.yaml."""
    import pandas as pd

    prm = load_params(params_file)
    labels = Path(prm.get("consensus", {}).get("out", "data/interim/consensus.parquet"))
    split = Path(prm.get("split", {}).get("out", "data/processed/split.csv"))
    project = Path(prm.get("project", {}).get("path", "data/raw/demo"))
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
    ap.set_defaults(func=run)


def sweep_params(args: argparse.Namespace) -> tuple[Path, SweepParams]:
    """params.yaml's ``sweep:`` with the command-line overrides."""
    pfile = params_path(args.params)
    p = section(SECTION, SweepParams, pfile)
    overrides = {
        "study_name": args.study,
        "storage": args.storage or os.environ.get("POSEOPS_SWEEP_STORAGE"),  # keeps passwords
        # out of params.yaml and the process list
        "n_trials": args.n_trials,
        "out": args.out,
    }
    return pfile, dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})


def resolved_study_name(p: SweepParams, pfile: Path) -> str:
    """The study the workers of ``p`` will share (sweep.study_name or the fingerprint name)."""
    if p.study_name:
        return p.study_name
    inputs = load_inputs(pfile)
    base = dataclasses.asdict(load_train_base(pfile))
    return study_name_for(p, space_hash(p, base, table_digest(inputs.labels, inputs.split)))


def worker_report(args: argparse.Namespace) -> dict[str, Any]:
    """One worker on this process's device: run trials, return the WorkerReport as a dict."""
    pfile, p = sweep_params(args)
    train_fn = resolve_callable(args.train_fn) if args.train_fn else None
    report = run_worker(
        p,
        load_train_base(pfile),
        load_inputs(pfile),
        train_fn=train_fn,
        device=args.device,
        worker_trials=args.worker_trials,
    )
    return dataclasses.asdict(report)


def run(args: argparse.Namespace) -> int:
    pfile, p = sweep_params(args)
    if args.promote:
        train = promote(p.best_params_path, pfile)
        print(f"promoted into {pfile} train: {train}")
        if p.log_test:
            test = report_promoted_test(p, pfile, device=args.device)
            if test:
                print(f"test error of the promoted trial {test['trial']} (reported once, never "
                      f"chosen on): {test['metrics']}")
        return 0
    if args.gpus and args.slurm:
        raise PoseopsError("--gpus and --slurm exclude each other (SLURM pins the GPUs)")
    if args.gpus or args.slurm:
        from poseops.sweep import launch as L

        p = dataclasses.replace(p, study_name=resolved_study_name(p, pfile))
        if args.gpus:
            devices = L.parse_gpus(args.gpus, L.cuda_device_ids())
            return L.run_local_gpus(p, args, pfile, devices)
        jobs = L.submit_slurm(p, args, pfile)
        return L.wait_jobs(p, jobs) if args.wait else 0
    print(json.dumps(worker_report(args), default=str))
    return 0
