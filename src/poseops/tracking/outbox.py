"""The MLflow outbox: a journal that never loses a logged value, and its sender.

Every MLflow operation of a training run (create run, params, tags, per-epoch metrics, artifacts,
model, registration, end) is first appended to a local journal (`<workdir>/tracking/outbox.jsonl`,
fsync'ed) and then sent in order by a background thread. When the tracking server is slow,
unreachable or killed, training goes on; the pending operations stay in the journal and are sent
when the server answers again, or later with `poseops sync --workdir <workdir>`
(:mod:`poseops.tracking.sync`).

Nothing is lost and nothing is sent twice: errors are classified (a connection error, timeout,
5xx, 408 or 429 is retried; any other 4xx stops the journal at that operation with a one-line
error naming it, and `poseops sync --skip-failed` skips it, recorded in `state.json`); run
creation, model logging and registration look for what an earlier attempt (whose answer was lost)
already made before making it again (a client-side run id tag `poseops.client_run_id`); and one
process at a time sends a journal (a lock file, `tracking/send.lock`).

Operations are sent by the handlers of :data:`HANDLERS` (operation name -> function); ``put``
refuses a name that has none. Only the journal's last line can be cut (by a kill): it is dropped
when the journal is opened; any other unreadable line stops with a one-line error naming the file
and line, nothing sent or removed. An unreadable `state.json` is kept aside and the progress
rebuilt (every op replayed; the handlers find what the server already has).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from poseops.core.errors import PoseopsError
from poseops.core.redact import redact, redact_obj, restore_uri
from poseops.tracking.runs import (
    absolute_sqlite,
    ensure_experiment,
    global_uri,
    mark_model_experiment,
    quiet_env,
    tracking_uri,
)
from poseops.tracking.system import stop_system_metrics

log = logging.getLogger(__name__)

CLIENT_RUN_ID_TAG = "poseops.client_run_id"  # set before create_run: a replay finds the run
TRANSIENT_HTTP = {408, 429}  # 4xx codes worth retrying (timeout, rate limit)
METRICS_PER_BATCH = 50  # consecutive log_metrics operations sent in one go

# (pytorch_config.yaml, snapshot, model name[, model_id=]) -> MLflow ModelInfo: logs the model in
# the active run (poseops.train.model.log_pose_model), into the logged model ``model_id`` when
# given (a PENDING one an interrupted upload left); given to the Outbox by its owner
ModelLogger = Callable[[Path, Path, str], Any]


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
    if name in ("log_metrics", "redo_metrics"):
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


def journal_ops(journal: Path) -> list[dict[str, Any]]:
    """The operations of an outbox journal file, in order. Only the last line can come from a
    kill (cut while written, its op never acknowledged): it is skipped with a warning. Any other
    line that is not an operation (not JSON, not ``{"seq": n, "op": <known name>}``, a seq out of
    order) raises a one-line PoseopsError naming the file and line; a line repeated whole is read
    once."""
    return _parse_journal(journal)[0]


def _parse_journal(journal: Path) -> tuple[list[dict[str, Any]], int | None]:
    """(operations, byte offset where a torn last line starts, or None)."""
    data = journal.read_bytes()
    ops: list[dict[str, Any]] = []
    by_seq: dict[int, dict[str, Any]] = {}
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    offset = 0
    for i, raw in enumerate(lines):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            if i == last:  # cut by a kill: never acknowledged
                log.warning("outbox: skipping the truncated last line %d of %s", i + 1, journal)
                return ops, start
            raise _bad_line(journal, i + 1, f"not JSON ({e})") from None
        why = _not_an_op(rec)
        if why:
            raise _bad_line(journal, i + 1, why)
        seq = rec["seq"]
        if seq in by_seq:
            if by_seq[seq] == rec:
                continue  # the same line twice: one operation
            raise _bad_line(journal, i + 1, f"seq {seq} already used by another operation")
        if ops and seq < ops[-1]["seq"]:
            raise _bad_line(journal, i + 1, f"seq {seq} after seq {ops[-1]['seq']}")
        by_seq[seq] = rec
        ops.append(rec)
    return ops, None


def _not_an_op(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an operation"
    if not isinstance(rec.get("seq"), int) or isinstance(rec.get("seq"), bool):
        return "no integer 'seq'"
    if rec.get("op") not in HANDLERS:
        return f"unknown operation {rec.get('op')!r}"
    return None


def _bad_line(journal: Path, line: int, why: str) -> PoseopsError:
    return PoseopsError(
        f"line {line}: unreadable outbox journal line ({' '.join(why.split())[:200]}); nothing "
        "was sent or removed: fix or delete that line, then run `poseops sync` again",
        file=journal,
    )


# --------------------------------------------------------------------------------------------
# Operation handlers: (outbox, MLflow client, batch of ops of that name) -> None
# --------------------------------------------------------------------------------------------


def _create_run(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    from mlflow.entities import RunTag

    op = batch[0]
    if box.run_id is not None:
        return
    if op.get("run_id"):  # a run made for us (e.g. by `mlflow run`): log into it
        client.log_batch(op["run_id"], tags=[RunTag(k, str(v)) for k, v in (op.get("tags") or {}).items()])
        mark_model_experiment(client, client.get_run(op["run_id"]).info.experiment_id)
        box.update_state(run_id=op["run_id"])
        return
    exp_id = ensure_experiment(client, op["experiment"], box.uri)
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
    box.update_state(run_id=run.info.run_id, experiment_id=exp_id)


def _log_metrics(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    from mlflow.entities import Metric

    metrics = [
        Metric(key=k, value=float(v), timestamp=int(o["timestamp"]), step=int(o["step"]))
        for o in batch
        for k, v in o["metrics"].items()
    ]
    for start in range(0, len(metrics), 900):
        client.log_batch(box.run_id, metrics=metrics[start : start + 900])


REDONE_TAG = "redone_epochs"  # the epochs trained again after a resume fell back: "3,4"


def _redo_metrics(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    """An epoch trained again (a resume fell back before it): its new values at the same step,
    logged later so MLflow's latest value is the new one, and the step named in a run tag."""
    from mlflow.entities import RunTag

    _log_metrics(box, client, batch)
    tags = client.get_run(box.run_id).data.tags
    steps = {int(s) for s in (tags.get(REDONE_TAG) or "").split(",") if s.strip()}
    steps |= {int(o["step"]) for o in batch}
    client.log_batch(box.run_id, tags=[RunTag(REDONE_TAG, ",".join(map(str, sorted(steps))))])


def _log_params(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    from mlflow.entities import Param

    params = [Param(k, str(v)[:6000]) for k, v in batch[0]["params"].items()]
    existing = client.get_run(box.run_id).data.params
    params = [p for p in params if p.key not in existing]  # resume: params already there
    for start in range(0, len(params), 90):
        client.log_batch(box.run_id, params=params[start : start + 90])


def _set_tags(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(box.run_id, tags=[RunTag(k, str(v)) for k, v in batch[0]["tags"].items()])


def _log_artifact(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    op = batch[0]
    path = Path(op["path"])
    if path.exists():
        client.log_artifact(box.run_id, str(path), op.get("artifact_path"))
    else:
        log.warning("outbox: artifact %s vanished before upload; skipped", path)


def _log_input(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    import mlflow
    import pandas as pd
    from mlflow.entities import InputTag

    op = batch[0]
    df = pd.read_parquet(op["path"])
    ds = mlflow.data.from_pandas(df, source=op.get("source") or op["path"], name=op["name"])
    client.log_inputs(
        box.run_id,
        datasets=[
            mlflow.entities.DatasetInput(
                ds._to_mlflow_entity(),
                tags=[InputTag(key="mlflow.data.context", value=op.get("context", "training"))],
            )
        ],
    )


def _log_model(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    import mlflow

    op = batch[0]
    if box.state.get("model_uri"):
        return
    name = op.get("name", "model")
    exp_id = client.get_run(box.run_id).info.experiment_id
    # an earlier attempt whose answer was lost: adopt its (complete) model; one cut during its
    # upload (PENDING, or FAILED) is finished: its artifacts uploaded again into it, then READY
    pending = None
    for m in client.search_logged_models([exp_id], filter_string=f"source_run_id = '{box.run_id}'"):
        status = str(getattr(m.status, "name", m.status)).upper()
        if m.name == name and status == "READY":
            box.update_state(model_uri=m.model_uri, model_id=m.model_id)
            return
        if m.name == name and status in ("PENDING", "FAILED"):  # cut, or failed mid-upload
            pending = m.model_id
    if box.model_logger is None:
        raise PermanentOpError("no model logger given to this outbox (send it with `poseops sync`)")
    args = (Path(op["pytorch_config"]), Path(op["snapshot"]), name)
    extra = {"example_image": op["example_image"]} if op.get("example_image") else {}
    with global_uri(box.uri):
        if pending:  # outside the run: its link to the model (and the model's metrics) exist
            info = box.model_logger(*args, model_id=pending, **extra)
        else:
            with mlflow.start_run(run_id=box.run_id):
                info = box.model_logger(*args, **extra)
    box.update_state(model_uri=info.model_uri, model_id=getattr(info, "model_id", None))


def _register_model(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    import mlflow

    op = batch[0]
    uri = box.state.get("model_uri")
    if not uri:
        raise PermanentOpError("model not logged (its log_model operation failed or was skipped)")
    if box.state.get("model_version") and box.state.get("model_name") == op["name"]:
        return
    # an earlier attempt whose answer was lost: adopt the version it made
    mv = next((v for v in client.search_model_versions(f"name = '{op['name']}'")
               if v.source == uri or (v.tags or {}).get("run_id") == box.run_id), None)
    if mv is None:
        with global_uri(box.uri):
            mv = mlflow.register_model(
                uri, op["name"], tags={"run_id": box.run_id, **op.get("tags", {})}
            )
    if op.get("description"):
        client.update_model_version(op["name"], mv.version, description=op["description"])
    box.update_state(model_name=op["name"], model_version=str(mv.version))


def _end_run(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    client.set_terminated(box.run_id, status=batch[0]["status"])


def _set_status(box: Outbox, client: Any, batch: list[dict[str, Any]]) -> None:
    client.update_run(box.run_id, status=batch[0]["status"])


OpHandler = Callable[["Outbox", Any, list[dict[str, Any]]], None]
HANDLERS: dict[str, OpHandler] = {
    "create_run": _create_run,
    "log_params": _log_params,
    "set_tags": _set_tags,
    "log_metrics": _log_metrics,
    "redo_metrics": _redo_metrics,
    "log_artifact": _log_artifact,
    "log_input": _log_input,
    "log_model": _log_model,
    "register_model": _register_model,
    "end_run": _end_run,
    "set_status": _set_status,
}


# --------------------------------------------------------------------------------------------
# Outbox: journal + background sender
# --------------------------------------------------------------------------------------------


class Journal:
    """An append-only journal of MLflow operations for ONE run and its progress (no sending).

    Journal lines (`<folder>/outbox.jsonl`): `{"seq": n, "op": name, ...}` (create_run carries
    `client_run_id`, the tag a replay finds the run by); operations are the keys of
    :data:`HANDLERS`. `state.json` holds `run_id`, `sent` (the last seq acknowledged by the
    server), results (`model_uri`, `model_version`), `failed` (the op a server refused for good,
    while it blocks) and `skipped` (refused ops skipped with ``skip_failed``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.journal = self.folder / "outbox.jsonl"
        self.state_path = self.folder / "state.json"
        self._lock = threading.Lock()
        self._ops: list[dict[str, Any]] = self._read_journal()
        self.state: dict[str, Any] = {"sent": 0, "run_id": None}
        self.state.update(self._read_state())

    def _read_journal(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        ops, torn = _parse_journal(self.journal)
        if torn is not None:  # cut by a kill: its op was never acknowledged; appends follow it
            with self.journal.open("r+b") as f:
                f.truncate(torn)
                f.flush()
                os.fsync(f.fileno())
        return ops

    def _read_state(self) -> dict[str, Any]:
        """state.json; an unreadable one (cut, edited) is kept aside as state.json.bad and the
        progress rebuilt: every op is sent again, and the handlers find what the server already
        has (the run by its client id, identical metric points, params, the model, the version)."""
        if not self.state_path.exists():
            return {}
        try:
            state = json.loads(self.state_path.read_text())
            if not isinstance(state, dict) or not isinstance(state.get("sent", 0), int):
                raise ValueError("not a state object")
            return state
        except (OSError, ValueError) as e:
            bad = self.state_path.with_name("state.json.bad")
            os.replace(self.state_path, bad)
            log.warning("outbox: %s unreadable (%s), kept as %s; progress rebuilt from the journal "
                        "and the tracking server", self.state_path, " ".join(str(e).split())[:200], bad)
            return {"rebuilt": True}

    def _save_state(self) -> None:
        """Write state.json whole or not at all (temp file, fsync, rename)."""
        tmp = self.state_path.with_name(f".state.json.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("w") as f:
            json.dump(redact_obj(self.state), f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def update_state(self, **values: Any) -> None:
        """Set ``values`` in state.json (saved at once)."""
        with self._lock:
            self.state.update(values)
            self._save_state()

    @property
    def run_id(self) -> str | None:
        return self.state.get("run_id")

    @property
    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [op for op in self._ops if op["seq"] > self.state["sent"]]

    def put(self, op: str, **fields: Any) -> None:
        """Append one operation durably, then wake the sender. ValueError for an operation
        name that has no handler (nothing is written)."""
        if op not in HANDLERS:
            raise ValueError(f"unknown outbox operation {op!r} (known: {', '.join(HANDLERS)})")
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
        self._appended()

    def put_once(self, op: str, **fields: Any) -> bool:
        """:meth:`put` unless the journal already holds this operation (same name and fields,
        its ``timestamp`` aside): a finalisation run again after a kill queues nothing twice.
        True when appended."""
        def key(rec: dict[str, Any]) -> str:  # as journaled (NaN compares equal as text)
            rest = {k: v for k, v in rec.items() if k not in ("seq", "timestamp")}
            return json.dumps(json.loads(json.dumps(rest, default=str)), sort_keys=True)

        want = key({"op": op, **fields})
        with self._lock:
            if any(rec.get("op") == op and key(rec) == want for rec in self._ops):
                return False
        self.put(op, **fields)
        return True

    def _appended(self) -> None:
        """Called after each durable append (the Outbox wakes its sender)."""

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


class Outbox(Journal):
    """A :class:`Journal` sent in order to the tracking server ``uri`` by a background thread
    (:meth:`start`), or by :meth:`flush_once` / :meth:`close`. ``model_logger`` logs the model of
    a ``log_model`` operation (without one, that operation is refused).
    """

    def __init__(self, folder: str | Path, uri: str | None = None,
                 model_logger: ModelLogger | None = None) -> None:
        quiet_env()
        super().__init__(folder)
        # state.json keeps the URI without its password (it is in a DVC output): the password
        # comes back from $MLFLOW_TRACKING_URI when that names the same store (poseops.core.redact)
        stored = restore_uri(self.state.get("tracking_uri"), os.environ.get("MLFLOW_TRACKING_URI"))
        self.uri = absolute_sqlite(tracking_uri(uri or stored))
        self.state["tracking_uri"] = redact(self.uri)
        self.model_logger = model_logger
        self.system_metrics: Any = None  # MLflow's monitor (poseops.tracking.system), if on
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

    def _appended(self) -> None:
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
        self.update_state(failed=rec)
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
            batch = _next_batch(pending, i)
            try:
                done = self._deliver(batch)
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
            if done is False:
                return False
            if done:
                self._mark_sent(batch[-1]["seq"])
                if self._offline_since is not None:
                    log.info("MLflow server %s is back: sent buffered operations", self.uri)
                    self._offline_since = None
            i += len(batch)
        return True

    def _deliver(self, batch: list[dict[str, Any]]) -> bool | None:
        """Send ``batch``: True when sent whole; None when some op was refused for good and
        skipped (the others sent, each marked); False when a refused op blocks the journal.
        A transient error is raised."""
        try:
            self._send(batch)
        except Exception as e:  # noqa: BLE001 - classified below
            if not is_permanent(e):
                raise
            if len(batch) == 1:
                return None if self._refused(batch[0], e) else False
            for one in batch:  # find the op the server refuses: one at a time
                try:
                    self._send([one])
                except Exception as e1:  # noqa: BLE001 - classified
                    if not is_permanent(e1):
                        raise
                    if not self._refused(one, e1):
                        return False
                else:
                    self._mark_sent(one["seq"])
            return None
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
        """Send ``batch`` (ops of one name) through its handler."""
        client = self._client()
        name = batch[0]["op"]
        handler = HANDLERS.get(name)
        if handler is None:  # a journal written by another poseops version
            raise ValueError(f"unknown outbox op {name!r}")
        if name != "create_run" and self.run_id is None:
            raise PermanentOpError("run not created (its create_run operation failed or was skipped)")
        handler(self, client, batch)


def _next_batch(pending: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    """The ops sent together from ``pending[i]``: consecutive log_metrics (up to
    :data:`METRICS_PER_BATCH`) go in one log_batch; any other op alone."""
    batch = [pending[i]]
    if pending[i]["op"] == "log_metrics":
        while (
            i + len(batch) < len(pending)
            and pending[i + len(batch)]["op"] == "log_metrics"
            and len(batch) < METRICS_PER_BATCH
        ):
            batch.append(pending[i + len(batch)])
    return batch
