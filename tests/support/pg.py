"""A real PostgreSQL server on loopback for tests (nothing mocked, nothing installed here).

``.ci/run`` installs the Debian package ``postgresql``; this module only starts its binaries in a
temp dir. The server refuses to run as root, so as root the data dir is given to the ``postgres``
user and every command runs through ``runuser`` (see ../shared/NOTES.md).

Tests use the ``postgres_url`` fixture (tests/conftest.py, built on ``postgres_server``): it
yields a SQLAlchemy URL ``postgresql+psycopg://poseops@127.0.0.1:<port>/<db>``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER = "poseops"


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/<v>/bin holding initdb; fails (never skips) if none."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install them with `apt-get install -y postgresql` (.ci/run does)"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    res = subprocess.run(_as_server_user(cmd), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")


@contextmanager
def postgres_server(dbname: str = "poseops") -> Iterator[str]:
    """Start a throw-away server (trust auth, loopback only), create ``dbname``, yield its URL,
    stop the server (-m fast) and delete its files."""
    import psycopg

    bindir = pg_bindir()
    # short path: the Unix socket path must stay under ~107 characters
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    _run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync"])
    started = False
    port = 0
    try:
        for _ in range(3):  # the free port may be taken between the probe and the start
            port = free_port()
            opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
            try:
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-o",
                        opts,
                        "-l",
                        str(root / "log"),
                        "-w",
                        "start",
                    ]
                )
                started = True
                break
            except RuntimeError:
                continue
        if not started:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{log}")
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user={USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{dbname}"
    finally:
        if started:
            subprocess.run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
                ),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)

