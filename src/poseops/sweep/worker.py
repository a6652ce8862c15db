"""One sweep worker: the objective (one trial = one real training run, validation error reported
every epoch, pruned by the study's pruner) and the loop that runs trials of the shared study until
its budget is spent, then waits for the other workers' trials and writes the summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.sweep import SweepParams
from poseops.core.errors import PoseopsError
from poseops.sweep.results import best_trial_info, write_outputs
from poseops.sweep.runs import (
    TAG_RETRY_OF,
    child_tags,
    client,
    finish_child_run,
    make_parent_factory,
    worker_name,
)
from poseops.sweep.space import (
    TrainInputs,
    check_augmentation_keys,
    check_enqueue,
    check_metric,
    space_hash,
    study_name_for,
    suggest,
    table_digest,
)
from poseops.sweep.study import (
    ATTR_CURVE,
    ATTR_EPOCHS,
    ATTR_EXPERIMENT,
    ATTR_GPU,
    ATTR_WORKER,
    budget_used,
    open_storage,
    open_study,
    quiet_experimental_warnings,
    state_counts,
    trial_by_number,
)
from poseops.tracking.runs import searched, trial_run_name

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TrainFn = Callable[..., Any]
"""``train_model``'s signature: (params, labels, split, source_project, workdir, *,
epoch_callback, mlflow_parent_run_id, run_name, tags) -> a training result."""


@dataclass
class WorkerReport:
    """What one worker did, and the study as it stood when the worker left."""

    study_name: str
    parent_run_id: str
    trials_run: list[int]
    counts: dict[str, int]
    best: dict[str, Any] | None


# --------------------------------------------------------------------------------------------
# the objective


@dataclass
class TrialContext:
    """What every trial of this worker shares (the objective's closure)."""

    p: SweepParams
    study: optuna.Study
    parent_run_id: str
    train_base: Any  # TrainParams every trial starts from
    inputs: TrainInputs
    train_fn: TrainFn
    device: str | None = None
    penalty: float = 1e4  # the validation error that stands for a NaN one (nan_penalty)


@dataclass
class TrialProgress:
    """A running trial's validation curve (one value per evaluated epoch) and epochs trained."""

    curve: list[float] = field(default_factory=list)
    epochs: int = 0


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
    """One trial = one real training run (``train_fn`` has ``train_model``'s signature),
    validation error reported each epoch, pruned by the study's pruner.

    Returns the lowest validation error over the trial's epochs (the snapshot DLC keeps when it
    selects on validation). No test error is computed or logged here (see
    :func:`poseops.sweep.results.report_promoted_test`)."""
    ctx = TrialContext(p, study, parent_run_id, train_base, inputs, train_fn, device,
                       nan_penalty(inputs.labels))
    return lambda trial: run_trial(ctx, trial)


def run_trial(ctx: TrialContext, trial: optuna.Trial) -> float:
    """Train trial ``trial`` in ``<out>/trials/trial-<n>``; its best validation error. The child
    run is finished (state, params, final metrics) and the working copy tidied in any case."""
    import optuna

    p = ctx.p
    sampled, params = trial_params(ctx, trial)
    progress = TrialProgress()
    on_epoch = epoch_reporter(ctx, trial, params.epochs, progress)
    workdir = Path(p.out) / "trials" / f"trial-{trial.number}"
    if workdir.exists():  # left by an earlier study with the same trial numbers
        remove_trial_dir(workdir, p)
    tags = trial_tags(ctx.study, trial.number, ctx.parent_run_id)
    state = "fail"
    extra: dict[str, float] = {}
    run_id = None
    try:
        result = ctx.train_fn(
            params,
            ctx.inputs.labels,
            ctx.inputs.split,
            ctx.inputs.source_project,
            workdir,
            epoch_callback=on_epoch,
            mlflow_parent_run_id=ctx.parent_run_id,
            run_name=trial_run_name(trial.number, searched(sampled, trial.params)),
            tags=tags,
        )
        if not progress.curve:
            raise PoseopsError(f"training reported no {p.metric!r} (sweep.metric) in any epoch")
        extra = _result_metrics(result)
        run_id = getattr(result, "run_id", None)
        state = "complete"
        return min(progress.curve)
    except optuna.TrialPruned:
        state = "pruned"
        raise
    finally:
        _after_trial(ctx, trial, state, sampled, progress, extra,
                     run_id or _run_id_from_workdir(workdir), workdir)


def trial_params(ctx: TrialContext, trial: optuna.Trial) -> tuple[dict[str, Any], Any]:
    """(the sampled point, the trial's TrainParams); records the worker (and its GPU) on the
    trial."""
    sampled = suggest(trial, ctx.p)
    overrides = dict(sampled)
    if ctx.device:
        overrides["device"] = ctx.device
    params = dataclasses.replace(ctx.train_base, **overrides)
    trial.set_user_attr(ATTR_WORKER, worker_name())
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        trial.set_user_attr(ATTR_GPU, os.environ["CUDA_VISIBLE_DEVICES"])
    return sampled, params


def epoch_reporter(ctx: TrialContext, trial: optuna.Trial, last_epoch: int,
                   progress: TrialProgress) -> Callable[[int, Mapping[str, float]], None]:
    """The training's ``epoch_callback``: reports ``sweep.metric`` to Optuna (NaN counts as
    ``ctx.penalty``) and raises ``optuna.TrialPruned`` when the pruner says so."""
    import optuna

    p = ctx.p

    def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
        progress.epochs = int(epoch)
        trial.set_user_attr(ATTR_EPOCHS, int(epoch))
        if p.metric not in metrics:  # not an evaluation epoch (train.eval_interval > 1)
            return
        raw = float(metrics[p.metric])
        # DLC reports NaN when the model places no keypoint (early epochs, hopeless lr):
        # as bad as it gets, so the pruner and the sampler see the worst error, not a gap
        value = raw if math.isfinite(raw) else ctx.penalty
        progress.curve.append(value)
        trial.set_user_attr(ATTR_CURVE, progress.curve)
        trial.report(value, epoch)
        log.info("trial %d epoch %d: %s = %.4g", trial.number, epoch, p.metric, raw)
        # pruning saves the epochs still to come: at the last one the trial is complete
        if epoch < last_epoch and trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {p.metric} {value:.3f}")

    return on_epoch


def trial_tags(study: optuna.Study, number: int, parent_run_id: str) -> dict[str, str]:
    """Tags the training puts on the trial's run (the parent is passed on its own); a retried
    trial names the one it retries."""
    tags = child_tags(study, number, parent_run_id)
    tags.pop("mlflow.parentRunId")
    retry_of = trial_by_number(study, number).system_attrs.get("failed_trial")
    if retry_of is not None:
        tags[TAG_RETRY_OF] = str(retry_of)
    return tags


def _after_trial(ctx: TrialContext, trial: optuna.Trial, state: str, sampled: Mapping[str, Any],
                 progress: TrialProgress, extra: Mapping[str, float], run_id: str | None,
                 workdir: Path) -> None:
    """MLflow bookkeeping of the child run, then the working copy (kept only for the best trial
    when ``log_test``). Neither may hide the trial's own outcome."""
    curve = progress.curve
    try:
        finish_child_run(ctx.study, ctx.parent_run_id, trial, state, sampled, curve,
                         progress.epochs, extra, run_id)
    except Exception as e:  # noqa: BLE001 - tracking trouble must not hide the trial's
        log.warning("trial %d: MLflow bookkeeping failed: %s", trial.number, e)
    if not ctx.p.keep_trial_dirs:
        try:
            tidy_trial_dirs(ctx.study, ctx.p, trial.number,
                            min(curve) if state == "complete" else None)
        except Exception as e:  # noqa: BLE001 - storage trouble: just drop this copy
            log.warning("trial %d: keeping the best trial's copy failed: %s", trial.number, e)
            remove_trial_dir(workdir, ctx.p)


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


# --------------------------------------------------------------------------------------------
# trial working copies


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
    from poseops.tracking.sync import PENDING_DIR, set_aside_unsent

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

    ``train_base``: the ``train:`` TrainParams every trial starts from. ``train_fn`` defaults to
    the train package's ``train_model``; any callable with its signature works (tests use a
    cheap stand-in to time kills)."""
    import optuna

    if train_fn is None:
        from poseops.train.trainer import train_model as train_fn  # type: ignore[no-redef]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_experimental_warnings()
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
        client().set_terminated(parent, status="FINISHED")  # the study is done
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
        last = trial_by_number(study, mine[-1]) if len(mine) > n_before else None
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
    name = client().get_experiment(exp_id).name
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
