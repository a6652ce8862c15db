"""`poseops <verb>`: one sub-command per pipeline stage.

The verbs are the explicit table :data:`poseops.commands.COMMANDS` (verb -> module in
``poseops.commands``); each command module registers its parser with ``register(subparsers)``.
Heavy imports (deeplabcut, mlflow, great_expectations) stay inside functions: the CLI starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import poseops
from poseops.commands import COMMANDS
from poseops.core.errors import PoseopsError
from poseops.core.redact import install_log_redaction, redact

# Nothing may call home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def stage_modules() -> list[str]:
    """The command modules, in the table's order (``poseops.commands.<name>``)."""
    return list(COMMANDS.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poseops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=poseops.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<verb>")
    for name in stage_modules():
        module = importlib.import_module(f"poseops.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # no password in any log line (console, train.txt, files)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except PoseopsError as e:
        print(redact(f"poseops {args.command}: error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"poseops {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
