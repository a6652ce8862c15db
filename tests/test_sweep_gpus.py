"""`poseops sweep --gpus`: one real worker process per device on this server, one shared study.

The device list is mocked only at the CUDA query (``$POSEOPS_CUDA_DEVICES`` replaces
``torch.cuda.device_count()`` in ``poseops.sweep.launch.cuda_device_ids``); the launcher and its
workers are the product's CLI processes, and the training function is the labelled test double
``support.sweep_doubles.sleepy_train`` (workers train on ``--device cpu``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.sweep import init_tracking, make_workspace
from support.sweep_doubles import BARRIER_ENV, EPOCH_SECONDS_ENV, GATE_ENV

from poseops.core.errors import PoseopsError
from poseops.sweep.launch import CUDA_DEVICES_ENV, parse_gpus

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"

pytestmark = pytest.mark.slow


def start_launcher(ws: Path, epoch_s: float, gpus: str = "all", gate: Path | None = None,
                   barrier: tuple[Path, int] | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if gate is not None:
        env[GATE_ENV] = str(gate)  # trials hold after their first epoch until the file exists
    if barrier is not None:  # trials hold after their first epoch until n trials run at once
        env[BARRIER_ENV] = f"{barrier[0]}:{barrier[1]}"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), env.get("PYTHONPATH", "")])
    env[EPOCH_SECONDS_ENV] = str(epoch_s)
    env[CUDA_DEVICES_ENV] = "0,1"  # two "GPUs" (the CUDA query, nothing else, is replaced)
    cmd = [sys.executable, "-m", "poseops.cli", "sweep", "--params", str(ws / "params.yaml"),
           "--gpus", gpus, "--train-fn", "support.sweep_doubles:sleepy_train", "--device", "cpu"]
    # Ctrl-C must reach it as in a terminal: a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def journal_study(ws: Path, name: str):
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(ws / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_parse_gpus():
    assert parse_gpus("all", ["0", "1"]) == ["0", "1"]
    assert parse_gpus("1", ["0", "1"]) == ["1"]
    for bad in ("2", "0,0", "", "all"):
        with pytest.raises(PoseopsError):
            parse_gpus(bad, [] if bad == "all" else ["0", "1"])


def test_gpus_runs_one_worker_per_device_sharing_one_study(tmp_path, mlflow_uri):
    from optuna.trial import TrialState

    n_trials = 6
    ws = make_workspace(tmp_path, {
        "study_name": "gpus", "storage": str(tmp_path / "optuna.journal"),
        "n_trials": n_trials, "epochs": 2, "pruner": "none", "poll_seconds": 0.5,
    })
    init_tracking()
    # deterministic on a busy machine: the first trials wait for each other, so neither worker
    # can take the whole budget before the other has started
    proc = start_launcher(ws, 0.3, barrier=(tmp_path / "barrier", 2))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-4000:]
    assert "gpus: trials" in err  # one progress display for the study
    trials = journal_study(ws, "gpus").get_trials()
    assert n_trials <= len(trials) <= n_trials + 1
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    # two real worker processes, each pinned to its own device, both ran trials
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers
    pinned = {t.user_attrs["worker"]: t.user_attrs["cuda_visible_devices"] for t in trials}
    assert sorted(pinned.values()) == ["0", "1"], pinned
    for dev in ("0", "1"):
        text = (ws / "sweep" / "workers" / f"gpu-{dev}.log").read_text()
        # Optuna 5 names (RetryHeartbeatStaleTrialCallback & co.): no deprecation warnings
        for warning in ("DeprecationWarning", "FutureWarning", "ExperimentalWarning"):
            assert warning not in text, text[-3000:]


def test_ctrl_c_fails_and_requeues_the_running_trials(tmp_path, mlflow_uri):
    """Deterministic: the trials hold after their first epoch (a gate file the test never
    creates), so Ctrl-C always lands while both workers' trials are running."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    from optuna.trial import TrialState

    ws = make_workspace(tmp_path, {
        "study_name": "stopme", "storage": str(tmp_path / "optuna.journal"),
        "n_trials": 6, "epochs": 30, "pruner": "none",
    })
    init_tracking()
    proc = start_launcher(ws, 0.05, gate=tmp_path / "never-released")
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "the workers never got going"
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
        try:
            running = journal_study(ws, "stopme").get_trials(states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - study not created yet
            continue
        if len(running) == 2 and all(t.user_attrs.get("epochs_trained", 0) >= 1
                                     for t in running):
            break
    done = journal_study(ws, "stopme").get_trials(states=(TrialState.COMPLETE,))
    assert done == [], "a trial finished past the gate"
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    trials = {t.number: t for t in journal_study(ws, "stopme").get_trials()}
    failed = [t for t in trials.values() if t.state == TrialState.FAIL]
    assert sorted(t.number for t in failed) == sorted(t.number for t in running)
    waiting = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert sorted(Retry.retried_trial_number(t) for t in waiting) == sorted(
        t.number for t in failed)
    for t in waiting:  # re-queued with the same parameters, for the next `poseops sweep`
        assert t.params == trials[Retry.retried_trial_number(t)].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
