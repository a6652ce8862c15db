"""Range checks a user can act on: bounds given per bodypart / individual, and failures that name
the worst rows first, the observed extreme and the parameter value that would pass.

- ``per_row_bound``: a bound of ``expect_column_values_to_be_between`` that resolved to a mapping
  (``{default: 0.25, Tongue: 0.8, pup7: 1.0}``) becomes a per-row bound column (``<column>_max``
  or ``_min``): each row gets the most permissive value whose key is one of its id-column values
  (bodypart, individual, ...), else ``default``; the expectation is rewritten to compare the two
  columns. The other (scalar) bound of such an expectation is not checked by GE then.
- ``explain``: rewrites a failed range check's ``examples`` (worst first) and appends to
  ``observed`` ``max nan_share 1 > 0.25; passes with validate.max_nan_share: 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

BETWEEN = "expect_column_values_to_be_between"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
DEFAULT_ID_COLUMNS = (S.IMAGE, S.BODYPART, S.SCORER)
N_WORST = 3
SIDES = {"max_value": "_max", "min_value": "_min"}


def param_paths(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """kwarg -> the dotted parameter it came from (``{"$param": ...}`` placeholders)."""
    return {k: str(v["$param"]) for k, v in kwargs.items() if isinstance(v, Mapping)
            and "$param" in v}


def id_columns(df: pd.DataFrame, exp: Mapping[str, Any]) -> list[str]:
    ids = [c for c in DEFAULT_ID_COLUMNS if c in df.columns]
    ids += [c for c in (exp.get("meta") or {}).get("id_columns", []) if c in df.columns]
    return list(dict.fromkeys(ids)) or list(df.columns[:1])


def has_mapping_bound(exp: Mapping[str, Any]) -> bool:
    kw = exp.get("kwargs") or {}
    return exp["type"] == BETWEEN and any(isinstance(kw.get(k), Mapping) for k in SIDES)


def per_row_bound(
    exp: dict[str, Any], df: pd.DataFrame, where: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the table with a per-row bound column, the expectation comparing against it)."""
    kw = exp["kwargs"]
    col = kw["column"]
    side = next(k for k in SIDES if isinstance(kw.get(k), Mapping))
    mapping = {str(k): v for k, v in kw[side].items()}
    name = f"{col}{SIDES[side]}"
    ids = id_columns(df, exp)
    path = (exp["meta"].get("poseops_params") or {}).get(side, where)
    known = {str(v) for c in ids for v in df[c].dropna().unique()}
    unknown = sorted(set(mapping) - known - {"default"})
    if unknown:
        raise PoseopsError(
            f"{path}: key(s) {unknown} name no {'/'.join(ids)} of table "
            f"{exp['meta']['table']!r}; keys are 'default' and those names", file=where)
    for k, v in mapping.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise PoseopsError(f"{path}.{k} must be a number, got {v!r}", file=where)
    pick = max if side == "max_value" else min
    default = mapping.get("default", np.inf if side == "max_value" else -np.inf)

    def bound(row: tuple[Any, ...]) -> float:
        hits = [mapping[str(v)] for v in row if str(v) in mapping and str(v) != "default"]
        return float(pick(hits)) if hits else float(default)

    df = df.copy()
    df[name] = [bound(r) for r in df[ids].itertuples(index=False, name=None)]
    a, b = (name, col) if side == "max_value" else (col, name)
    new = {**exp, "type": PAIR,
           "kwargs": {"column_A": a, "column_B": b, "or_equal": True,
                      "ignore_row_if": "either_value_is_missing"},
           "meta": {**exp["meta"], "poseops_bound": {"column": col, "bound": name, "side": side,
                                                     "mapping": mapping}}}
    return df, new


def explain(row: dict[str, Any], exp: Mapping[str, Any], df: pd.DataFrame) -> None:
    """Failed range check: worst rows first in ``row["examples"]``; the observed extreme, the
    bound and the value that passes appended to ``row["observed"]``."""
    meta = exp.get("meta") or {}
    kw = exp.get("kwargs") or {}
    paths = meta.get("poseops_params") or {}
    per_row = meta.get("poseops_bound")
    if per_row:
        col = per_row["column"]
        bounds = {per_row["side"]: pd.to_numeric(df[per_row["bound"]], errors="coerce")}
    elif exp["type"] == BETWEEN and kw.get("column") in df.columns:
        col = kw["column"]
        bounds = {s: pd.Series(float(kw[s]), index=df.index) for s in SIDES
                  if isinstance(kw.get(s), int | float) and not isinstance(kw.get(s), bool)}
    else:
        return
    v = pd.to_numeric(df[col], errors="coerce")
    zero = pd.Series(0.0, index=df.index)
    over = (v - bounds["max_value"]).clip(lower=0).fillna(0) if "max_value" in bounds else zero
    under = (bounds["min_value"] - v).clip(lower=0).fillna(0) if "min_value" in bounds else zero
    strict_hi = bool(kw.get("strict_max")) and not per_row
    strict_lo = bool(kw.get("strict_min")) and not per_row
    if strict_hi:
        over = over.where(~(v == bounds["max_value"]), np.finfo(float).tiny)
    if strict_lo:
        under = under.where(~(v == bounds["min_value"]), np.finfo(float).tiny)
    badness = (over + under)[lambda s: s > 0].sort_values(ascending=False, kind="stable")
    if badness.empty:
        return
    ids = id_columns(df, exp)
    row["examples"] = [{**{c: _plain(df.at[i, c]) for c in ids}, col: _plain(df.at[i, col])}
                       for i in badness.index[:N_WORST]]
    notes = []
    for side, gap, op, pick in (("max_value", over, ">", "max"), ("min_value", under, "<", "min")):
        bad = gap > 0
        if not bad.any():
            continue
        worst = getattr(v[bad], pick)()
        if per_row:
            limit = ", ".join(sorted({_num(b) for b in bounds[side][bad]}))
            fix = passing_mapping(per_row["mapping"], df, bad, v, ids, side)
        else:
            limit = _num(bounds[side].iloc[0])
            fix = _val(_passing(worst, side, strict_hi if side == "max_value" else strict_lo))
        notes.append(f"{pick} {col} {_num(worst)} {op} {limit}" + _passes(paths.get(side), fix))
    row["observed"] = f"{row['observed']}; " + "; ".join(notes)


def _passes(path: str | None, value: str) -> str:
    if not path:
        return f" (passes with a bound of {value})"
    if path.startswith("config."):
        return f"; passes with config.yaml {path.removeprefix('config.')}: {value}"
    return f"; passes with {path}: {value}"


def _passing(worst: float, side: str, strict: bool) -> float:
    """The loosest-needed bound that lets ``worst`` pass, rounded outwards (4 decimals)."""
    if float(worst).is_integer():
        return worst + (1 if strict else 0) * (1 if side == "max_value" else -1)
    step = 1e4
    return (math.ceil(worst * step) if side == "max_value" else math.floor(worst * step)) / step


def passing_mapping(mapping: Mapping[str, Any], df: pd.DataFrame, bad: pd.Series, v: pd.Series,
                 ids: list[str], side: str) -> str:
    """The mapping that passes: an individual whose every row fails gets a key of its own, the
    other failing rows a key per bodypart (else per their first id column)."""
    out = dict(mapping)
    pick = max if side == "max_value" else min
    rest = bad[bad].index
    if S.INDIVIDUAL in df.columns and S.BODYPART in df.columns:
        ind = df[S.INDIVIDUAL].astype(str)
        whole = [i for i in ind[rest].unique()
                 if (ind == i).sum() > 1 and bad[ind == i].all()]
        for i in whole:
            out[i] = _passing(pick(v[ind == i]), side, False)
        rest = rest[~ind[rest].isin(whole)]
    key = S.BODYPART if S.BODYPART in df.columns else ids[0]
    for k, g in v[rest].groupby(df.loc[rest, key].astype(str), sort=False):
        out[k] = _passing(pick(g), side, False)
    return "{" + ", ".join(f"{k}: {_val(x)}" for k, x in out.items()) + "}"


def _val(x: Any) -> str:
    """A parameter value as typed in params.yaml (passing values are rounded to 4 decimals)."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(round(x, 4))


def _num(x: Any) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.4g}"


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
