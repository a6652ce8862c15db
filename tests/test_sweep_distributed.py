"""Several `poseops sweep` workers sharing one Optuna study on a real PostgreSQL server.

The workers are the product's CLI (`python -m poseops.cli sweep`), run as separate processes; only
the training function is the clearly labelled test double `support.sweep_doubles.sleepy_train` (real
DeepLabCut training is too slow to time a kill in the middle of a trial).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.sweep import init_tracking, load_study, make_workspace, running_trials
from support.sweep_doubles import EPOCH_SECONDS_ENV, GATE_ENV, val_curve

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def start_worker(ws: Path, epoch_s: float, *extra: str, gate: Path | None = None
                 ) -> subprocess.Popen:
    env = dict(os.environ)
    if gate is not None:  # trials hold after their first epoch until this file exists
        env[GATE_ENV] = str(gate)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), env.get("PYTHONPATH", "")])
    env[EPOCH_SECONDS_ENV] = str(epoch_s)
    cmd = [sys.executable, "-m", "poseops.cli", "sweep", "--params", str(ws / "params.yaml")]
    cmd += ["--train-fn", "support.sweep_doubles:sleepy_train", "--device", "cpu", *extra]
    return subprocess.Popen(
        cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


def mlflow_children(parent_run_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("sweep-test")
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )


def mlflow_parents(study_name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("sweep-test")
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`poseops.sweep.role` = 'parent' and tags.`poseops.sweep.study` = '{study_name}'",
    )


def test_two_workers_share_one_postgres_study(tmp_path, postgres_url, mlflow_uri):
    n_trials, epochs = 10, 4
    ws = make_workspace(
        tmp_path,
        {
            "study_name": "shared",
            "storage": postgres_url,
            "n_trials": n_trials,
            "epochs": epochs,
            "pruner": "median",
            "n_startup_trials": 2,
            "n_warmup_steps": 1,
            "lr": [1e-4, 1e-1],
            "batch_size": [4, 8, 16],
        },
    )
    init_tracking()
    workers = [start_worker(ws, 0.4), start_worker(ws, 0.4)]
    reports = [finish(w) for w in workers]

    from optuna.trial import TrialState

    study = load_study(postgres_url, "shared")
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # the total is global: both workers stop when the study holds n_trials finished trials
    # (two trials started in the same instant at the very end may overshoot by one)
    assert n_trials <= len(finished) <= n_trials + 1
    assert len(finished) == len(trials), [t.state for t in trials]
    assert len(set(numbers)) == len(numbers)
    # shared: both workers ran trials, none twice, together all of them
    ran = [set(r["trials_run"]) for r in reports]
    assert ran[0] and ran[1], ran
    assert not ran[0] & ran[1]
    assert ran[0] | ran[1] == set(numbers)
    # one MLflow parent for the study, one nested child per trial, named trial-<n>
    assert reports[0]["parent_run_id"] == reports[1]["parent_run_id"]
    parent = reports[0]["parent_run_id"]
    (parent_run,) = mlflow_parents("shared")
    assert parent_run.info.run_id == parent
    assert parent_run.info.status == "FINISHED"  # the last worker closed it: study done
    children = mlflow_children(parent)
    # named trial-<n> plus the searched values (trial-0 lr=3e-4 bs=16)
    assert sorted(r.info.run_name.split(" ")[0] for r in children) == sorted(f"trial-{n}" for n in numbers)
    by_name = {r.info.run_name.split(" ")[0]: r for r in children}
    for t in trials:
        run = by_name[f"trial-{t.number}"]
        assert run.data.tags["poseops.sweep.state"] == t.state.name.lower()
        assert run.data.tags["poseops.sweep.trial"] == str(t.number)
        # the reported curve is the double's closed form at the sampled params
        expected = [
            val_curve(t.params["lr"], t.params["batch_size"], e)
            for e in range(1, len(t.intermediate_values) + 1)
        ]
        assert [t.intermediate_values[e] for e in sorted(t.intermediate_values)] == pytest.approx(
            expected
        )
        if t.state == TrialState.COMPLETE:
            assert len(t.intermediate_values) == epochs
            assert t.value == pytest.approx(min(expected))
        else:
            assert len(t.intermediate_values) < epochs  # pruned = stopped early
    # the summary written by the last worker names the best complete trial
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    doc = yaml.safe_load((ws / "sweep" / "best_params.yaml").read_text())
    assert doc["train"]["lr"] == pytest.approx(best.params["lr"])
    assert doc["train"]["batch_size"] == best.params["batch_size"]
    assert doc["train"]["epochs"] == epochs


def test_killed_worker_trial_fails_and_is_retried(tmp_path, postgres_url, mlflow_uri):
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import TrialState

    n_trials, epochs, epoch_s = 8, 6, 0.4
    ws = make_workspace(
        tmp_path,
        {
            "study_name": "killme",
            "storage": postgres_url,
            "n_trials": n_trials,
            "epochs": epochs,
            "pruner": "none",
            "heartbeat_interval": 1,
            "grace_period": 3,
            "max_retry": 2,
            "poll_seconds": 0.5,
        },
    )
    init_tracking()
    # The victim starts first, so it surely holds a trial when it is killed; the survivor runs
    # alongside it from then on.
    # Trials hold after their first epoch until the victim is killed (gate file), so its trial
    # cannot finish between the test seeing it run and the kill.
    gate = tmp_path / "released"
    victim = start_worker(ws, epoch_s, gate=gate)
    survivor = None
    killed = None
    deadline = time.monotonic() + 180
    while killed is None:
        assert time.monotonic() < deadline, "the workers never got going"
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        time.sleep(0.2)
        running = running_trials(postgres_url, "killme")
        victim_trial = [n for n, (pid, ep) in running.items() if pid == victim.pid and ep >= 1]
        if survivor is None:
            if victim_trial:
                survivor = start_worker(ws, epoch_s, gate=gate)
            continue
        survivor_busy = any(pid == survivor.pid for pid, _ in running.values())
        if victim_trial and survivor_busy:  # both mid-trial: kill the victim
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed = victim_trial[0]
            gate.touch()
    report = finish(survivor)

    study = load_study(postgres_url, "killme")
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if Retry.retry_history(t) == [killed]]
    assert len(retries) == 1, {n: t.system_attrs for n, t in trials.items()}
    retry = retries[0]
    assert Retry.retried_trial_number(retry) == killed
    assert retry.state == TrialState.COMPLETE
    assert retry.params == trials[killed].params
    assert retry.number in report["trials_run"]
    states = [t.state for t in trials.values()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert n_trials <= states.count(TrialState.COMPLETE) <= n_trials + 1
    assert states.count(TrialState.FAIL) == 1
    # MLflow: the dead worker's child run is closed as failed, the retry says what it retries
    children = {r.info.run_name.split(" ")[0]: r for r in mlflow_children(report["parent_run_id"])}
    dead = children[f"trial-{killed}"]
    assert dead.info.status == "FAILED"
    assert dead.data.tags["poseops.sweep.state"] == "fail"
    assert children[f"trial-{retry.number}"].data.tags["poseops.sweep.retry_of"] == str(killed)
