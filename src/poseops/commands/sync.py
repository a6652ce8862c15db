"""`poseops sync`: send the MLflow operations a training run (or sweep trial) buffered while the
tracking server was unreachable (:func:`poseops.tracking.sync.sync`), models included."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from poseops.tracking.sync import SyncResult, sync

log = logging.getLogger(__name__)


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


def run(workdir: str | Path, uri: str | None = None, timeout_s: float = 60.0,
        skip_failed: bool = False) -> SyncResult:
    """:func:`poseops.tracking.sync.sync` with the pyfunc pose model's logger (a pending
    ``log_model`` operation logs the snapshot as :mod:`poseops.train.model` does)."""
    from poseops.train.model import log_pose_model

    return sync(workdir, uri, timeout_s, skip_failed=skip_failed, model_logger=log_pose_model)


def _cli_sync(args: argparse.Namespace) -> int:
    res = run(args.workdir, args.tracking_uri, args.timeout, skip_failed=args.skip_failed)
    print(res.message())
    return 0
