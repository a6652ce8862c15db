"""The Optuna study every worker shares: storage (RDB with heartbeats, or a journal file),
sampler, pruner, exclusive creation (one worker makes the MLflow parent run) and state counts."""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.sweep import SweepParams
from poseops.core.errors import PoseopsError
from poseops.core.redact import redact  # the one redaction (sweep modules import it here)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# study user attrs (shared by every worker through the storage)
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_SPACE = "poseops_space_hash"
# trial user attrs
ATTR_EPOCHS = "epochs_trained"
ATTR_CURVE = "val_curve"
ATTR_WORKER = "worker"
ATTR_GPU = "cuda_visible_devices"  # the device(s) the worker was pinned to (--gpus, SLURM)


# --------------------------------------------------------------------------------------------
# sampler and pruners (pure)


def build_sampler(p: SweepParams, seed: int | None) -> optuna.samplers.BaseSampler:
    """``sweep.sampler``: random search, or TPE / a Gaussian process (Optuna's GPSampler, for
    budgets of 10-20 trials) after ``n_startup_trials`` random trials. TPE is multivariate and
    treats running trials as bad ones (constant liar) unless ``sweep.multivariate`` /
    ``sweep.constant_liar`` say otherwise: workers sharing a study sample different points."""
    import optuna

    if p.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if p.sampler == "gp":
        quiet_experimental_warnings()
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=p.n_startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=p.n_startup_trials,
                                      multivariate=p.multivariate, constant_liar=p.constant_liar)


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


# --------------------------------------------------------------------------------------------
# storage and study (race-free)


def is_rdb_url(url: str) -> bool:
    """A database URL (``sqlite:///``, ``postgresql+psycopg://``), not a journal file path."""
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
            quiet_experimental_warnings()  # heartbeat_interval & co. are "experimental"
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
    raise PoseopsError(redact(f"cannot open Optuna storage {url}: {last}"))


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
    return study, _wait_for_parent(study, p, name, fingerprint, wait_s)


def _wait_for_parent(study: optuna.Study, p: SweepParams, name: str, fingerprint: str,
                     wait_s: float) -> str:
    """A joiner: the MLflow parent run id once the creator stored it; refuses a study made from
    another search space or train base."""
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
    return study.user_attrs[ATTR_PARENT]


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


def trial_by_number(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial ``number`` of ``study`` (a snapshot: not a live ``optuna.Trial``)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def quiet_experimental_warnings() -> None:
    """Silence Optuna's ExperimentalWarning (heartbeats, retry callback)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
