"""MLflow tracking basics: the tracking URI, experiments, metric names, the Model Registry's
description and test-error tags.

Tracking URI: `MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`.
The rest of the package: :mod:`poseops.tracking.outbox` (the journal every training operation
goes through), :mod:`poseops.tracking.sync` (sending what was buffered),
:mod:`poseops.tracking.hooks` (DeepLabCut's logger), :mod:`poseops.tracking.system` (system
metrics).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow metric names for DLC's learning_stats.csv columns: DLC calls the frames it evaluates
# during training "test"; poseops gives it the validation frames, so they are "val" here.
VAL_RMSE = "val.rmse"


def quiet_env() -> None:
    """Nothing may call home; keep HTTP retries short so a dead server cannot stall a run."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else MLFLOW_TRACKING_URI, else the repo's SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def absolute_sqlite(uri: str) -> str:
    """sqlite:///mlflow.db is relative to the current directory: pin it, so that a later
    `poseops sync` from elsewhere finds the same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside its database file (`<db dir>/mlruns/<name>`), not
    in the current directory (MLflow's default); servers choose their own (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.resolve().parent / "mlruns" / experiment).as_uri()


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """Id of experiment ``name``, created (artifacts per :func:`artifact_location`) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, name))


@contextmanager
def global_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model, register_model) reads process-global URIs: set them for
    the block, then restore exactly what was there (module globals and env vars: MLflow's own
    setter also writes MLFLOW_TRACKING_URI, which would pin later calls to this store)."""
    import mlflow
    import mlflow.tracking._model_registry.utils as reg_utils
    import mlflow.tracking._tracking_service.utils as trk_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    old_env = {n: os.environ.get(n) for n in names}
    old = (trk_utils._tracking_uri, reg_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        trk_utils._tracking_uri, reg_utils._registry_uri = old
        for n, v in old_env.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


# --------------------------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------------------------


def mlflow_key(dlc_key: str) -> str:
    """Map a learning_stats.csv column to its MLflow metric name.

    `metrics/test.rmse` -> `val.rmse`, `losses/train.total_loss` -> `train.total_loss`,
    `losses/eval.total_loss` -> `val.total_loss`; anything else is kept.
    """
    if dlc_key.startswith("metrics/test."):
        return "val." + dlc_key[len("metrics/test.") :]
    if dlc_key.startswith("losses/eval."):
        return "val." + dlc_key[len("losses/eval.") :]
    if dlc_key.startswith("losses/"):
        return dlc_key[len("losses/") :]
    return dlc_key


def learning_stats_as_mlflow(stats: Any) -> Any:
    """learning_stats.csv (DataFrame with a `step` column) renamed to MLflow metric names."""
    return stats.rename(columns={c: mlflow_key(c) for c in stats.columns if c != "step"})


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# Registry helpers (the evaluate stage adds test errors)
# --------------------------------------------------------------------------------------------


def model_description(metrics: dict[str, float]) -> str:
    """The registered version's description: ``DeepLabCut pose model (poseops). k = v; ...``
    (finite values only, sorted by name)."""
    parts = [f"{k} = {v:.3f}" for k, v in sorted(metrics.items()) if _finite(v) is not None]
    return "DeepLabCut pose model (poseops). " + ("; ".join(parts) if parts else "")


def add_test_metrics(
    run_id: str,
    metrics: dict[str, float],
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    uri: str | None = None,
) -> None:
    """Log test-set errors (e.g. {"test.rmse_px": 3.2, "test.mean_px": 2.9}) to a finished
    training run and, if given, to its registered model version (tags + description)."""
    from mlflow import MlflowClient

    quiet_env()
    u = tracking_uri(uri)
    client = MlflowClient(tracking_uri=u, registry_uri=u)
    now = int(time.time() * 1000)
    from mlflow.entities import Metric

    clean = {k: float(v) for k, v in metrics.items() if _finite(v) is not None}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in clean.items()])
    if model_name and model_version:
        for k, v in clean.items():
            client.set_model_version_tag(model_name, str(model_version), k, f"{v:.4f}")
        run = client.get_run(run_id)
        all_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(("val.", "test."))}
        client.update_model_version(
            model_name, str(model_version), description=model_description(all_metrics)
        )
