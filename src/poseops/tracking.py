"""MLflow tracking for training runs: an outbox that never loses a logged value, DeepLabCut's
logger hook, the pyfunc pose model, the Model Registry, and `poseops sync`.

Every MLflow operation of a training run (create run, params, tags, per-epoch metrics, artifacts,
model, registration, end) is first appended to a local journal (`<workdir>/tracking/outbox.jsonl`,
fsync'ed) and then sent in order by a background thread. When the tracking server is slow,
unreachable or killed, training goes on; the pending operations stay in the journal and are sent
when the server answers again, or later with `poseops sync --workdir <workdir>`.

Tracking URI: `MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseops.errors import PoseopsError
from poseops.fileio import write_json

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
LOGGER_TYPE = "PoseopsMLflowLogger"
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


def _absolute_sqlite(uri: str) -> str:
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
# Outbox: journal + background sender
# --------------------------------------------------------------------------------------------


class Outbox:
    """An append-only journal of MLflow operations for ONE run, sent in order by a thread.

    Journal lines: `{"seq": n, "op": name, ...}`. `state.json` holds `run_id`, `sent` (the last
    seq acknowledged by the server) and results (`model_uri`, `model_version`). Operations:
    create_run, log_params, set_tags, log_metrics, log_artifact, log_input, log_model,
    register_model, end_run.
    """

    def __init__(self, folder: str | Path, uri: str | None = None) -> None:
        quiet_env()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.journal = self.folder / "outbox.jsonl"
        self.state_path = self.folder / "state.json"
        self.state: dict[str, Any] = {"sent": 0, "run_id": None}
        if self.state_path.exists():
            self.state.update(json.loads(self.state_path.read_text()))
        self.uri = _absolute_sqlite(tracking_uri(uri or self.state.get("tracking_uri")))
        self.state["tracking_uri"] = self.uri
        self._ops: list[dict[str, Any]] = self._read_journal()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one sender at a time (thread or close/sync)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offline_since: float | None = None
        self._retry_s = 5.0
        # wait this long after a send so several epochs go in one log_batch: each send to a
        # SQLite store costs ~0.1 s of CPU that training (using every core) would otherwise lose
        self.min_interval_s = 5.0
        self.last_error: str | None = None
        self._save_state()

    # -- journal ---------------------------------------------------------------------------
    def _read_journal(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        text = self.journal.read_bytes()
        if text and not text.endswith(b"\n"):  # cut by a kill: end it so appends stay whole lines
            with self.journal.open("ab") as f:
                f.write(b"\n")
        ops = []
        for line in self.journal.read_text().splitlines():
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: the op was never acknowledged
                log.warning("outbox: skipping a truncated journal line in %s", self.journal)
        return ops

    def _save_state(self) -> None:
        write_json(self.state, self.state_path)

    @property
    def run_id(self) -> str | None:
        return self.state.get("run_id")

    @property
    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [op for op in self._ops if op["seq"] > self.state["sent"]]

    def put(self, op: str, **fields: Any) -> None:
        """Append one operation durably, then wake the sender."""
        with self._lock:
            seq = (self._ops[-1]["seq"] if self._ops else 0) + 1
            rec = {"seq": seq, "op": op, **fields}
            line = json.dumps(rec, default=str)
            with self.journal.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._ops.append(rec)
        self._wake.set()

    # -- sending ---------------------------------------------------------------------------
    def start(self) -> None:
        """Send in a background thread (training never waits for the server)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="poseops-outbox", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._retry_s)
            self._wake.clear()
            if self._offline_since is not None and time.time() - self._offline_since < self._retry_s:
                continue
            self.flush_once()
            self._stop.wait(self.min_interval_s)  # close() ends the wait at once

    def flush_once(self) -> bool:
        """Try to send every pending op in order; True when nothing is left."""
        with self._send_lock:
            return self._flush_once()

    def _flush_once(self) -> bool:
        pending = self.pending
        i = 0
        while i < len(pending):
            op = pending[i]
            # consecutive metric ops go in one log_batch
            batch = [op]
            if op["op"] == "log_metrics":
                while (
                    i + len(batch) < len(pending)
                    and pending[i + len(batch)]["op"] == "log_metrics"
                    and len(batch) < 50
                ):
                    batch.append(pending[i + len(batch)])
            try:
                self._send(batch)
            except Exception as e:  # noqa: BLE001 - any failure keeps the op for later
                if self._offline_since is None:
                    log.warning(
                        "MLflow server %s not reachable (%s): buffering in %s, training goes on",
                        self.uri,
                        type(e).__name__,
                        self.journal,
                    )
                self.last_error = f"{type(e).__name__}: {e}"
                self._offline_since = time.time()
                return False
            with self._lock:
                self.state["sent"] = batch[-1]["seq"]
                self._save_state()
            if self._offline_since is not None:
                log.info("MLflow server %s is back: sent buffered operations", self.uri)
                self._offline_since = None
            i += len(batch)
        return True

    def close(self, timeout_s: float = 60.0) -> bool:
        """Stop the thread, then try to drain for up to ``timeout_s``; True when all was sent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        deadline = time.time() + timeout_s
        while True:
            self._offline_since = None
            if self.flush_once():
                return True
            if time.time() + self._retry_s > deadline:
                return False
            time.sleep(self._retry_s)

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        op = batch[0]
        client = self._client()
        name = op["op"]
        if name == "create_run":
            self._create_run(client, op)
            return
        run_id = self.run_id
        if run_id is None:
            raise RuntimeError("run not created yet")
        if name == "log_metrics":
            from mlflow.entities import Metric

            metrics = [
                Metric(key=k, value=float(v), timestamp=int(o["timestamp"]), step=int(o["step"]))
                for o in batch
                for k, v in o["metrics"].items()
            ]
            for start in range(0, len(metrics), 900):
                client.log_batch(run_id, metrics=metrics[start : start + 900])
        elif name == "log_params":
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in op["params"].items()]
            existing = client.get_run(run_id).data.params
            params = [p for p in params if p.key not in existing]  # resume: params already there
            for start in range(0, len(params), 90):
                client.log_batch(run_id, params=params[start : start + 90])
        elif name == "set_tags":
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in op["tags"].items()])
        elif name == "log_artifact":
            path = Path(op["path"])
            if path.exists():
                client.log_artifact(run_id, str(path), op.get("artifact_path"))
            else:
                log.warning("outbox: artifact %s vanished before upload; skipped", path)
        elif name == "log_input":
            self._log_input(client, run_id, op)
        elif name == "log_model":
            self._log_model(op)
        elif name == "register_model":
            self._register(client, op)
        elif name == "end_run":
            client.set_terminated(run_id, status=op["status"])
        elif name == "set_status":
            client.update_run(run_id, status=op["status"])
        else:
            raise ValueError(f"unknown outbox op {name!r}")

    def _create_run(self, client: Any, op: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if self.run_id is not None:
            return
        if op.get("run_id"):  # a run made for us (e.g. by `mlflow run`): log into it
            client.log_batch(op["run_id"], tags=[RunTag(k, str(v)) for k, v in (op.get("tags") or {}).items()])
            with self._lock:
                self.state["run_id"] = op["run_id"]
                self._save_state()
            return
        exp_id = ensure_experiment(client, op["experiment"], self.uri)
        tags = dict(op.get("tags") or {})
        if op.get("parent_run_id"):
            tags["mlflow.parentRunId"] = op["parent_run_id"]
        if op.get("run_name"):
            tags["mlflow.runName"] = op["run_name"]
        run = client.create_run(exp_id, tags=tags, run_name=op.get("run_name"))
        with self._lock:
            self.state["run_id"] = run.info.run_id
            self.state["experiment_id"] = exp_id
            self._save_state()

    def _log_input(self, client: Any, run_id: str, op: dict[str, Any]) -> None:
        import mlflow
        import pandas as pd
        from mlflow.entities import InputTag

        df = pd.read_parquet(op["path"])
        ds = mlflow.data.from_pandas(df, source=op.get("source") or op["path"], name=op["name"])
        client.log_inputs(
            run_id,
            datasets=[
                mlflow.entities.DatasetInput(
                    ds._to_mlflow_entity(),
                    tags=[InputTag(key="mlflow.data.context", value=op.get("context", "training"))],
                )
            ],
        )

    def _log_model(self, op: dict[str, Any]) -> None:
        import mlflow

        with _global_uri(self.uri), mlflow.start_run(run_id=self.run_id):
            info = log_pose_model(
                Path(op["pytorch_config"]), Path(op["snapshot"]), name=op.get("name", "model")
            )
        with self._lock:
            self.state["model_uri"] = info.model_uri
            self.state["model_id"] = getattr(info, "model_id", None)
            self._save_state()

    def _register(self, client: Any, op: dict[str, Any]) -> None:
        import mlflow

        uri = self.state.get("model_uri")
        if not uri:
            raise RuntimeError("model not logged yet")
        with _global_uri(self.uri):
            mv = mlflow.register_model(
                uri, op["name"], tags={"run_id": self.run_id, **op.get("tags", {})}
            )
        if op.get("description"):
            client.update_model_version(op["name"], mv.version, description=op["description"])
        with self._lock:
            self.state["model_name"] = op["name"]
            self.state["model_version"] = str(mv.version)
            self._save_state()


@contextmanager
def _global_uri(uri: str) -> Iterator[None]:
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
# DeepLabCut logger hook
# --------------------------------------------------------------------------------------------


class EpochSink:
    """What the DLC logger talks to: one per training session (set by poseops.train)."""

    def on_log(self, metrics: dict[str, float], step: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


_LOGGER_CLASS: type | None = None


def register_dlc_logger() -> str:
    """Register PoseopsMLflowLogger in DLC's LOGGER registry (once); return its type name."""
    global _LOGGER_CLASS
    if _LOGGER_CLASS is not None:
        return LOGGER_TYPE
    from deeplabcut.pose_estimation_pytorch.runners.logger import LOGGER, BaseLogger

    class PoseopsMLflowLogger(BaseLogger):
        """Receives DLC's `log(metrics, step=epoch)` calls (train losses, then validation losses
        and metrics) and forwards them to the session (MLflow outbox, progress, callback)."""

        def __init__(self, sink: EpochSink, model: Any = None, train_folder: Any = None) -> None:
            super().__init__()
            self.sink = sink

        def log_config(self, config: dict | None = None) -> None:
            pass  # poseops logs the resolved config itself (params + pytorch_config.yaml)

        def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
            self.sink.on_log(dict(metrics), int(step or 0))

        def save(self) -> None:
            pass

    if LOGGER_TYPE not in LOGGER.module_dict:
        LOGGER.register_module(PoseopsMLflowLogger)
    _LOGGER_CLASS = LOGGER.module_dict[LOGGER_TYPE]
    return LOGGER_TYPE


# --------------------------------------------------------------------------------------------
# Pyfunc model
# --------------------------------------------------------------------------------------------


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class DLCPoseModel(mlflow.pyfunc.PythonModel):
        """A DeepLabCut 3 snapshot as an MLflow pyfunc model.

        predict(images) with images = a list of image paths, a DataFrame with an `image`
        column (paths), one RGB uint8 array (H, W, 3) or a stack (N, H, W, 3). Returns the tidy
        predictions table: one row per (image, bodypart) with columns image (path or index),
        individual, bodypart, x, y, likelihood (pixel coordinates of the input image).
        """

        def load_context(self, context: Any) -> None:
            import yaml

            cfg = yaml.safe_load(Path(context.artifacts["pytorch_config"]).read_text())
            self.bodyparts = list(cfg["metadata"]["bodyparts"])
            self.individuals = list(cfg["metadata"].get("individuals") or ["animal"])
            self._cfg = cfg
            self._snapshot = context.artifacts["snapshot"]
            self._runner = None

        def _get_runner(self) -> Any:
            if self._runner is None:
                from deeplabcut.pose_estimation_pytorch.apis.utils import (
                    get_pose_inference_runner,
                )

                device = os.environ.get("POSEOPS_DEVICE") or (
                    "cuda" if _cuda_available() else "cpu"
                )
                self._runner = get_pose_inference_runner(
                    model_config=self._cfg, snapshot_path=self._snapshot, batch_size=1, device=device
                )
            return self._runner

        def predict(self, context, model_input, params=None):  # noqa: ANN001 (MLflow reads hints)
            return predict_images(self._get_runner(), model_input, self.bodyparts, self.individuals)

    return DLCPoseModel


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _as_image_list(model_input: Any) -> tuple[list[Any], list[Any]]:
    """(inputs for DLC, names for the output table) from the accepted pyfunc inputs."""
    import numpy as np
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        col = "image" if "image" in model_input.columns else model_input.columns[0]
        paths = [str(p) for p in model_input[col]]
        return paths, paths
    if isinstance(model_input, np.ndarray):
        arr = model_input[None] if model_input.ndim == 3 else model_input
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise PoseopsError(f"images array must be (N, H, W, 3) RGB, got {model_input.shape}")
        return [np.ascontiguousarray(a, dtype=np.uint8) for a in arr], list(range(len(arr)))
    if isinstance(model_input, str | Path):
        return [str(model_input)], [str(model_input)]
    items = list(model_input)
    names = [str(x) if isinstance(x, str | Path) else i for i, x in enumerate(items)]
    return [str(x) if isinstance(x, Path) else x for x in items], names


def predict_images(runner: Any, model_input: Any, bodyparts: list[str], individuals: list[str]) -> Any:
    """Run a DLC inference runner on images; tidy table image, individual, bodypart, x, y,
    likelihood (one row per image x individual x bodypart)."""
    import pandas as pd

    images, names = _as_image_list(model_input)
    rows = []
    for name, out in zip(names, runner.inference(images), strict=True):
        pose = out["bodyparts"]  # (individuals, bodyparts, 3) = x, y, score
        for i in range(pose.shape[0]):
            ind = individuals[i] if i < len(individuals) else f"individual{i}"
            for b, bp in enumerate(bodyparts):
                x, y, s = (float(v) for v in pose[i, b, :3])
                rows.append((name, ind, bp, x, y, s))
    return pd.DataFrame(rows, columns=["image", "individual", "bodypart", "x", "y", "likelihood"])


def log_pose_model(pytorch_config: Path, snapshot: Path, name: str = "model") -> Any:
    """Log the DLC snapshot as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    import mlflow

    import poseops

    cls = _pyfunc_class()
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=cls(),
        artifacts={"pytorch_config": str(pytorch_config), "snapshot": str(snapshot)},
        pip_requirements=[
            "deeplabcut==3.0.2",
            "torch==2.14.1",
            "torchvision==0.29.1",
            f"poseops=={poseops.__version__}",
        ],
    )


# --------------------------------------------------------------------------------------------
# Registry helpers (the evaluate stage adds test errors)
# --------------------------------------------------------------------------------------------


def model_description(metrics: dict[str, float]) -> str:
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


# --------------------------------------------------------------------------------------------
# `poseops sync`
# --------------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    run_id: str | None
    sent: int
    pending: int


def sync(workdir: str | Path, uri: str | None = None, timeout_s: float = 60.0) -> SyncResult:
    """Send what a training run buffered while the tracking server was away."""
    quiet_env()
    folder = Path(workdir) / "tracking"
    if not (folder / "outbox.jsonl").exists():
        raise PoseopsError("no tracking outbox here (train first)", file=folder)
    box = Outbox(folder, uri)
    before = len(box.pending)
    box.close(timeout_s=timeout_s)
    after = len(box.pending)
    if after:
        raise PoseopsError(
            f"{after} operation(s) still pending: tracking server {box.uri} unreachable "
            f"({box.last_error})",
            file=box.journal,
        )
    _update_run_json(Path(workdir), box)
    return SyncResult(box.run_id, before - after, after)


def _update_run_json(workdir: Path, box: Outbox) -> None:
    path = workdir / "run.json"
    if path.exists():
        info = json.loads(path.read_text())
        for key in ("run_id", "model_uri", "model_version", "model_name"):
            if box.state.get(key):
                info[key] = box.state[key]
        info["tracking_pending"] = len(box.pending)
        write_json(info, path)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sync", help="send MLflow operations buffered while the tracking server was unreachable"
    )
    p.add_argument("--workdir", default="data/train", help="training workdir (default data/train)")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=_cli_sync)


def _cli_sync(args: argparse.Namespace) -> int:
    res = sync(args.workdir, args.tracking_uri, args.timeout)
    print(f"synced run {res.run_id}: {res.sent} operation(s) sent, {res.pending} pending")
    return 0
