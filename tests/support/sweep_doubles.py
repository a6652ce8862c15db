"""TEST DOUBLE for ``poseops.train.trainer.train_model`` used only by the sweep orchestration tests.

Real DeepLabCut training is far too slow to time a SIGKILL in the middle of a trial, so the
distributed tests run the product's worker (``poseops sweep --train-fn support.sweep_doubles:sleepy_train``)
with this stand-in: same signature and the same observable behaviour towards the sweep (one MLflow
child run nested under ``mlflow_parent_run_id`` with the given name and tags, per-epoch ``val.rmse``
logged and passed to ``epoch_callback``, ``optuna.TrialPruned`` propagated), but each "epoch" is a
sleep and the validation curve is a closed-form function of the hyperparameters.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EPOCH_SECONDS_ENV = "SWEEP_DOUBLE_EPOCH_SECONDS"
# a file path: after reporting its first epoch, every trial waits until the file exists, so a test
# can act while trials are known to be running (instead of racing a poll loop against the clock)
GATE_ENV = "SWEEP_DOUBLE_GATE"


# "<folder>:<n>": each trial checks in (a file in the folder) after its first epoch and waits until
# n trials have checked in, so n workers are known to run trials at the same time
BARRIER_ENV = "SWEEP_DOUBLE_BARRIER"


def wait_for_gate(trial_name: str = "trial", poll_s: float = 0.05) -> None:
    """Block while ``$SWEEP_DOUBLE_GATE`` names a file that does not exist yet, and (with
    ``$SWEEP_DOUBLE_BARRIER``) until enough trials have checked in."""
    gate = os.environ.get(GATE_ENV)
    while gate and not Path(gate).exists():
        time.sleep(poll_s)
    barrier = os.environ.get(BARRIER_ENV)
    if barrier:
        folder, _, n = barrier.rpartition(":")
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{trial_name}-{os.getpid()}").touch()
        while len(list(Path(folder).iterdir())) < int(n):
            time.sleep(poll_s)


def val_curve(lr: float, batch_size: int, epoch: int) -> float:
    """Validation error (px) after ``epoch`` (1-based): decays to a floor that is lowest at
    lr = 3e-3 and batch 8. Pure, so tests can recompute any reported value."""
    floor = 2.0 + 3.0 * (math.log10(lr) - math.log10(3e-3)) ** 2 + 0.1 * abs(batch_size - 8)
    return floor + 10.0 * math.exp(-epoch / 2.0)


@dataclass
class DoubleResult:
    metrics: dict[str, float]
    run_id: str


def sleepy_train(
    params: Any,
    labels: Any,
    split: Any,
    source_project: Path,
    workdir: Path,
    *,
    epoch_callback: Any = None,
    mlflow_parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> DoubleResult:
    """Stand-in for train_model: ``params.epochs`` sleeps of SWEEP_DOUBLE_EPOCH_SECONDS each."""
    from mlflow.tracking import MlflowClient

    from poseops.tracking.runs import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    parent = client.get_run(mlflow_parent_run_id) if mlflow_parent_run_id else None
    exp_id = parent.info.experiment_id if parent else "0"
    run_tags = dict(tags or {})
    if mlflow_parent_run_id:
        run_tags["mlflow.parentRunId"] = mlflow_parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    Path(workdir).mkdir(parents=True, exist_ok=True)
    pause = float(os.environ.get(EPOCH_SECONDS_ENV, "0.2"))
    best = math.inf
    try:
        for epoch in range(1, int(params.epochs) + 1):
            time.sleep(pause)
            val = val_curve(float(params.lr), int(params.batch_size), epoch)
            best = min(best, val)
            client.log_metric(run_id, "val.rmse", val, step=epoch)
            if epoch_callback is not None:
                epoch_callback(epoch, {"val.rmse": val})
            if epoch == 1:
                wait_for_gate(run_name or "trial")
    except BaseException:
        client.set_terminated(run_id, status="KILLED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return DoubleResult(metrics={"val.rmse": best, "test.rmse": best + 0.5}, run_id=run_id)
