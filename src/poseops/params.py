"""params.yaml: one section per stage. Stages read their section into a typed dataclass."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from poseops.errors import PoseopsError

T = TypeVar("T")

DEFAULT_PARAMS = "params.yaml"


def params_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("POSEOPS_PARAMS", DEFAULT_PARAMS))


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    p = params_path(path)
    if not p.exists():
        raise PoseopsError("params file not found (run from the repository root)", file=p)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise PoseopsError(f"not valid YAML: {e}", file=p) from e
    if not isinstance(data, dict):
        raise PoseopsError("expected a mapping of stage sections", file=p)
    return data


def section(name: str, cls: type[T], path: str | Path | None = None) -> T:
    """Read section ``name`` of params.yaml into dataclass ``cls``; unknown keys are an error."""
    data = load_params(path).get(name) or {}
    return from_dict(cls, data, where=f"{params_path(path)} [{name}]")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "params") -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PoseopsError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    return cls(**data)  # type: ignore[return-value]


def update_params(updates: dict[str, dict[str, Any]], path: str | Path | None = None) -> None:
    """Set ``updates[section][key] = value`` in params.yaml, keeping comments and order (ruamel)."""
    import io

    from ruamel.yaml import YAML

    from poseops.fileio import write_text

    p = params_path(path)
    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096  # never re-wrap flow lists
    # keep explicit nulls as "null" (ruamel writes an empty value by default)
    ry.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = ry.load(p.read_text())
    for sec, kv in updates.items():
        if sec not in data or data[sec] is None:
            data[sec] = {}
        for key, value in kv.items():
            data[sec][key] = value
    buf = io.StringIO()
    ry.dump(data, buf)
    write_text(buf.getvalue(), p)
