"""MLflow tracking for training runs: an outbox that never loses a logged value, DeepLabCut's
logger hook, the pyfunc pose model, the Model Registry, and `poseops sync`.

Every MLflow operation of a training run (create run, params, tags, per-epoch metrics, artifacts,
model, registration, end) is first appended to a local journal (`<workdir>/tracking/outbox.jsonl`,
fsync'ed) and then sent in order by a background thread. When the tracking server is slow,
unreachable or killed, training goes on; the pending operations stay in the journal and are sent
when the server answers again, or later with `poseops sync --workdir <workdir>`.

Nothing is lost and nothing is sent twice: a journal that still holds unsent operations is never
deleted (a new training or a finished sweep trial moves it to `<workdir>/tracking-pending/`, which
`poseops sync` also sends); errors are classified (a connection error, timeout, 5xx, 408 or 429 is
retried; any other 4xx stops the journal at that operation with a one-line error naming it, and
`poseops sync --skip-failed` skips it, recorded in `state.json`); run creation, model logging and
registration look for what an earlier attempt (whose answer was lost) already made before making
it again (a client-side run id tag `poseops.client_run_id`); and one process at a time sends a
journal (a lock file, `tracking/send.lock`).

Tracking URI: `MLFLOW_TRACKING_URI` if set (a team server), else `sqlite:///<repo>/mlflow.db`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
LOGGER_TYPE = "PoseopsMLflowLogger"
# MLflow metric names for DLC's learning_stats.csv columns: DLC calls the frames it evaluates
# during training "test"; poseops gives it the validation frames, so they are "val" here.
VAL_RMSE = "val.rmse"
CLIENT_RUN_ID_TAG = "poseops.client_run_id"  # set before create_run: a replay finds the run
PENDING_DIR = "tracking-pending"  # journals set aside with unsent operations (sent by sync)
TRANSIENT_HTTP = {408, 429}  # 4xx codes worth retrying (timeout, rate limit)


class PermanentOpError(Exception):
    """An operation that cannot succeed by retrying (e.g. its run was never created)."""


def is_permanent(exc: BaseException) -> bool:
    """True for an error a retry cannot fix: MLflow's answer with a 4xx status (but 408/429),
    a malformed operation, a missing local file. Connection errors, timeouts, 5xx and anything
    unknown are transient (retried)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, PermanentOpError):
        return True
    if isinstance(exc, MlflowException):
        try:
            code = int(exc.get_http_status_code())
        except Exception:  # noqa: BLE001 - an unknown code: retry
            return False
        return 400 <= code < 500 and code not in TRANSIENT_HTTP
    return isinstance(exc, ValueError | TypeError | KeyError | FileNotFoundError)


def describe_op(op: dict[str, Any]) -> str:
    """`#12 log_params (lr, epochs)`: an operation named for a person reading an error."""
    name = op.get("op")
    key: Any = None
    if name == "log_metrics":
        key = f"step {op.get('step')}"
    elif name in ("log_params", "set_tags"):
        d = op.get("params") or op.get("tags") or {}
        key = ", ".join(list(d)[:3]) + (", ..." if len(d) > 3 else "")
    elif name in ("log_artifact", "log_input"):
        key = op.get("path")
    elif name == "log_model":
        key = op.get("snapshot")
    elif name in ("register_model", "create_run"):
        key = op.get("name") or op.get("run_name") or op.get("experiment")
    elif name in ("end_run", "set_status"):
        key = op.get("status")
    return f"#{op.get('seq')} {name}" + (f" ({key})" if key else "")


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

    Journal lines: `{"seq": n, "op": name, ...}` (create_run carries `client_run_id`, the tag a
    replay finds the run by). `state.json` holds `run_id`, `sent` (the last seq acknowledged by
    the server), results (`model_uri`, `model_version`), `failed` (the op a server refused for
    good, while it blocks) and `skipped` (refused ops skipped with ``skip_failed``). Operations:
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
        self.lock_wait_s = 2.0  # wait this long for another process sending this journal
        self.skip_failed = False  # True: skip (and record) an op the server refuses for good
        self.blocked: dict[str, Any] | None = None  # the op refused for good, until skipped
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
        return journal_ops(self.journal)

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
        if op == "create_run" and not fields.get("client_run_id"):
            fields["client_run_id"] = uuid.uuid4().hex  # journaled before the create is sent
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
        """Try to send every pending op in order; True when nothing is left. One process at a
        time: another one sending this journal (training, `poseops sync`) makes this return
        False after ``lock_wait_s`` with ``last_error`` saying so."""
        with self._send_lock, self._process_lock() as mine:
            if not mine:
                self.last_error = f"another process is sending {self.journal}"
                return False
            self._reload_state()
            return self._flush_once()

    @contextlib.contextmanager
    def _process_lock(self) -> Iterator[bool]:
        with (self.folder / "send.lock").open("a") as f:
            deadline = time.monotonic() + self.lock_wait_s
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.1)
            try:
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _reload_state(self) -> None:
        """Another process may have sent part of this journal: take its progress."""
        try:
            disk = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        with self._lock:
            sent = max(int(self.state.get("sent") or 0), int(disk.get("sent") or 0))
            self.state.update(disk)  # every change is saved at once, under the process lock
            self.state["sent"] = sent

    def _mark_sent(self, seq: int) -> None:
        with self._lock:
            self.state["sent"] = seq
            if (self.state.get("failed") or {}).get("seq", seq + 1) <= seq:
                self.state.pop("failed")  # refused once, sent since (the cause was fixed)
            self._save_state()

    def _refused(self, op: dict[str, Any], e: BaseException) -> bool:
        """A permanent error on ``op``: skip it (``skip_failed``, recorded) -> True, else block
        the journal there with a one-line error -> False."""
        why = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        rec = {"seq": op["seq"], "op": op["op"], "what": describe_op(op), "error": why}
        if self.skip_failed:
            log.warning("outbox: skipping %s refused by %s: %s", rec["what"], self.uri, why)
            with self._lock:
                self.state.setdefault("skipped", []).append(rec)
                self.state.pop("failed", None)
                self.state["sent"] = op["seq"]
                self._save_state()
            return True
        self.blocked = rec
        with self._lock:
            self.state["failed"] = rec
            self._save_state()
        self.last_error = (
            f"MLflow ({self.uri}) refused operation {rec['what']} (line seq {op['seq']} of "
            f"{self.journal}): {why}; later operations wait. Fix the cause and run `poseops sync "
            f"--workdir {self.folder.parent}`, or skip it with --skip-failed"
        )
        log.error("%s", self.last_error)
        return False

    def _flush_once(self) -> bool:
        if self.blocked is not None:
            return False
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
                try:
                    self._send(batch)
                except Exception as e:  # noqa: BLE001 - classified below
                    if not is_permanent(e):
                        raise
                    if len(batch) > 1:  # find the op the server refuses: one at a time
                        for one in batch:
                            try:
                                self._send([one])
                            except Exception as e1:  # noqa: BLE001 - classified
                                if not is_permanent(e1):
                                    raise
                                if not self._refused(one, e1):
                                    return False
                            else:
                                self._mark_sent(one["seq"])
                        i += len(batch)
                        continue
                    if not self._refused(op, e):
                        return False
                    i += 1
                    continue
            except Exception as e:  # noqa: BLE001 - a transient failure keeps the op for later
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
            self._mark_sent(batch[-1]["seq"])
            if self._offline_since is not None:
                log.info("MLflow server %s is back: sent buffered operations", self.uri)
                self._offline_since = None
            i += len(batch)
        return True

    def close(self, timeout_s: float = 60.0) -> bool:
        """Stop the thread, then try to drain for up to ``timeout_s``; True when all was sent."""
        stop_system_metrics(self)
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
            if self.blocked is not None or time.time() + self._retry_s > deadline:
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
            raise PermanentOpError("run not created (its create_run operation failed or was skipped)")
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
        cid = op.get("client_run_id")
        run = None
        if cid:  # an earlier attempt whose answer was lost may have made it: never make two
            from mlflow.entities import ViewType

            tags[CLIENT_RUN_ID_TAG] = cid
            found = client.search_runs([exp_id], filter_string=f"tags.`{CLIENT_RUN_ID_TAG}` = '{cid}'",
                                       run_view_type=ViewType.ALL, max_results=1)
            run = found[0] if found else None
        if run is None:
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

        if self.state.get("model_uri"):
            return
        client = self._client()
        name = op.get("name", "model")
        exp_id = client.get_run(self.run_id).info.experiment_id
        # an earlier attempt whose answer was lost: adopt its (complete) model
        for m in client.search_logged_models([exp_id], filter_string=f"source_run_id = '{self.run_id}'"):
            if m.name == name and str(getattr(m.status, "name", m.status)).upper() == "READY":
                with self._lock:
                    self.state["model_uri"] = m.model_uri
                    self.state["model_id"] = m.model_id
                    self._save_state()
                return
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
            raise PermanentOpError("model not logged (its log_model operation failed or was skipped)")
        if self.state.get("model_version") and self.state.get("model_name") == op["name"]:
            return
        # an earlier attempt whose answer was lost: adopt the version it made
        mv = next((v for v in client.search_model_versions(f"name = '{op['name']}'")
                   if v.source == uri or (v.tags or {}).get("run_id") == self.run_id), None)
        if mv is None:
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
    """What the DLC logger talks to: one per training session (set by poseops.train.trainer)."""

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
            # multi-animal projects: unique bodyparts come out under individual "single"
            self.unique_bodyparts = list(cfg["metadata"].get("unique_bodyparts") or [])
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
                # batches hold images of one size (inference_by_size): mixed sizes are fine
                self._runner = get_pose_inference_runner(
                    model_config=self._cfg, snapshot_path=self._snapshot, batch_size=8, device=device
                )
            return self._runner

        def predict(self, context, model_input, params=None):  # noqa: ANN001 (MLflow reads hints)
            return predict_images(self._get_runner(), model_input, self.bodyparts, self.individuals,
                                  self.unique_bodyparts)

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


def _input_size(image: Any) -> tuple[int, int]:
    """(width, height) of an image path (header only) or an (H, W, 3) array."""
    if isinstance(image, str | Path):
        from poseops.dlc.files import image_size

        return image_size(Path(image))
    return int(image.shape[1]), int(image.shape[0])


def inference_by_size(runner: Any, images: list[Any]) -> list[Any]:
    """``runner.inference(images)`` with each call given images of one size only, results in
    the input order.

    DeepLabCut's inference runner stacks up to ``batch_size`` preprocessed images into one tensor
    (``torch.stack``), which fails for a project with two frame sizes; every ``inference`` call
    flushes its last partial batch, so one call per size never mixes sizes in a batch.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(_input_size(image), []).append(i)
    out: list[Any] = [None] * len(images)
    for idx in groups.values():
        for i, result in zip(idx, runner.inference([images[i] for i in idx]), strict=True):
            out[i] = result
    return out


def predict_images(
    runner: Any, model_input: Any, bodyparts: list[str], individuals: list[str],
    unique_bodyparts: list[str] | None = None,
) -> Any:
    """Run a DLC inference runner on images; tidy table image, individual, bodypart, x, y,
    likelihood (one row per image x individual x bodypart; a multi-animal model's
    ``unique_bodyparts`` follow under individual ``single``)."""
    import pandas as pd

    images, names = _as_image_list(model_input)
    rows = []
    for name, out in zip(names, inference_by_size(runner, images), strict=True):
        pose = out["bodyparts"]  # (individuals, bodyparts, 3) = x, y, score
        for i in range(pose.shape[0]):
            ind = individuals[i] if i < len(individuals) else f"individual{i}"
            for b, bp in enumerate(bodyparts):
                x, y, s = (float(v) for v in pose[i, b, :3])
                rows.append((name, ind, bp, x, y, s))
        if unique_bodyparts and "unique_bodyparts" in out:
            for b, bp in enumerate(unique_bodyparts):
                x, y, s = (float(v) for v in out["unique_bodyparts"][0, b, :3])
                rows.append((name, "single", bp, x, y, s))
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


_FILE_KEYS = ("path", "pytorch_config", "snapshot")  # op fields naming a file to upload


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
        monitor = SystemMetricsMonitor(outbox.run_id, sampling_interval=interval_s,
                                       node_id=node, tracking_uri=outbox.uri)
        monitor.start()
    except Exception as e:  # noqa: BLE001 - telemetry: never fail a training for it
        log.warning("system metrics off: %s", e)
        return None
    outbox.system_metrics = monitor
    return monitor


def stop_system_metrics(outbox: Outbox) -> None:
    monitor = getattr(outbox, "system_metrics", None)
    if monitor is None:
        return
    outbox.system_metrics = None
    try:
        monitor.finish()
    except Exception as e:  # noqa: BLE001
        log.warning("system metrics: %s", e)


def journal_ops(journal: Path) -> list[dict[str, Any]]:
    """The operations of an outbox journal file, in order; a line cut by a kill is skipped (its
    op was never acknowledged)."""
    ops = []
    for line in journal.read_text().splitlines():
        if not line.strip():
            continue
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("outbox: skipping a truncated journal line in %s", journal)
    return ops


def unsent_ops(folder: str | Path) -> list[dict[str, Any]]:
    """Operations of the journal in ``folder`` not acknowledged by a server ([]: none/no
    journal), read without opening an Outbox (which would create and resolve things)."""
    folder = Path(folder)
    journal = folder / "outbox.jsonl"
    if not journal.exists():
        return []
    try:
        sent = int(json.loads((folder / "state.json").read_text()).get("sent") or 0)
    except (OSError, ValueError):
        sent = 0
    return [op for op in journal_ops(journal) if int(op.get("seq") or 0) > sent]


def set_aside_unsent(folder: str | Path, pending_root: str | Path, label: str = "") -> Path | None:
    """Remove the outbox ``folder``, unless it holds unsent operations: then move it to
    ``pending_root/<label><timestamp>`` (which `poseops sync` sends) with a copy of every file its
    unsent operations upload (the working copy they live in is about to go). Returns the new
    folder, or None when there was nothing to keep."""
    folder = Path(folder)
    if not folder.exists():
        return None
    unsent = unsent_ops(folder)
    if not unsent:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    ops = journal_ops(folder / "outbox.jsonl")
    dest = Path(pending_root) / f"{label}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), dest)
    seqs = {op["seq"] for op in unsent}
    for op in ops:
        if op.get("seq") not in seqs:
            continue
        for key in _FILE_KEYS:  # copied out of the working copy, which is about to go
            src = Path(str(op.get(key) or ""))
            if op.get(key) and src.is_file() and dest not in src.parents:
                copy = dest / "files" / f"{op['seq']}-{key}" / src.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, copy)
                op[key] = str(copy.resolve())
    tmp = dest / "outbox.jsonl.tmp"
    tmp.write_text("".join(json.dumps(op, default=str) + "\n" for op in ops))
    os.replace(tmp, dest / "outbox.jsonl")
    log.warning("%d unsent MLflow operation(s) of %s kept in %s: send them with `poseops sync "
                "--workdir %s`", len(unsent), folder, dest, Path(pending_root).parent)
    return dest


@dataclass
class SyncResult:
    run_id: str | None
    sent: int
    pending: int
    skipped: int = 0
    journals: int = 1  # outboxes sent: tracking/ and each tracking-pending/* folder


def sync(workdir: str | Path, uri: str | None = None, timeout_s: float = 60.0,
         skip_failed: bool = False) -> SyncResult:
    """Send what a training run buffered while the tracking server was away: `<workdir>/tracking`
    and every journal set aside in `<workdir>/tracking-pending/` (removed once all is sent).

    ``skip_failed``: an operation the server refuses for good (a 4xx answer) is skipped and
    recorded in the journal's state.json (``skipped``); by default it stops the sending with an
    error naming it."""
    quiet_env()
    workdir = Path(workdir)
    main = workdir / "tracking"
    folders = [main] if (main / "outbox.jsonl").exists() else []
    folders += sorted(d for d in (workdir / PENDING_DIR).glob("*") if (d / "outbox.jsonl").exists())
    if not folders:
        raise PoseopsError("no tracking outbox here (train first)", file=main)
    sent = pending = skipped = 0
    run_id, errors = None, []
    for folder in folders:
        box = Outbox(folder, uri)
        box.skip_failed = skip_failed
        before, skipped_before = len(box.pending), len(box.state.get("skipped") or [])
        box.close(timeout_s=timeout_s)
        after = len(box.pending)
        n_skipped = len(box.state.get("skipped") or []) - skipped_before
        sent, pending, skipped = sent + before - after - n_skipped, pending + after, skipped + n_skipped
        if folder == main:
            run_id = box.run_id
            _update_run_json(workdir, box)
        elif after == 0:
            shutil.rmtree(folder, ignore_errors=True)  # all sent: nothing left to keep
        if after:
            errors.append((box, after))
    if errors:
        box, after = errors[0]
        raise PoseopsError(
            f"{pending} operation(s) still pending in {len(errors)} journal(s); {box.journal}: "
            + (box.last_error if box.blocked else f"tracking server {box.uri} unreachable "
               f"({box.last_error})"),
            file=box.journal,
        )
    return SyncResult(run_id if folders[0] == main else None, sent, pending, skipped, len(folders))


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
    p.add_argument("--skip-failed", action="store_true",
                   help="skip (and record in state.json) operations the server refuses for good")
    p.set_defaults(func=_cli_sync)


def _cli_sync(args: argparse.Namespace) -> int:
    res = sync(args.workdir, args.tracking_uri, args.timeout, skip_failed=args.skip_failed)
    print(f"synced run {res.run_id}: {res.sent} operation(s) sent, {res.pending} pending"
          + (f", {res.skipped} skipped" if res.skipped else "")
          + (f" ({res.journals} journals)" if res.journals > 1 else ""))
    return 0
