"""Sending what a training run buffered while the tracking server was away (`poseops sync`),
and keeping journals that still hold unsent operations.

A journal with unsent operations is never deleted: a new training or a finished sweep trial
moves it to `<workdir>/tracking-pending/` (:func:`set_aside_unsent`), which :func:`sync` also
sends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json
from poseops.core.redact import redact
from poseops.tracking.outbox import ModelLogger, Outbox, journal_ops
from poseops.tracking.runs import quiet_env

log = logging.getLogger(__name__)

PENDING_DIR = "tracking-pending"  # journals set aside with unsent operations (sent by sync)
_FILE_KEYS = ("path", "pytorch_config", "snapshot")  # op fields naming a file to upload


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
    dest = Path(pending_root) / f"{label}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        unsent = unsent_ops(folder)
    except PoseopsError as e:  # an unreadable journal is kept as it is: sync names the line
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), dest)
        log.warning("%s; kept as %s", e, dest)
        return dest
    if not unsent:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    ops = journal_ops(folder / "outbox.jsonl")
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
    """What :func:`sync` did: operations sent / still pending / skipped, over ``journals``."""

    run_id: str | None
    sent: int
    pending: int
    skipped: int = 0
    journals: int = 1  # outboxes sent: tracking/ and each tracking-pending/* folder
    run_ids: tuple[str, ...] = ()  # the runs of every journal sent (set-aside ones included)

    def message(self) -> str:
        """One line: `synced run <id>: ...`, or for set-aside journals only `synced N set-aside
        journal(s) (runs a, b): ...`."""
        what = f"{self.sent} operation(s) sent, {self.pending} pending" + (
            f", {self.skipped} skipped" if self.skipped else "")
        if self.run_id is None:
            runs = ", ".join(self.run_ids) or "none created"
            return f"synced {self.journals} set-aside journal(s) (runs {runs}): {what}"
        return f"synced run {self.run_id}: {what}" + (
            f" ({self.journals} journals)" if self.journals > 1 else "")


def sync(workdir: str | Path, uri: str | None = None, timeout_s: float = 60.0,
         skip_failed: bool = False, model_logger: ModelLogger | None = None) -> SyncResult:
    """Send what a training run buffered while the tracking server was away: `<workdir>/tracking`
    and every journal set aside in `<workdir>/tracking-pending/` (removed once all is sent).

    ``skip_failed``: an operation the server refuses for good (a 4xx answer) is skipped and
    recorded in the journal's state.json (``skipped``); by default it stops the sending with an
    error naming it. ``model_logger`` logs a pending model (see :class:`Outbox`)."""
    quiet_env()
    workdir = Path(workdir)
    main = workdir / "tracking"
    folders = [main] if (main / "outbox.jsonl").exists() else []
    folders += sorted(d for d in (workdir / PENDING_DIR).glob("*") if (d / "outbox.jsonl").exists())
    if not folders:
        raise PoseopsError("no tracking outbox here (train first)", file=main)
    sent = pending = skipped = 0
    run_id, errors, run_ids = None, [], []
    # every journal is read (and refused whole, naming its bad line) before anything is sent
    boxes = [Outbox(folder, uri, model_logger=model_logger) for folder in folders]
    for folder, box in zip(folders, boxes, strict=True):
        box.skip_failed = skip_failed
        before, skipped_before = len(box.pending), len(box.state.get("skipped") or [])
        box.close(timeout_s=timeout_s)
        after = len(box.pending)
        n_skipped = len(box.state.get("skipped") or []) - skipped_before
        sent, pending, skipped = sent + before - after - n_skipped, pending + after, skipped + n_skipped
        if box.run_id and box.run_id not in run_ids:
            run_ids.append(box.run_id)
        if folder == main:
            run_id = box.run_id
            _update_run_json(workdir, box)
        elif after == 0:
            shutil.rmtree(folder, ignore_errors=True)  # all sent: nothing left to keep
        if after:
            errors.append((box, after))
    if errors:
        box, after = errors[0]
        why = box.last_error if box.blocked else f"tracking server {box.uri} unreachable ({box.last_error})"
        raise PoseopsError(
            f"{pending} operation(s) still pending in {len(errors)} journal(s): "
            + redact(_one_line(str(why))),  # no password of the tracking URI
            file=box.journal,
        )
    return SyncResult(run_id if folders[0] == main else None, sent, pending, skipped, len(folders),
                      tuple(run_ids))


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (a server's multi-line answer, a traceback), at most ``limit`` chars."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _update_run_json(workdir: Path, box: Outbox) -> None:
    path = workdir / "run.json"
    if path.exists():
        info = json.loads(path.read_text())
        for key in ("run_id", "model_uri", "model_version", "model_name"):
            if box.state.get(key):
                info[key] = box.state[key]
        info["tracking_pending"] = len(box.pending)
        write_json(info, path)
