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
    """The tracking URI: explicit, else MLFLOW_TRACKING_URI, else the repo's SQLite store. Under
    DVC (DVC_ROOT: the repository's root, also for `dvc exp run --queue`, whose stages run in a
    temporary copy of the repository) that store is ``<DVC_ROOT>/mlflow.db``, not one in the copy."""
    if uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return uri or os.environ["MLFLOW_TRACKING_URI"]
    root = os.environ.get("DVC_ROOT")
    if root and Path(root).is_dir():
        return "sqlite:///" + str(Path(root).resolve() / "mlflow.db")
    return DEFAULT_TRACKING_URI


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


# The MLflow UI (3.x) picks its view from this experiment tag: untagged experiments open in
# the GenAI view (traces, prompts); poseops' experiments are model-training experiments.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """Id of experiment ``name``, created (artifacts per :func:`artifact_location`) if missing,
    tagged as a model-training experiment (:func:`mark_model_experiment`)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        mark_model_experiment(client, exp.experiment_id, exp.tags)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(uri, name),
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def mark_model_experiment(client: Any, experiment_id: str, tags: dict[str, str] | None = None) -> None:
    """Tag the experiment ``mlflow.experimentKind = custom_model_development`` unless it already
    says what it is (a kind chosen in the UI is kept)."""
    if tags is None:
        tags = client.get_experiment(experiment_id).tags
    if not (tags or {}).get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


# --------------------------------------------------------------------------------------------
# Run names and DVC experiment tags
# --------------------------------------------------------------------------------------------

DVC_EXP_TAG = "dvc.exp_name"  # the DVC experiment (`dvc exp run`) a run was made in
DVC_BASELINE_TAG = "dvc.exp_baseline_rev"
_SHORT = {"lr": "lr", "batch_size": "bs", "net_type": "net", "epochs": "ep"}


def training_run_name(project: str, iteration: int | str, net_type: str) -> str:
    """A training run's name: ``<project>-it<iteration>-<net_type>``."""
    return f"{project}-it{iteration}-{net_type}"


def _short_value(v: Any) -> str:
    if isinstance(v, float) and v != 0 and not 1e-2 <= abs(v) < 1e4:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def trial_run_name(number: int, sampled: dict[str, Any] | None = None, max_len: int = 80) -> str:
    """A sweep trial's run name: ``trial-7 lr=3e-4 bs=16`` (its sampled params, short)."""
    parts = [f"trial-{number}"]
    for k, v in (sampled or {}).items():
        key = _SHORT.get(k, k.rsplit(".", 1)[-1])
        parts.append(f"{key}={_short_value(v)}")
    name = " ".join(parts)
    return name if len(name) <= max_len else name[: max_len - 1] + "…"


def searched(point: Any, searched_keys: Any) -> dict[str, Any]:
    """The entries of a trial's ``point`` that the sweep searched (not its fixed settings)."""
    return {k: v for k, v in dict(point).items() if k in searched_keys}


def dvc_tags(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Under ``dvc exp run`` (DVC sets DVC_EXP_NAME and DVC_EXP_BASELINE_REV in the stage's
    environment, dvc/repo/experiments/queue/base.py): the experiment's name and baseline."""
    env = os.environ if environ is None else environ
    tags = {}
    if env.get("DVC_EXP_NAME"):
        tags[DVC_EXP_TAG] = env["DVC_EXP_NAME"]
    if env.get("DVC_EXP_BASELINE_REV"):
        tags[DVC_BASELINE_TAG] = env["DVC_EXP_BASELINE_REV"]
    return tags


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


def logged_model_id(client: Any, run_id: str, model_uri: str | None = None) -> str | None:
    """The LoggedModel of a training run: from its ``models:/m-...`` URI, else the READY model
    whose source run is ``run_id`` (None when the run logged none)."""
    if model_uri and model_uri.startswith("models:/m-"):
        return model_uri[len("models:/") :].split("/")[0]
    exp_id = client.get_run(run_id).info.experiment_id
    ready = [m for m in client.search_logged_models([exp_id],
                                                    filter_string=f"source_run_id = '{run_id}'")
             if str(getattr(m.status, "name", m.status)).upper() == "READY"]
    return ready[-1].model_id if ready else None


def evaluation_dataset(frames: Any, name: str, source: str | None = None) -> Any:
    """An MLflow dataset (name + digest of the rows) for the frames a model is evaluated on."""
    import mlflow.data

    return mlflow.data.from_pandas(frames.reset_index(drop=True), source=source or name, name=name)


def add_test_metrics(
    run_id: str,
    metrics: dict[str, float],
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    uri: str | None = None,
    model_id: str | None = None,
    datasets: dict[str, Any] | None = None,
) -> None:
    """Log held-out errors (e.g. {"test.rmse_px": 3.2, "val.rmse_px": 2.9}) to a finished
    training run and, if given, to its registered model version (tags + description).

    ``model_id``: link them to that LoggedModel too (ranked by ``search_logged_models``);
    ``datasets``: split prefix -> DataFrame of the frames the errors were measured on, logged as
    the run's evaluation datasets and linked to the metrics whose key starts with ``<split>.``."""
    from mlflow import MlflowClient

    quiet_env()
    u = tracking_uri(uri)
    client = MlflowClient(tracking_uri=u, registry_uri=u)
    now = int(time.time() * 1000)
    from mlflow.entities import Metric

    clean = {k: float(v) for k, v in metrics.items() if _finite(v) is not None}
    if model_id or datasets:
        mark_model_experiment(client, client.get_run(run_id).info.experiment_id)
    logged = _log_datasets(client, run_id, datasets or {}, model_id)

    def metric(k: str, v: float) -> Metric:
        ds = logged.get(k.split(".", 1)[0])
        return Metric(k, v, now, 0, model_id=model_id, run_id=run_id,
                      dataset_name=ds.name if ds else None, dataset_digest=ds.digest if ds else None)

    client.log_batch(run_id, metrics=[metric(k, v) for k, v in clean.items()])
    if model_name and model_version:
        for k, v in clean.items():
            client.set_model_version_tag(model_name, str(model_version), k, f"{v:.4f}")
        run = client.get_run(run_id)
        all_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(("val.", "test."))}
        client.update_model_version(
            model_name, str(model_version), description=model_description(all_metrics)
        )


def _log_datasets(client: Any, run_id: str, frames: dict[str, Any], model_id: str | None) -> dict[str, Any]:
    """Log each split's frames as an evaluation dataset of the run (context = the split),
    linked to the model; split -> MLflow dataset."""
    if not frames:
        return {}
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

    logged = {split: evaluation_dataset(df, f"{split}-frames") for split, df in frames.items()}
    inputs = [DatasetInput(ds._to_mlflow_entity(),
                           tags=[InputTag(key="mlflow.data.context", value=split)])
              for split, ds in logged.items()]
    client.log_inputs(run_id, datasets=inputs,
                      models=[LoggedModelInput(model_id)] if model_id else None)
    return logged
