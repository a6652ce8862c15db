"""Launchers for `poseops sweep`: one worker per GPU on this server (``--gpus``), or SLURM job
arrays (``--slurm``, with submitit). Every worker is the ordinary single-device worker
(:func:`poseops.sweep.worker.run_worker`, behind ``poseops sweep``) and they share one study
through the storage. The launchers build the workers' ``poseops sweep`` command line
(:func:`worker_argv`); they never import the CLI.

``--gpus 0,1,2,3`` (or ``all``) starts one ``poseops sweep`` child process per device with
``CUDA_VISIBLE_DEVICES`` set to that device (so each child sees one GPU, ``cuda:0``), shows one
progress line for the whole study and stops cleanly on Ctrl-C: the children get SIGINT, their
running trials end FAIL and are re-queued with the same parameters (the next sweep runs them).

``--slurm`` submits ``sweep.slurm.n_workers`` workers as one SLURM job array
(``sweep.slurm``: partition, GPUs / CPUs per task, memory, time limit...). They must share an RDB
study (PostgreSQL): a worker the scheduler kills (time limit, preemption, node failure) stops
sending heartbeats and its trial is failed and retried by the other workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseops.config.sweep import SweepParams
from poseops.core.errors import PoseopsError
from poseops.core.redact import install_log_redaction
from poseops.sweep.study import is_rdb_url, open_storage, state_counts

log = logging.getLogger(__name__)

# Test / odd-machine hook: a comma-separated device list that replaces the CUDA query (e.g. "0,1"
# to run two CPU "devices" in tests; "" for none). Honoured by cuda_device_ids() only.
CUDA_DEVICES_ENV = "POSEOPS_CUDA_DEVICES"
NODE_ID_ENV = "POSEOPS_NODE_ID"  # MLflow system metrics node id (default: host name[:gpu])


def cuda_device_ids() -> list[str]:
    """The CUDA devices of this server (``torch.cuda.device_count()``), as ids for
    ``CUDA_VISIBLE_DEVICES``; ``$POSEOPS_CUDA_DEVICES`` replaces the query when set."""
    override = os.environ.get(CUDA_DEVICES_ENV)
    if override is not None:
        return [d.strip() for d in override.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception as e:  # noqa: BLE001 - no torch / broken driver: no GPUs
        log.warning("no CUDA devices: %s", e)
        return []


def parse_gpus(spec: str, available: list[str]) -> list[str]:
    """``all`` -> every available device; ``0,2`` -> those (each must exist)."""
    if spec.strip().lower() == "all":
        if not available:
            raise PoseopsError("--gpus all: no CUDA device found on this server")
        return list(available)
    wanted = [d.strip() for d in spec.split(",") if d.strip()]
    if not wanted:
        raise PoseopsError(f"--gpus {spec!r}: give device ids like 0,1 or 'all'")
    if len(set(wanted)) != len(wanted):
        raise PoseopsError(f"--gpus {spec!r} names a device twice")
    missing = [d for d in wanted if d not in available]
    if missing:
        raise PoseopsError(f"--gpus {spec!r}: no device {missing} here (found {available})")
    return wanted


@dataclass(frozen=True)
class WorkerOptions:
    """The ``poseops sweep`` flags a launcher passes on to every worker it starts."""

    study: str | None = None  # --study
    n_trials: int | None = None  # --n-trials
    worker_trials: int | None = None  # --worker-trials
    out: str | None = None  # --out
    train_fn: str | None = None  # --train-fn (module:function)
    device: str | None = None  # --device (None: train.device; --gpus workers: cuda:0)


def worker_argv(opts: WorkerOptions, pfile: Path, *, device: str | None) -> list[str]:
    """The single-worker ``poseops sweep`` arguments matching the launcher's (no --gpus/--slurm;
    the storage travels in $POSEOPS_SWEEP_STORAGE, out of the process list)."""
    argv = ["sweep", "--params", str(pfile)]
    for flag, value in (("--study", opts.study), ("--n-trials", opts.n_trials),
                        ("--worker-trials", opts.worker_trials), ("--out", opts.out),
                        ("--train-fn", opts.train_fn), ("--device", device)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


# --------------------------------------------------------------------------------------------
# progress (one line for the whole study)


def progress_line(p: SweepParams) -> str | None:
    """``trials 5/12: complete 3, pruned 1, running 2, failed 1`` for the study, or None while it
    does not exist yet."""
    import optuna

    try:
        storage = _reader_storage(p.storage)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        name = p.study_name or (names[-1] if names else None)
        if name not in names:
            return None
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - not created yet, or a table race: try again later
        return None
    c = state_counts(study)
    done = c["COMPLETE"] + c["PRUNED"]
    return (f"{name}: trials {done}/{p.n_trials}: complete {c['COMPLETE']}, pruned "
            f"{c['PRUNED']}, running {c['RUNNING']}, waiting {c['WAITING']}, failed {c['FAIL']}")


_READERS: dict[str, Any] = {}


def _reader_storage(url: str) -> Any:
    """The progress display's own storage (one per URL: no new connection pool per poll)."""
    import optuna

    if url not in _READERS:
        if is_rdb_url(url):
            _READERS[url] = optuna.storages.RDBStorage(url)
        else:
            path = Path(url.removeprefix("journal:"))
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            _READERS[url] = optuna.storages.JournalStorage(backend)
    return _READERS[url]


def _show(line: str | None, last: str | None) -> str | None:
    if line and line != last:
        end = "\r" if sys.stderr.isatty() else "\n"
        print(line.ljust(100) if end == "\r" else line, end=end, file=sys.stderr, flush=True)
    return line or last


# --------------------------------------------------------------------------------------------
# --gpus: one worker process per device on this server


def run_local_gpus(p: SweepParams, opts: WorkerOptions, pfile: Path, devices: list[str],
                   *, poll_s: float = 2.0, stop_timeout_s: float = 60.0) -> int:
    """Start one worker per device (``CUDA_VISIBLE_DEVICES=<id>``), show the study's progress,
    forward Ctrl-C to the workers (their running trials end FAIL and are re-queued), and return
    0 when every worker succeeded (130 when interrupted, else the first failing exit status)."""
    logs = Path(p.out) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    open_storage(p)  # create the tables once, before the workers race for them
    host = socket.gethostname()
    procs: list[tuple[str, subprocess.Popen, Any]] = []
    for dev in devices:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = dev
        env["POSEOPS_SWEEP_STORAGE"] = p.storage
        env.setdefault(NODE_ID_ENV, f"{host}:gpu{dev}")
        env.pop(CUDA_DEVICES_ENV, None)
        # each child sees one device: cuda:0, unless --device says otherwise (e.g. cpu)
        argv = worker_argv(opts, pfile, device=opts.device or "cuda:0")
        out = (logs / f"gpu-{dev}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "poseops.cli", *argv], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((dev, proc, out))
        print(f"worker gpu {dev}: pid {proc.pid}, log {out.name}", file=sys.stderr)
    interrupted = False
    last: str | None = None
    try:
        while any(proc.poll() is None for _, proc, _ in procs):
            last = _show(progress_line(p), last)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping the workers (running trials are failed and re-queued)",
              file=sys.stderr)
        stop_workers([proc for _, proc, _ in procs], stop_timeout_s)
    finally:
        for _, proc, out in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            out.close()
    _show(progress_line(p), None)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    codes = {dev: proc.returncode for dev, proc, _ in procs}
    failed = {d: c for d, c in codes.items() if c != 0}
    for dev, code in failed.items():
        if not interrupted:
            print(f"worker gpu {dev} exited with {code}: see {logs / f'gpu-{dev}.log'}",
                  file=sys.stderr)
    if interrupted:
        return 130
    return next(iter(failed.values()), 0)


def stop_workers(procs: list[subprocess.Popen], timeout_s: float) -> None:
    """SIGINT (the worker fails and re-queues its running trial), then SIGKILL after
    ``timeout_s`` (a killed trial is retried through the heartbeat with an RDB storage)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------------------------
# --slurm: a submitit job array


SlurmTask = Callable[[list[str]], dict[str, Any]]
"""One worker run in-process from its ``poseops sweep`` arguments; returns its report (a
module-level function of the command: submitit pickles it by name)."""


def slurm_worker(task: SlurmTask, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One array task: the ordinary worker (``task(argv)``, ``poseops sweep <argv>``) in this
    process; returns its report. Picklable (submitit runs it on the compute node)."""
    os.environ.update(env)
    if NODE_ID_ENV not in os.environ:
        task_id = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
        os.environ[NODE_ID_ENV] = f"{socket.gethostname()}:{task_id or os.getpid()}"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    return task(argv)


SECRET_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
               "MLFLOW_TRACKING_TOKEN")


def job_secrets(storage: str) -> dict[str, str]:
    """What a worker needs that must not be written to disk: the storage URL and the MLflow
    credentials of this process."""
    env = {"POSEOPS_SWEEP_STORAGE": storage}
    env.update({k: os.environ[k] for k in SECRET_KEYS if k in os.environ})
    return env


@contextlib.contextmanager
def exported(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment for the duration (then put back as it was)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_slurm_storage(url: str) -> None:
    """``--slurm`` workers on other nodes need a database they all reach (not SQLite, not a
    journal file), with heartbeats."""
    if not is_rdb_url(url) or url.startswith("sqlite"):
        raise PoseopsError(
            f"--slurm needs a database every node reaches, with heartbeats (PostgreSQL: "
            f"postgresql+psycopg://user@host/db), not {url.split('://')[0] if '://' in url else url}"
        )


def submit_slurm(p: SweepParams, opts: WorkerOptions, pfile: Path, task: SlurmTask) -> list[Any]:
    """Submit ``sweep.slurm.n_workers`` workers as one job array, each running
    ``task(<its poseops sweep arguments>)``; returns the submitit jobs."""
    import submitit

    s = p.slurm
    check_slurm_storage(p.storage)
    if s.cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise PoseopsError("--slurm: no sbatch on this machine (run it on a SLURM login node; "
                           "sweep.slurm.cluster: local runs the job array here, to try it)")
    if not str(s.additional.get("export", "ALL")).upper().startswith("ALL"):
        raise PoseopsError("sweep.slurm.additional export: the jobs must inherit the environment "
                           "(ALL): the storage URL and MLflow credentials travel in it")
    folder = Path(s.folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=s.cluster or "slurm")
    params: dict[str, Any] = {
        "name": s.job_name,
        "timeout_min": int(s.time_min),
        "mem_gb": s.mem_gb,
        "cpus_per_task": s.cpus_per_task,
        "tasks_per_node": 1,
        "slurm_array_parallelism": s.array_parallelism or s.n_workers,
        "slurm_setup": list(s.setup),
        "slurm_additional_parameters": dict(s.additional),
    }
    if executor.cluster != "local":  # the local executor cannot pin GPUs it does not have
        params["gpus_per_node"] = s.gpus_per_task
    if s.partition:
        params["slurm_partition"] = s.partition
    for key in ("account", "qos", "constraint"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    executor.update_parameters(**params)
    argv = worker_argv(opts, pfile.resolve(), device=opts.device)
    n = s.n_workers
    # the secrets (storage URL, MLflow credentials) reach the jobs through the environment they
    # inherit at submission (sbatch exports it; the local executor starts them here), never
    # through the pickled call: submitit keeps *_submitted.pkl in the folder after the job
    with exported(job_secrets(p.storage)):
        jobs = executor.map_array(slurm_worker, [task] * n, [argv] * n, [{}] * n)
    ids = [j.job_id for j in jobs]
    log.info("submitted %d sweep workers: %s (logs in %s)", len(jobs), ids, folder)
    print(f"submitted {len(jobs)} workers as SLURM job array {ids[0].split('_')[0]}: {ids}",
          file=sys.stderr)
    return jobs


def wait_jobs(p: SweepParams, jobs: list[Any], *, poll_s: float = 5.0) -> int:
    """Follow the study until every job ended; 0 if at least one worker finished the study."""
    last: str | None = None
    try:
        while not all(j.done() for j in jobs):
            last = _show(progress_line(p), last)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("\nstopped following (the jobs keep running; scancel to stop them)",
              file=sys.stderr)
        return 130
    _show(progress_line(p), None)
    ok = 0
    for j in jobs:
        try:
            j.result()
            ok += 1
        except Exception as e:  # noqa: BLE001 - a killed worker: its trial is retried
            print(f"worker {j.job_id} failed: {str(e).splitlines()[0] if str(e) else e!r}",
                  file=sys.stderr)
    return 0 if ok else 1
