"""MLflow bookkeeping of a sweep: one parent run per study, one child run ``trial-<n>`` per trial
(made by the training logger; the sweep adds state, sampled params and final metrics), and the
study summary on the parent. The tag keys below are part of the interface (queries, the UI)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.sweep import SweepParams
from poseops.sweep.study import ATTR_EXPERIMENT, redact

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# MLflow tags
TAG_STUDY = "poseops.sweep.study"
TAG_ROLE = "poseops.sweep.role"
TAG_TRIAL = "poseops.sweep.trial"
TAG_STATE = "poseops.sweep.state"
TAG_RETRY_OF = "poseops.sweep.retry_of"
TAG_WORKER = "poseops.sweep.worker"
TAG_STORAGE = "poseops.sweep.storage"
TAG_PROMOTED = "poseops.sweep.promoted_trial"  # parent run: the trial whose params were promoted


def client() -> Any:
    """An MlflowClient on the configured tracking URI (quiet environment)."""
    from mlflow.tracking import MlflowClient

    from poseops.tracking.runs import quiet_env, tracking_uri

    quiet_env()
    return MlflowClient(tracking_uri=tracking_uri())


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, json.dumps(value) if isinstance(value, list | dict) else str(value))


def worker_name() -> str:
    """``<host>:<pid>``: the worker in trial user attrs and on child runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------------------------
# the parent run


def make_parent_factory(p: SweepParams, experiment: str) -> Callable[[str], tuple[str, str]]:
    """``make_parent(study_name) -> (run_id, experiment_id)`` for ``open_study``: the parent run
    (the enclosing ``mlflow run`` when there is one), tagged and holding the sweep's params."""
    def make_parent(study_name: str) -> tuple[str, str]:
        mlflow = client()
        from poseops.tracking.runs import (
            dvc_tags,
            ensure_experiment,
            mark_model_experiment,
            tracking_uri,
        )

        tags = {TAG_STUDY: study_name, TAG_ROLE: "parent", TAG_STORAGE: redact(p.storage),
                **dvc_tags()}
        outer = os.environ.get("MLFLOW_RUN_ID")  # `mlflow run -e sweep`: its run is the parent
        if outer:
            run = mlflow.get_run(outer)
            mark_model_experiment(mlflow, run.info.experiment_id)
            for k, v in tags.items():
                mlflow.set_tag(outer, k, v)
        else:
            exp_id = ensure_experiment(mlflow, experiment, tracking_uri())
            run = mlflow.create_run(exp_id, run_name=study_name, tags=tags)
        skip = {"storage", "poll_seconds", "experiment", "slurm"}
        params = [
            _param(f"sweep.{k}", v) for k, v in dataclasses.asdict(p).items() if k not in skip
        ]
        mlflow.log_batch(run.info.run_id, params=params)
        return run.info.run_id, run.info.experiment_id

    return make_parent


def log_parent_summary(run_id: str, summary: Mapping[str, Any], files: list[Path],
                       p: SweepParams) -> None:
    """The study summary on the parent run: ``n_<state>`` counts, ``epochs_trained``,
    ``best_val_error``, ``importance.<param>``, ``best_trial`` / ``best.<param>`` tags, and the
    summary files as artifacts under ``sweep/``."""
    from mlflow.entities import Metric, RunTag

    mlflow = client()
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
    mlflow.log_batch(run_id, metrics=metrics, tags=tags)
    for f in files:
        mlflow.log_artifact(run_id, str(f), artifact_path="sweep")
    if p.best_params_path.exists():
        mlflow.log_artifact(run_id, str(p.best_params_path), artifact_path="sweep")


# --------------------------------------------------------------------------------------------
# child runs (one per trial)


def child_tags(study: optuna.Study, number: int, parent_run_id: str) -> dict[str, str]:
    """The tags of trial ``number``'s child run (nested under ``parent_run_id``)."""
    return {
        "mlflow.parentRunId": parent_run_id,
        TAG_STUDY: study.study_name,
        TAG_TRIAL: str(number),
        TAG_ROLE: "trial",
        TAG_WORKER: worker_name(),
    }


def find_child_run(experiment_id: str | None, study_name: str, number: int) -> str | None:
    """The MLflow run of trial ``number`` (tagged by the training logger), or None."""
    mlflow = client()
    exp_ids = (
        [experiment_id] if experiment_id else [e.experiment_id for e in mlflow.search_experiments()]
    )
    runs = mlflow.search_runs(
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

    from poseops.tracking.runs import dvc_tags, searched, trial_run_name

    mlflow = client()
    exp_id = study.user_attrs.get(ATTR_EXPERIMENT)
    run_id = run_id or find_child_run(exp_id, study.study_name, trial.number)
    if run_id is None:
        exp_id = exp_id or mlflow.get_run(parent_run_id).info.experiment_id
        run_id = mlflow.create_run(
            exp_id,
            run_name=trial_run_name(trial.number, searched(sampled, trial.params)),
            tags={**child_tags(study, trial.number, parent_run_id), **dvc_tags()},
        ).info.run_id
    run = mlflow.get_run(run_id)
    now = int(time.time() * 1000)
    new_params = [_param(k, v) for k, v in sampled.items() if k not in run.data.params]
    metrics = [Metric("epochs_trained", float(epochs), now, 0)]
    if curve:
        metrics.append(Metric("best_val_error", float(min(curve)), now, 0))
    for k, v in (extra_metrics or {}).items():
        if v is not None and math.isfinite(float(v)):
            metrics.append(Metric(k, float(v), now, 0))
    tags = [RunTag(TAG_STATE, state)]
    mlflow.log_batch(run_id, metrics=metrics, params=new_params, tags=tags)
    if run.info.status == "RUNNING":
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        mlflow.set_terminated(run_id, status=status)
    return run_id


def close_failed_child_runs(study: optuna.Study) -> list[str]:
    """Child runs of FAIL trials (a killed worker never closed them): tag ``fail``, end FAILED."""
    from mlflow.entities import RunTag
    from optuna.trial import TrialState

    mlflow = client()
    closed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = find_child_run(study.user_attrs.get(ATTR_EXPERIMENT), study.study_name, t.number)
        if run_id is None:
            continue
        run = mlflow.get_run(run_id)
        if run.data.tags.get(TAG_STATE) != "fail":
            mlflow.log_batch(run_id, tags=[RunTag(TAG_STATE, "fail")])
        if run.info.status == "RUNNING":
            mlflow.set_terminated(run_id, status="FAILED")
            closed.append(run_id)
    return closed
