"""params.yaml ``sweep:``: the search space, the Optuna study and its workers (``poseops sweep``),
and ``sweep.slurm:``, the job array ``poseops sweep --slurm`` submits."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

Sampler = Literal["tpe", "gp", "random"]
"""How trials are drawn: TPE or a Gaussian process (after ``n_startup_trials`` random ones), or
random search."""

SAMPLERS: tuple[str, ...] = get_args(Sampler)

Pruner = Literal["none", "median", "percentile", "sha", "hyperband", "patience"]
"""When a trial stops early (``sha``: successive halving; see ``poseops.sweep.study``)."""

PRUNERS: tuple[str, ...] = get_args(Pruner)

SlurmCluster = Literal["slurm", "local", "debug"]
"""submitit's executor for ``--slurm`` (null in params.yaml: SLURM)."""

SLURM_CLUSTERS: tuple[str, ...] = get_args(SlurmCluster)


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
        if self.cluster not in (None, *SLURM_CLUSTERS):
            raise PoseopsError(
                f"sweep.slurm.cluster must be null, slurm, local or debug, not {self.cluster!r}")


@dataclass
class SweepParams:
    """params.yaml ``sweep:``: the search space, the study and how workers share it."""

    study_name: str | None = None  # None: "poseops-<hash of search space, train base, data>"
    storage: str = "sqlite:///data/sweep/optuna.db"  # postgresql+psycopg://..., or a journal file
    n_trials: int = 12  # total over all workers, complete + pruned trials
    sampler: str = "tpe"  # a Sampler: tpe | gp | random
    constant_liar: bool = True  # tpe: running trials count as bad (parallel workers spread out)
    multivariate: bool = True  # tpe: one joint model of all params (lr x batch_size)
    seed: int = 0
    n_startup_trials: int = 4  # random trials before TPE models / before median pruning
    pruner: str = "sha"  # a Pruner: none | median | percentile | sha | hyperband | patience
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
        """The largest per-trial epoch budget (hyperband's max resource)."""
        return max(self.epochs) if isinstance(self.epochs, list) else int(self.epochs)

    @property
    def best_params_path(self) -> Path:
        return Path(self.out) / "best_params.yaml"

    @property
    def summary_path(self) -> Path:
        return Path(self.out) / "summary.json"
