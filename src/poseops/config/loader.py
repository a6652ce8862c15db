"""params.yaml: one section per stage. Stages read their section into a typed dataclass.

Every section is validated on load (pydantic over the stdlib dataclass): a wrong type or an
unknown key is one line naming the file, the section and the key. Numbers in scientific
notation (``lr: 1e-3``, ``[1e-4, 1e-2]``), which YAML 1.1 / PyYAML reads as strings, are
floats here (YAML 1.2), for every reader of :func:`load_params`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from poseops.core.errors import PoseopsError

T = TypeVar("T")

DEFAULT_PARAMS = "params.yaml"


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2 floats: ``1e-3``, ``1E5``, ``1.0e3``, ``.5e-3``
    (YAML 1.1 needs a dot and a signed exponent, so PyYAML reads these as strings)."""


# only the forms with an exponent that the YAML 1.1 float pattern misses; the others already
# resolve to int / float (the int and 1.1 float resolvers are tried first)
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-3`` is 0.001, not the string '1e-3')."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 (a SafeLoader subclass)


def params_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("POSEOPS_PARAMS", DEFAULT_PARAMS))


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    p = params_path(path)
    if not p.exists():
        raise PoseopsError("params file not found (run from the repository root)", file=p)
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise PoseopsError(f"not valid YAML: {' '.join(str(e).split())}", file=p) from e
    if not isinstance(data, dict):
        raise PoseopsError("expected a mapping of stage sections", file=p)
    return data


def section(name: str, cls: type[T], path: str | Path | None = None) -> T:
    """Read section ``name`` of params.yaml into dataclass ``cls``, validated (see
    :func:`from_dict`)."""
    data = load_params(path).get(name)
    return from_dict(cls, {} if data is None else data, where=f"{params_path(path)} [{name}]")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "params") -> T:
    """``cls(**data)``, checked: unknown keys are refused with the closest valid name, values
    are validated and coerced to the field types (pydantic, lax: ``'1e-3'`` -> 0.001 for a
    float, ``5.0`` -> 5 for an int); errors are one-line :class:`PoseopsError` naming the key.
    The result is a plain instance of the dataclass (``__post_init__`` runs as usual)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    if not isinstance(data, dict):
        raise PoseopsError(f"{where}: expected a mapping of keys, got {_short(data)}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise PoseopsError(f"{where} {_unknown_message(unknown, names)}")
    import pydantic

    try:
        return _adapter(cls).validate_python(data)
    except pydantic.ValidationError as e:
        raise PoseopsError(_type_message(cls, data, e, where)) from None
    except PoseopsError as e:  # the dataclass's own checks (__post_init__): name the file too
        if str(e).startswith(where):
            raise
        raise PoseopsError(f"{where}: {e}") from e


def update_params(updates: dict[str, dict[str, Any]], path: str | Path | None = None) -> None:
    """Set ``updates[section][key] = value`` in params.yaml, keeping comments and order (ruamel)."""
    import io

    from ruamel.yaml import YAML

    from poseops.core.fileio import write_text

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


# --------------------------------------------------------------------------------------------
# validation helpers


@functools.cache
def _adapter(cls: type) -> Any:
    import pydantic

    # a stdlib dataclass: pydantic validates the fields, then builds a plain ``cls`` instance
    # (and calls its __post_init__); unknown keys are refused before (from_dict)
    return pydantic.TypeAdapter(cls)


def closest_key(key: str, names: list[str]) -> str | None:
    """The valid name ``key`` most likely meant: a spelling slip (difflib), another case or
    separator (``Val-Fraction``), or the initials of a long form (``learning_rate`` -> ``lr``)."""
    norm = {n.lower().replace("-", "_"): n for n in names}
    k = key.lower().replace("-", "_").replace(" ", "_")
    close = difflib.get_close_matches(k, list(norm), n=1, cutoff=0.6)
    if close:
        return norm[close[0]]

    def initials(s: str) -> str:
        return "".join(w[0] for w in s.split("_") if w)

    for n, name in norm.items():
        if ("_" in k and initials(k) == n) or ("_" in n and initials(n) == k):
            return name
    return None


def _unknown_message(unknown: list[Any], names: list[str]) -> str:
    """``unknown key 'x'; did you mean 'y'?`` (several: ``unknown keys 'x' (did you mean
    'y'?), 'z'``); the known keys are listed when one has no close match."""
    close = {str(k): closest_key(str(k), names) for k in unknown}
    known = f" (known keys: {', '.join(names)})" if None in close.values() else ""
    if len(close) == 1:
        ((key, near),) = close.items()
        return f"unknown key {key!r}" + (f"; did you mean {near!r}?" if near else known)
    parts = [f"{k!r}" + (f" (did you mean {n!r}?)" if n else "") for k, n in close.items()]
    return f"unknown keys {', '.join(parts)}{known}"


def _type_message(cls: type, data: dict[str, Any], err: Any, where: str) -> str:
    errors = err.errors()
    first = errors[0] if errors else {"loc": (), "msg": str(err)}
    loc = first.get("loc") or ()
    key = loc[0] if loc and isinstance(loc[0], str) else None
    if key is None or key not in data:  # e.g. a ValueError of __post_init__
        return f"{where}: {' '.join(str(first.get('msg', err)).split())}"
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 (a description only; pydantic resolved the types)
        hints = {}
    expected = _describe(hints[key]) if key in hints else str(first.get("msg", "")).lower()
    return f"{where} {key}: expected {expected}, got {_short(data[key])}"


_WORDS = {
    bool: ("true or false", "true/false values"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    type(None): ("null", "nulls"),
}


def _describe(tp: Any, plural: bool = False) -> str:
    """A type in words: ``float | list[float] | None`` -> 'a number, a list of numbers or null'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        alts = [_describe(a, plural) for a in typing.get_args(tp)]
        return alts[0] if len(alts) == 1 else ", ".join(alts[:-1]) + " or " + alts[-1]
    if tp in _WORDS:
        return _WORDS[tp][plural]
    if tp is Any:
        return "values" if plural else "any value"
    args = typing.get_args(tp)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        inner = f" of {_describe(args[0], plural=True)}" if args and args[0] is not Any else ""
        return ("lists" if plural else "a list") + inner
    if origin is dict or tp is dict:
        inner = f" of {_describe(args[1], plural=True)}" if len(args) == 2 and args[1] is not Any else ""
        return ("mappings" if plural else "a mapping") + inner
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    name = getattr(tp, "__name__", str(tp))
    return f"{name}s" if plural else f"a {name}"


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
