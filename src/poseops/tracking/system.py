"""MLflow system metrics (CPU, memory, disk, network, GPU) of a training run, logged live by
MLflow's SystemMetricsMonitor under a node id naming the server (and GPU)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poseops.tracking.outbox import Outbox

log = logging.getLogger(__name__)


def system_metrics_node_id() -> str:
    """Which server (and GPU) system metrics come from: ``$POSEOPS_NODE_ID`` (set per worker by
    ``poseops sweep --gpus/--slurm``), else ``<host>`` or ``<host>:gpu<CUDA_VISIBLE_DEVICES>``."""
    import socket

    node = os.environ.get("POSEOPS_NODE_ID")
    if node:
        return node
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return socket.gethostname() + (f":gpu{gpus}" if gpus else "")


def start_system_metrics(outbox: Outbox, interval_s: float = 10.0,
                         node_id: str | None = None) -> Any:
    """MLflow system metrics (``system/cpu_utilization_percentage``, memory, disk, network, and
    ``system/gpu_<i>_utilization_percentage`` / memory with pynvml) on the outbox's run, logged
    live every ``interval_s`` by MLflow's SystemMetricsMonitor (not through the journal: they
    describe the moment, a late copy is worthless). Only when the run exists on the server
    (the outbox sent its creation); stopped by ``outbox.close()``. Returns the monitor or None."""
    if outbox.run_id is None or any(op["op"] == "create_run" for op in outbox.pending):
        log.info("system metrics off: the run is not on the tracking server yet")
        return None
    try:
        import mlflow.system_metrics
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        node = node_id or system_metrics_node_id()
        mlflow.system_metrics.set_system_metrics_node_id(node)
        # resume_logging: a resumed run's system metrics continue after its last step (a new
        # run has none: step 0)
        monitor = SystemMetricsMonitor(outbox.run_id, sampling_interval=interval_s,
                                       resume_logging=True, node_id=node, tracking_uri=outbox.uri)
        monitor.start()
    except Exception as e:  # noqa: BLE001 - telemetry: never fail a training for it
        log.warning("system metrics off: %s", e)
        return None
    outbox.system_metrics = monitor
    return monitor


def stop_system_metrics(outbox: Outbox) -> None:
    """Stop the outbox's system-metrics monitor, if one runs (a failure is only logged)."""
    monitor = getattr(outbox, "system_metrics", None)
    if monitor is None:
        return
    outbox.system_metrics = None
    try:
        monitor.finish()
    except Exception as e:  # noqa: BLE001
        log.warning("system metrics: %s", e)
