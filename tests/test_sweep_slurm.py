"""`poseops sweep --slurm`: workers submitted as a submitit job array, on submitit's local
executor (``sweep.slurm.cluster: local``: the same job files, pickled worker and array as on
SLURM, run as processes of this machine), sharing one PostgreSQL study; one worker is killed
mid-trial (as the scheduler would) and its trial is retried through the heartbeat.

Only the training function is the labelled test double ``support.sweep_doubles.sleepy_train``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support.sweep import init_tracking, load_study, make_workspace, running_trials
from support.sweep_doubles import EPOCH_SECONDS_ENV, GATE_ENV

from poseops import cli
from poseops.core.errors import PoseopsError

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_slurm_needs_a_shared_database(tmp_path):
    from poseops.sweep.launch import check_slurm_storage

    for url in ("sqlite:///x.db", str(tmp_path / "optuna.journal")):
        with pytest.raises(PoseopsError, match="PostgreSQL"):
            check_slurm_storage(url)
    check_slurm_storage("postgresql+psycopg://u@h/db")


def test_slurm_array_on_local_executor_retries_a_killed_worker(
        tmp_path, postgres_url, mlflow_uri, monkeypatch):
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import TrialState

    from poseops.commands import sweep
    from poseops.commands.sweep import submit_slurm
    from poseops.sweep.launch import wait_jobs

    n_trials, epochs = 6, 6
    ws = make_workspace(tmp_path, {
        "study_name": "slurm", "storage": postgres_url, "n_trials": n_trials,
        "epochs": epochs, "pruner": "none", "heartbeat_interval": 1, "grace_period": 3,
        "max_retry": 2, "poll_seconds": 0.5,
        "slurm": {"n_workers": 2, "cluster": "local", "folder": str(tmp_path / "slurm"),
                  "time_min": 10, "partition": "gpu", "gpus_per_task": 1, "mem_gb": 4},
    })
    init_tracking()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(SRC)]))
    monkeypatch.setenv(EPOCH_SECONDS_ENV, "0.4")
    # trials hold after their first epoch until the victim is killed: the killed trial cannot
    # finish between the test seeing it run and the kill (no race with a busy machine)
    gate = tmp_path / "released"
    monkeypatch.setenv(GATE_ENV, str(gate))
    monkeypatch.chdir(ws)
    args = cli.build_parser().parse_args(
        ["sweep", "--params", str(ws / "params.yaml"), "--slurm",
         "--train-fn", "support.sweep_doubles:sleepy_train", "--device", "cpu"])
    pfile, p = sweep.sweep_params(args)
    jobs = submit_slurm(p, args, pfile)
    assert len(jobs) == 2
    try:
        killed = victim = None
        deadline = time.monotonic() + 180
        while killed is None:
            assert time.monotonic() < deadline, "the workers never got going"
            time.sleep(0.2)
            running = running_trials(postgres_url, "slurm")
            busy = {pid: n for n, (pid, ep) in running.items() if ep >= 1}
            if len(busy) == 2:  # both workers mid-trial: the "scheduler" kills one
                victim, killed = next(iter(busy.items()))
                os.kill(victim, signal.SIGKILL)
                gate.touch()  # the survivor (and the retry) go on
        assert wait_jobs(p, jobs, poll_s=0.5) == 0
    finally:
        for j in jobs:
            if not j.done():
                j.cancel()
    study = load_study(postgres_url, "slurm")
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if Retry.retry_history(t) == [killed]]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    states = [t.state for t in trials.values()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert n_trials <= states.count(TrialState.COMPLETE) <= n_trials + 1
    assert states.count(TrialState.FAIL) == 1
    numbers = [t.number for t in trials.values()]
    assert len(set(numbers)) == len(numbers)
    assert len({t.user_attrs["worker"] for t in trials.values()}) == 2
    # the killed job failed, the survivor finished the study
    outcomes = []
    for j in jobs:
        try:
            outcomes.append(j.result()["trials_run"])
        except Exception:  # noqa: BLE001 - the killed worker
            outcomes.append(None)
    assert outcomes.count(None) == 1
    assert retries[0].number in next(o for o in outcomes if o is not None)
    jobs.clear()  # submitit's LocalJob.__del__ must run now, not at interpreter exit
    import gc

    gc.collect()
