"""Atomic file writes: outputs appear whole or not at all (a failed stage leaves nothing half-written)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` can only
    be read by setting it, which races with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0666 less the
    umask (mkstemp's 0600 would make outputs unreadable to a lab's group)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.
    The file gets the mode a plain write would give (umask-respecting, or the replaced file's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # a writer may have replaced it: set the mode on what is there
            os.chmod(tmp_path, _file_mode(path))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    return _write(path, lambda p: df.to_parquet(p, index=False))


def write_csv(df: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    kwargs.setdefault("index", False)
    return _write(path, lambda p: df.to_csv(p, **kwargs))


def write_json(obj: Any, path: str | Path) -> Path:
    """Strict JSON (RFC 8259): NaN/inf become null, so DVC, MLflow and any JSON reader can load it."""
    text = json.dumps(json_safe(obj), indent=2, default=_json_default, allow_nan=False)
    return _write(path, lambda p: p.write_text(text + "\n"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or numpy) replaced by None, recursively.

    ``json.dumps`` writes float NaN as the literal ``NaN`` (not JSON) without calling ``default``,
    so the values must be replaced before dumping."""
    import math

    import numpy as np

    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


def write_yaml(obj: Any, path: str | Path) -> Path:
    return _write(path, lambda p: p.write_text(yaml.safe_dump(obj, sort_keys=False)))


def write_text(text: str, path: str | Path) -> Path:
    return _write(path, lambda p: p.write_text(text))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
