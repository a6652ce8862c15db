"""No password leaks (issue 20, item 3): a password in the tracking URI or in the sweep storage
URL appears in no log line, no file of the repository or work folder, no MLflow artifact, param
or tag, no `poseops sync` error and no submitit file of `poseops sweep --slurm`."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
import yaml

from poseops.core.redact import install_log_redaction, redact, restore_uri

PW = "S3cr3t-Pa55w0rd"  # planted; must never be written anywhere
TOKEN = "tok-9f8e7d6c5b4a"


def _dead_port() -> int:
    """A loopback port nobody listens on (the store is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files_with(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret`` (plain or URL-encoded)."""
    needles = {secret.encode(), secret.replace("-", "%2D").encode()}
    return [str(p) for p in root.rglob("*") if p.is_file()
            and any(n in p.read_bytes() for n in needles)]


# -------------------------------------------------------------------------------- fast: redact
def test_redact_hides_the_password_of_every_uri_form(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    cases = {
        f"postgresql+psycopg://user:{PW}@db.lab:5432/mlflow":
            "postgresql+psycopg://user:***@db.lab:5432/mlflow",
        f"http://alice:{PW}@127.0.0.1:5000": "http://alice:***@127.0.0.1:5000",
        "mysql://u:p%40ss%3Aword@h/db": "mysql://u:***@h/db",
        f"error: cannot reach 'https://bob:{PW}@host/x' (timeout)":
            "error: cannot reach 'https://bob:***@host/x' (timeout)",
        "sqlite:////tmp/mlflow.db": "sqlite:////tmp/mlflow.db",
        "postgresql+psycopg://user@host/db": "postgresql+psycopg://user@host/db",
        "runs:/abc123/model": "runs:/abc123/model",
    }
    for text, expected in cases.items():
        assert redact(text) == expected


def test_redact_hides_secret_values_of_the_environment_anywhere(monkeypatch) -> None:
    """A driver's message may show the password without its URL: known secrets go too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg://user:{PW}@h/db")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TOKEN)
    out = redact(f"FATAL: password {PW!r} rejected; token={TOKEN}")
    assert PW not in out and TOKEN not in out
    assert out == "FATAL: password '***' rejected; token=***"


def test_a_stored_uri_gets_its_password_back_only_for_the_same_store() -> None:
    real = f"postgresql+psycopg://user:{PW}@h/db"
    assert restore_uri("postgresql+psycopg://user:***@h/db", real) == real
    assert restore_uri("postgresql+psycopg://user:***@other/db", real) == "postgresql+psycopg://user:***@other/db"
    assert restore_uri("sqlite:////x.db", real) == "sqlite:////x.db"


def test_every_log_line_and_traceback_is_redacted(monkeypatch, tmp_path) -> None:
    """Console and files (DLC's train.txt is a FileHandler on the root logger) alike."""
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TOKEN)
    install_log_redaction()
    buf = io.StringIO()
    handlers = [logging.StreamHandler(buf), logging.FileHandler(tmp_path / "train.txt")]
    logger = logging.getLogger("poseops.test_secrets")
    for h in handlers:
        logger.addHandler(h)
    try:
        uri = f"http://user:{PW}@127.0.0.1:1"
        logger.warning("MLflow server %s unreachable", uri)
        logger.warning(f"token {TOKEN} refused")
        try:
            raise ConnectionError(f"cannot connect to {uri}")
        except ConnectionError:
            logger.exception("sending failed")
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
    for text in (buf.getvalue(), (tmp_path / "train.txt").read_text()):
        assert PW not in text and TOKEN not in text
        assert "http://user:***@127.0.0.1:1 unreachable" in text
        assert "ConnectionError: cannot connect to http://user:***@127.0.0.1:1" in text


# --------------------------------------------------------------- slow: training, sync, slurm
@pytest.mark.slow
def test_no_password_of_the_tracking_uri_in_any_file_log_or_mlflow_store(
    small_demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    """Train with the store down (a password in its URI), then `poseops sync` fails (store
    still down), then it is sent to a reachable store: the password is nowhere."""
    from support.train import small_tables

    from poseops.cli import main

    labels, split, project = small_tables(small_demo_root)
    labels.to_parquet(tmp_path / "consensus.parquet")
    split.to_csv(tmp_path / "split.csv", index=False)
    params = {"project": {"path": str(project)}, "consensus": {"out": "consensus.parquet"},
              "split": {"out": "split.csv"},
              "train": {"epochs": 1, "pretrained": False, "device": "cpu", "save_epochs": 1,
                        "registered_model": "secret-test", "experiment": "secrets",
                        "tracking_timeout_s": 1.0, "system_metrics": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dead = f"http://user:{PW}@127.0.0.1:{_dead_port()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    caplog.set_level(logging.INFO)
    assert main(["train"]) == 0
    info = json.loads((tmp_path / "data" / "train" / "run.json").read_text())
    assert info["status"] == "complete" and info["tracking_pending"] > 0
    # the store is still down: sync fails, naming the store without its password
    assert main(["sync", "--workdir", "data/train", "--timeout", "1"]) == 2
    out = capsys.readouterr()
    assert "127.0.0.1" in out.err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in logged
    for text in (out.out, out.err, logged):
        assert PW not in text
    # the store is back (here: another, reachable one): everything is sent, password-free
    store = tmp_path / "store"
    store.mkdir()
    good = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", good)
    assert main(["sync", "--workdir", "data/train", "--tracking-uri", good]) == 0
    assert PW not in capsys.readouterr().err
    from mlflow import MlflowClient

    client = MlflowClient(good)
    run_id = json.loads((tmp_path / "data" / "train" / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert {f.path for f in client.list_artifacts(run.info.run_id, "train")} >= {"train/train.txt"}
    for value in [*run.data.params.values(), *run.data.tags.values()]:
        assert PW not in value
    assert _files_with(tmp_path, PW) == []  # run.json, state.json, train.txt, artifacts, db


@pytest.mark.slow
def test_slurm_sweep_pickles_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`poseops sweep --slurm` on submitit's local executor: the job gets the storage URL and
    MLflow credentials (its error names the storage, redacted), but no file holds them."""
    from support.sweep import make_workspace

    from poseops import cli
    from poseops.commands import sweep
    from poseops.sweep.launch import wait_jobs

    storage = f"postgresql+psycopg://opt:{PW}@127.0.0.1:{_dead_port()}/optuna"
    make_workspace(tmp_path, {
        "n_trials": 1, "slurm": {"n_workers": 1, "cluster": "local", "folder": str(tmp_path / "slurm"),
                                 "time_min": 5, "mem_gb": 1}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSEOPS_SWEEP_STORAGE", storage)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:{PW}@127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TOKEN)
    before = dict(os.environ)
    args = cli.build_parser().parse_args(["sweep", "--params", "params.yaml", "--slurm", "--device", "cpu"])
    pfile, p = sweep.sweep_params(args)
    jobs = sweep.submit_slurm(p, args, pfile)
    assert dict(os.environ) == before  # the secrets were lent to the submission only
    deadline = time.monotonic() + 240
    while not all(j.done() for j in jobs):
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.5)
    assert wait_jobs(p, jobs, poll_s=0.5) == 1  # the storage is down: the worker failed ...
    logs = "".join(j.stderr() or "" for j in jobs) + "".join(j.stdout() or "" for j in jobs)
    assert "opt:***@127.0.0.1" in logs  # ... having received the storage URL (redacted in its log)
    assert list((tmp_path / "slurm").glob("*_submitted.pkl"))
    assert _files_with(tmp_path, PW) == [] and _files_with(tmp_path, TOKEN) == []
