"""The outbox journal never drops an operation silently (issue 20, items 4, 5 and 7): a torn last
line (a kill) is tolerated, any other unreadable line stops `poseops sync` with one line naming
the file and line and keeps the journal; an unreadable state.json is rebuilt; duplicated lines
count once; an interrupted model upload is finished, not made twice. Each test builds a journal,
then checks MLflow's own store (a real local SQLite one) and the bytes on disk."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from poseops.tracking.outbox import Outbox


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


LOSSES = {1: 0.5, 2: 0.25, 3: 0.125, 4: 0.0625}


def _offline_journal(work: Path) -> Path:
    """A training's journal written while the server was away: 7 lines, nothing sent."""
    box = Outbox(work / "tracking", _dead_uri())
    box.put("create_run", experiment="e", run_name="r")
    box.put("log_params", params={"lr": 0.001})
    for step, loss in LOSSES.items():
        box.put("log_metrics", metrics={"loss": loss}, step=step, timestamp=1000 + step)
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=0) is False
    return box.journal


def _sync(work: Path, uri: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from poseops.cli import main

    rc = main(["sync", "--workdir", str(work), "--tracking-uri", uri, "--timeout", "5"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _history(uri: str, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def _replace_line(journal: Path, line_no: int, text: str) -> None:
    lines = journal.read_text().splitlines(keepends=True)
    lines[line_no - 1] = text + "\n"
    journal.write_text("".join(lines))


@pytest.mark.parametrize("bad", ['{"seq": 4, "op": "log_met', '{"hello": "world"}', "[1, 2, 3]",
                                 '{"seq": 4, "op": "log_metric", "metrics": {"loss": 1}}'])
def test_an_unreadable_middle_line_stops_sync_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, bad: str
) -> None:
    """Only the last line can come from a kill: a cut, non-operation or unknown-operation line in
    the middle is corruption. sync must not report success with that epoch missing, nor crash:
    exit 2, one line naming the journal and line 4, nothing sent, the journal byte-identical."""
    work = tmp_path / "train"
    journal = _offline_journal(work)
    _replace_line(journal, 4, bad)
    before = journal.read_bytes()
    uri = _sqlite(tmp_path)
    rc, out, err = _sync(work, uri, capsys)
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert str(journal) in err and "line 4" in err
    assert journal.read_bytes() == before
    assert _runs(uri) == []  # nothing sent: no run with a hole in its history


def test_a_torn_last_line_is_dropped_and_appends_stay_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A kill cut the last write: that op was never acknowledged. Reopening (a resume) drops the
    torn bytes, so the ops appended after it are whole lines and later syncs read the journal."""
    work = tmp_path / "train"
    box = Outbox(work / "tracking", _dead_uri())
    box.put("create_run", experiment="e", run_name="r")
    box.put("log_metrics", metrics={"loss": 0.5}, step=1, timestamp=1001)
    with box.journal.open("a") as f:
        f.write('{"seq": 3, "op": "log_metrics", "metrics": {"lo')  # the kill
    resumed = Outbox(work / "tracking", _dead_uri())
    resumed.put("log_metrics", metrics={"loss": 0.25}, step=2, timestamp=1002)
    resumed.put("end_run", status="FINISHED")
    assert resumed.close(timeout_s=0) is False
    for line in resumed.journal.read_text().splitlines():  # every line on disk is an operation
        assert json.loads(line)["op"] in {"create_run", "log_metrics", "end_run"}
    uri = _sqlite(tmp_path)
    rc, out, err = _sync(work, uri, capsys)
    assert rc == 0, err
    assert "4 operation(s) sent, 0 pending" in out
    (run,) = _runs(uri)
    assert run.info.status == "FINISHED"
    assert _history(uri, run.info.run_id) == [(1, 0.5), (2, 0.25)]


def test_a_truncated_state_json_is_rebuilt_without_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """state.json cut (a full disk, a kill of an old version): sync must not crash; it rebuilds
    the progress from the journal and the server, so the run is found (not made twice) and no
    metric point is logged twice."""
    uri = _sqlite(tmp_path)
    work = tmp_path / "train"
    box = Outbox(work / "tracking", uri)
    box.put("create_run", experiment="e", run_name="r")
    box.put("log_params", params={"lr": 0.001})
    box.put("log_metrics", metrics={"loss": LOSSES[1]}, step=1, timestamp=1001)
    box.put("log_metrics", metrics={"loss": LOSSES[2]}, step=2, timestamp=1002)
    assert box.flush_once()  # these reached the server
    for step in (3, 4):
        box.put("log_metrics", metrics={"loss": LOSSES[step]}, step=step, timestamp=1000 + step)
    box.put("end_run", status="FINISHED")
    text = box.state_path.read_text()
    box.state_path.write_text(text[: len(text) // 2])  # cut
    rc, out, err = _sync(work, uri, capsys)
    assert rc == 0, err
    assert "0 pending" in out
    (run,) = _runs(uri)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.001"}
    assert _history(uri, run.info.run_id) == sorted(LOSSES.items())
    json.loads(box.state_path.read_text())  # a whole state.json again


def test_a_duplicated_journal_line_is_counted_and_sent_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "train"
    journal = _offline_journal(work)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:4] + [lines[3]] + lines[4:]))  # line 4 twice
    uri = _sqlite(tmp_path)
    rc, out, err = _sync(work, uri, capsys)
    assert rc == 0, err
    assert "7 operation(s) sent, 0 pending" in out, out  # 7 distinct operations
    (run,) = _runs(uri)
    assert _history(uri, run.info.run_id) == sorted(LOSSES.items())


def test_syncing_only_set_aside_journals_names_their_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from poseops.tracking.sync import PENDING_DIR, set_aside_unsent

    work = tmp_path / "train"
    _offline_journal(work)
    assert set_aside_unsent(work / "tracking", work / PENDING_DIR, "train-") is not None
    assert not (work / "tracking").exists()
    uri = _sqlite(tmp_path)
    rc, out, err = _sync(work, uri, capsys)
    assert rc == 0, err
    (run,) = _runs(uri)
    assert "None" not in out
    assert out.strip() == (f"synced 1 set-aside journal(s) (runs {run.info.run_id}): "
                           "7 operation(s) sent, 0 pending")


def test_a_store_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """SQLAlchemy's answer runs over three lines (message, [SQL: ...], background link): sync's
    error must still be one line, naming the journal, with the cause in it."""
    from poseops.cli import main

    work = tmp_path / "train"
    journal = _offline_journal(work)
    before = journal.read_bytes()
    db = tmp_path / "broken.db"
    db.write_text("this is not a database")
    rc = main(["sync", "--workdir", str(work), "--tracking-uri", f"sqlite:///{db}", "--timeout", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    line = err[err.index("poseops sync: error:"):]
    assert line.count("\n") == 1 and line.endswith("\n"), line
    assert "7 operation(s) still pending" in line and str(journal) in line
    assert "file is not a database" in line
    assert journal.read_bytes() == before


def test_a_model_upload_cut_by_a_kill_is_finished_not_made_twice(tmp_path: Path) -> None:
    """SIGKILL during the final upload leaves a PENDING logged model; the rerun's log_model must
    finish that one (READY, with the model files), not log a second model."""
    from mlflow import MlflowClient

    from poseops.train.model import log_pose_model

    uri = _sqlite(tmp_path)
    box = Outbox(tmp_path / "t", uri, model_logger=log_pose_model)
    box.put("create_run", experiment="e", run_name="r")
    assert box.flush_once()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e").experiment_id
    # what mlflow's log_model made before the kill: the model (PENDING) and the run's link to it
    from mlflow.entities import LoggedModelOutput

    cut = client.create_logged_model(exp, name="model", source_run_id=box.run_id)
    client.log_outputs(box.run_id, [LoggedModelOutput(cut.model_id, step=0)])
    cfg = tmp_path / "pytorch_config.yaml"
    cfg.write_text("metadata: {bodyparts: [nose]}\n")
    snap = tmp_path / "snapshot-002.pt"
    snap.write_bytes(b"weights")
    box.put("log_model", pytorch_config=str(cfg), snapshot=str(snap))
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=5), box.last_error
    (model,) = client.search_logged_models([exp])
    assert model.model_id == cut.model_id
    assert str(getattr(model.status, "name", model.status)).upper() == "READY"
    assert box.state["model_uri"] == f"models:/{cut.model_id}"
    files = {f.path for f in client.list_logged_model_artifacts(cut.model_id)}
    assert "MLmodel" in files, files


def test_an_epoch_trained_again_replaces_its_values_in_mlflow(tmp_path: Path) -> None:
    """The journal (and MLflow) hold epochs 1-2, but the resume fell back to epoch 1 (epoch 2's
    snapshot was cut): epoch 2 is trained again with other values, which learning_stats.csv
    holds. MLflow must end with those values at step 2 (its latest point there) and a tag naming
    the redone epoch; epoch 1 is not logged again."""
    from mlflow import MlflowClient

    from poseops.train.session import TrainingSession

    class _Saved:  # DLC's snapshot manager: every epoch saved
        def snapshots(self) -> list:
            from types import SimpleNamespace

            return [SimpleNamespace(epochs=e) for e in (1, 2, 3)]

    uri = _sqlite(tmp_path)
    first = Outbox(tmp_path / "tracking", uri)
    first.put("create_run", experiment="e", run_name="r")
    first.put("log_metrics", metrics={"train.total_loss": 1.0}, step=1, timestamp=1001)
    first.put("log_metrics", metrics={"train.total_loss": 0.9}, step=2, timestamp=1002)
    assert first.flush_once()
    resumed = Outbox(tmp_path / "tracking", uri)  # the rerun, from epoch 1's snapshot
    session = TrainingSession(resumed, tmp_path, total_epochs=3, start_epoch=1, callback=None,
                              best_metric=None, resume_interval_s=0)
    for epoch, loss in ((2, 0.7), (3, 0.6)):  # learning_stats.csv's new rows
        session.on_log({"losses/train.total_loss": loss}, step=epoch)
        session.after_epoch(epoch, {"model": {}, "metadata": {"epoch": epoch}}, _Saved())
    resumed.put("end_run", status="FINISHED")
    assert resumed.close(timeout_s=10), resumed.last_error
    client = MlflowClient(tracking_uri=uri)
    hist = client.get_metric_history(first.run_id, "train.total_loss")
    latest = {}
    for m in sorted(hist, key=lambda m: (m.step, m.timestamp)):
        latest[m.step] = m.value
    assert latest == {1: 1.0, 2: 0.7, 3: 0.6}
    assert [m.step for m in hist].count(1) == 1
    run = client.get_run(first.run_id)
    assert run.data.tags.get("redone_epochs") == "2"
    assert run.data.metrics["train.total_loss"] == 0.6


# ------------------------------------------------------------------------------ slow: real kills
_KILL_DURING_UPLOAD = """
import os, signal, sys, json, pandas as pd
from pathlib import Path
from mlflow.tracking.client import MlflowClient
from poseops.config.train import TrainParams
from poseops.train.trainer import train_model

def killed(self, *a, **k):  # the model's files are being uploaded: the process dies here
    os.kill(os.getpid(), signal.SIGKILL)

MlflowClient.log_model_artifacts = killed
a = json.loads(sys.argv[1])
train_model(TrainParams(**a["params"]), pd.read_parquet(a["labels"]), pd.read_csv(a["split"]),
            Path(a["project"]), Path(a["workdir"]), tracking_uri=a["uri"])
"""


def _assert_one_point_per_step(client, run_id: str) -> None:
    """No metric of the run (system metrics included) has two points at one step."""
    from collections import Counter

    keys = list(client.get_run(run_id).data.metrics)
    assert any(k.startswith("system/") for k in keys), keys
    for key in keys:
        steps = Counter(m.step for m in client.get_metric_history(run_id, key))
        assert max(steps.values()) == 1, (key, sorted(steps.items()))


@pytest.mark.slow
def test_a_kill_during_the_model_upload_then_a_rerun_leaves_one_model(
    small_demo_root: Path, tmp_path: Path
) -> None:
    import dataclasses
    import subprocess
    import sys

    from mlflow import MlflowClient
    from support.train import assert_history_equals_stats, small_tables, tiny

    from poseops.train.trainer import train_model

    labels, split, project = small_tables(small_demo_root)
    params = tiny(epochs=2, system_metrics_interval_s=0.5)
    labels.to_parquet(tmp_path / "labels.parquet")
    split.to_csv(tmp_path / "split.csv", index=False)
    uri, work = _sqlite(tmp_path), tmp_path / "train"
    arg = {"params": dataclasses.asdict(params), "labels": str(tmp_path / "labels.parquet"),
           "split": str(tmp_path / "split.csv"), "project": str(project), "workdir": str(work),
           "uri": uri}
    child = subprocess.run([sys.executable, "-c", _KILL_DURING_UPLOAD, json.dumps(arg)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("t").experiment_id
    (cut,) = client.search_logged_models([exp])
    assert str(getattr(cut.status, "name", cut.status)).upper() == "PENDING"  # the kill's trace

    res = train_model(params, labels, split, project, work, tracking_uri=uri)
    (run,) = client.search_runs([exp])
    assert run.info.run_id == res.run_id and run.info.status == "FINISHED"
    (model,) = client.search_logged_models([exp])
    assert str(getattr(model.status, "name", model.status)).upper() == "READY"
    assert res.model_uri == f"models:/{model.model_id}"
    assert [str(v.version) for v in client.search_model_versions("name = 't-model'")] == ["1"]
    assert res.model_version == "1"
    selected = [k for k in run.data.metrics if k.startswith("selected.")]
    assert "selected.selected_epoch" in selected
    for key in selected:
        assert len(client.get_metric_history(res.run_id, key)) == 1, key
    _assert_one_point_per_step(client, res.run_id)
    assert_history_equals_stats(client, res.run_id, res.learning_stats)


@pytest.mark.slow
def test_a_resume_after_a_kill_equals_an_uninterrupted_run(
    small_demo_root: Path, tmp_path: Path
) -> None:
    """Same seed, same params: a training killed after its first snapshot and rerun ends with
    the learning curve of one never interrupted (the random generators continue where they
    were), every metric once per step (system metrics continue their steps) and MLflow equal to
    learning_stats.csv."""
    import pandas as pd
    from mlflow import MlflowClient
    from support.train import (
        assert_history_equals_stats,
        small_tables,
        tiny,
        train_killed_after_first_snapshot,
    )

    from poseops.train.trainer import train_model

    labels, split, project = small_tables(small_demo_root)
    params = tiny(epochs=3, system_metrics_interval_s=0.5)
    whole = train_model(params, labels, split, project, tmp_path / "whole",
                        tracking_uri=f"sqlite:///{tmp_path / 'whole.db'}")
    (tmp_path / "killed").mkdir()
    work, uri, _ = train_killed_after_first_snapshot(params, labels, split, project,
                                                     tmp_path / "killed")
    res = train_model(params, labels, split, project, work, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert res.learning_stats["step"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(res.learning_stats, whole.learning_stats)
    _assert_one_point_per_step(client, res.run_id)
    assert_history_equals_stats(client, res.run_id, res.learning_stats)
    exp = client.get_experiment_by_name("t").experiment_id
    assert len(client.search_logged_models([exp])) == 1
    assert [str(v.version) for v in client.search_model_versions("name = 't-model'")] == ["1"]
