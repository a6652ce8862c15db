"""poseops.tracking: the MLflow outbox keeps every operation until a store acknowledges it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from poseops.errors import PoseopsError
from poseops.tracking import Outbox, artifact_location, sync, tracking_uri


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _fill(box: Outbox, artifact: Path) -> None:
    box.put("create_run", experiment="offline", run_name="r1", tags={"net_type": "cspnext_s"})
    box.put("log_params", params={"epochs": 3, "lr": 0.001})
    for step, loss in ((1, 0.5), (2, 0.25), (3, 0.125)):
        box.put("log_metrics", metrics={"train.total_loss": loss}, step=step, timestamp=1000 + step)
    box.put("log_artifact", path=str(artifact), artifact_path="train")
    box.put("end_run", status="FINISHED")


def test_tracking_uri_prefers_explicit_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert tracking_uri() == "http://team:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_artifacts_live_beside_the_database(tmp_path: Path) -> None:
    loc = artifact_location(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    assert loc == (tmp_path / "mlruns" / "exp").as_uri()
    assert artifact_location("http://server:5000", "exp") is None


def test_unreachable_server_keeps_everything_then_sync_sends_it(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    artifact = tmp_path / "learning_stats.csv"
    artifact.write_text("step,loss\n1,0.5\n")
    work = tmp_path / "train"
    box = Outbox(work / "tracking", _dead_uri())
    _fill(box, artifact)
    assert box.close(timeout_s=0) is False
    assert len(box.pending) == 7 and box.run_id is None
    # a new process sees the same pending operations (journal on disk)
    assert len(Outbox(work / "tracking").pending) == 7
    with pytest.raises(PoseopsError, match="still pending"):
        sync(work, timeout_s=0)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = sync(work, uri=uri, timeout_s=10)
    assert res.pending == 0 and res.sent == 7
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params == {"epochs": "3", "lr": "0.001"}
    hist = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "train.total_loss"))
    assert hist == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert [f.path for f in client.list_artifacts(res.run_id, "train")] == ["train/learning_stats.csv"]
    # sending again sends nothing twice
    again = sync(work, uri=uri, timeout_s=10)
    assert again.sent == 0
    assert len(client.get_metric_history(res.run_id, "train.total_loss")) == 3


def test_truncated_journal_line_is_skipped(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "t", _dead_uri())
    box.put("log_params", params={"a": 1})
    with box.journal.open("a") as f:
        f.write('{"seq": 2, "op": "log_met')  # a kill in the middle of a write
    again = Outbox(tmp_path / "t")
    assert [op["seq"] for op in again.pending] == [1]
    assert json.loads(again.state_path.read_text())["sent"] == 0
