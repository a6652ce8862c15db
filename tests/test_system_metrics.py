"""MLflow system metrics on a training run (live, beside the outbox journal), and the data
loading settings (`train.dataloader_workers: auto`, pinned memory on CUDA)."""

from __future__ import annotations

import time

import pytest

from poseops.config.train import TrainParams, resolve_dataloader_workers
from poseops.core.errors import PoseopsError
from poseops.tracking.outbox import Outbox
from poseops.tracking.system import start_system_metrics, system_metrics_node_id
from poseops.train.project import config_updates


def test_a_short_run_has_system_metrics_with_the_node_id(tmp_path, mlflow_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("POSEOPS_NODE_ID", "server-a:gpu1")
    box = Outbox(tmp_path / "tracking", mlflow_uri)
    box.put("create_run", experiment="tests", run_name="short", tags={})
    assert box.flush_once()
    monitor = start_system_metrics(box, interval_s=0.2)
    assert monitor is not None and monitor.node_id == "server-a:gpu1"
    time.sleep(1.5)
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=10)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(box.run_id)
    assert run.info.status == "FINISHED"
    # MLflow names per-node metrics system/<node>/<metric> when a node id is set
    keys = [k for k in run.data.metrics if k.startswith("system/")]
    cpu = [k for k in keys if k.endswith("cpu_utilization_percentage")]
    assert cpu, keys
    assert "server-a:gpu1" in cpu[0]
    assert any(k.endswith("system_memory_usage_percentage") for k in keys), keys
    assert len(client.get_metric_history(box.run_id, cpu[0])) >= 2


def test_a_resumed_run_continues_its_system_metric_steps(tmp_path, mlflow_uri):
    """A resume (a new process, the same run) must not start the system metrics at step 0
    again: every step of every system metric is logged once."""
    from collections import Counter

    from mlflow.tracking import MlflowClient

    for attempt in range(2):  # the first training, then its resume in the same run
        box = Outbox(tmp_path / "tracking", mlflow_uri)
        if attempt == 0:
            box.put("create_run", experiment="tests", run_name="resumed", tags={})
        else:
            box.put("set_status", status="RUNNING")
        assert box.flush_once()
        assert start_system_metrics(box, interval_s=0.2, node_id="n") is not None
        time.sleep(1.2)
        box.put("end_run", status="KILLED" if attempt == 0 else "FINISHED")
        assert box.close(timeout_s=10)
    client = MlflowClient(mlflow_uri)
    keys = [k for k in client.get_run(box.run_id).data.metrics if k.startswith("system/")]
    assert keys
    for key in keys:
        steps = Counter(m.step for m in client.get_metric_history(box.run_id, key))
        assert len(steps) >= 3, (key, steps)
        assert max(steps.values()) == 1, (key, sorted(steps.items()))


def test_no_system_metrics_before_the_run_reaches_the_server(tmp_path):
    box = Outbox(tmp_path / "tracking", "http://127.0.0.1:9")  # nothing listens there
    box.put("create_run", experiment="tests", run_name="offline", tags={})
    assert start_system_metrics(box, interval_s=0.2) is None


def test_node_id_defaults_to_host_and_pinned_gpu(monkeypatch):
    import socket

    monkeypatch.delenv("POSEOPS_NODE_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert system_metrics_node_id() == f"{socket.gethostname()}:gpu3"


def test_dataloader_workers_auto_and_pinned_memory_on_cuda(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert resolve_dataloader_workers("auto") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert resolve_dataloader_workers("auto") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert resolve_dataloader_workers("auto") == 0
    assert resolve_dataloader_workers(3) == 3
    with pytest.raises(PoseopsError, match="dataloader_workers"):
        resolve_dataloader_workers("many")
    up = config_updates(TrainParams(device="cuda:0", dataloader_workers="auto"), (160, 120))
    assert up["train_settings.dataloader_workers"] == 0
    assert up["train_settings.dataloader_pin_memory"] is True
    assert config_updates(TrainParams(device="cpu"), (160, 120))[
        "train_settings.dataloader_pin_memory"] is False


@pytest.mark.slow
def test_a_real_training_run_logs_system_metrics(small_demo_root, tmp_path, monkeypatch):
    """train_model (1 epoch of the small demo, CPU) with a short sampling interval: the MLflow
    run carries CPU and memory system metrics under this server's node id."""
    from mlflow.tracking import MlflowClient
    from support.train import small_tables, tiny

    from poseops.train.trainer import train_model

    monkeypatch.setenv("POSEOPS_NODE_ID", "bench-node")
    labels, split, project = small_tables(small_demo_root)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny(epochs=1, system_metrics_interval_s=0.5)
    res = train_model(params, labels, split, project, tmp_path / "train", tracking_uri=uri)
    run = MlflowClient(uri).get_run(res.run_id)
    assert run.info.status == "FINISHED"
    keys = list(run.data.metrics)
    assert "system/bench-node/cpu_utilization_percentage" in keys, keys
    assert "system/bench-node/system_memory_usage_megabytes" in keys, keys
