"""Secrets out of everything poseops writes: the one redaction for URIs and known secret values.

:func:`redact` takes any text (a URI, a log line, an error message, a JSON file's contents) and
replaces the password of every ``scheme://user:password@host`` by ``***`` (SQLAlchemy's
``hide_password`` form: ``postgresql+psycopg://user:***@host/db``), and every known secret value
(``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, the passwords inside
``MLFLOW_TRACKING_URI`` and ``POSEOPS_SWEEP_STORAGE``) by ``***`` wherever it appears, also
URL-decoded. :func:`install_log_redaction` makes every log record pass through it (the console,
DeepLabCut's ``train.txt`` and any other handler), and :func:`restore_uri` gives a stored
(redacted) URI its password back from the environment when they name the same store.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import unquote

MASK = "***"

SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""Environment variables whose whole value is a secret."""

URI_ENV = ("MLFLOW_TRACKING_URI", "POSEOPS_SWEEP_STORAGE")
"""Environment variables holding a URI that may carry a password."""

# scheme://userinfo@ : the authority ends at the first / ? # or space; the userinfo at its last @
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<auth>[^/?#\s'\"]*)@")
_MIN_SECRET = 4  # shorter values are not searched for (they would mask ordinary words)


def _hide(match: re.Match[str]) -> str:
    auth = match.group("auth")
    if ":" not in auth:
        return match.group(0)
    user = auth.split(":", 1)[0]
    return f"{match.group('scheme')}{user}:{MASK}@"


def url_password(url: str) -> str | None:
    """The password in ``scheme://user:password@host...`` (None when there is none)."""
    m = _USERINFO.search(url or "")
    if not m or ":" not in m.group("auth"):
        return None
    return m.group("auth").split(":", 1)[1] or None


def known_secrets(env: dict[str, str] | None = None) -> list[str]:
    """The secret values of the environment (``env``, default ``os.environ``), longest first,
    each also URL-decoded (a driver's error message may show ``p@ss`` for ``p%40ss``)."""
    env = os.environ if env is None else env
    found: set[str] = set()
    for key in SECRET_ENV:
        if env.get(key):
            found.add(env[key])
    for key in URI_ENV:
        pw = url_password(env.get(key, ""))
        if pw:
            found.add(pw)
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def redact(text: Any, secrets: list[str] | None = None) -> str:
    """``text`` (made a string) without passwords: every URI's password and every known secret
    value (``secrets``, default :func:`known_secrets`) replaced by ``***``."""
    out = _USERINFO.sub(_hide, str(text))
    for secret in known_secrets() if secrets is None else secrets:
        out = out.replace(secret, MASK)
    return out


def redact_obj(obj: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def restore_uri(stored: str | None, candidate: str | None) -> str | None:
    """A URI kept redacted on disk (``user:***@host``) with its password back from
    ``candidate`` (the environment's URI) when both name the same store; else ``stored``."""
    if not stored or MASK not in stored or not candidate:
        return stored
    return candidate if redact(candidate, secrets=[]) == stored else stored


_installed = False


def install_log_redaction() -> None:
    """Every log record, of every logger and handler (console, DeepLabCut's train.txt, files),
    is redacted when it is made: message, arguments and exception text. Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
