"""Generalisation cohorts (``split.cohorts``): extra held-out test sets in one split.

``split.cohorts`` maps a cohort name to a filter on metadata columns, e.g.::

    cohorts:
      new_animal: {animal: m3}
      new_session: {session: s3}
      new_condition: {condition: [high_dose]}   # a value or a list of values

A frame belongs to a cohort when it matches every key of the filter (values compare as text,
``1`` matches ``"1"``, and as numbers in a numeric column, ``dose: 1`` matches 1.0; a list
matches any of its values). Every frame of a cohort is taken out
before train / val / test are drawn (in every split mode, leave-one-out included) and gets the
split value ``cohort:<name>`` in the split table (:data:`poseops.core.schema.COHORT_PREFIX`):
``train``, ``val`` and ``test`` keep their meaning, DeepLabCut trains on train and val only, and
``poseops evaluate`` scores each cohort beside the standard test set.

Refused (one-line PoseopsError): a cohort name that is not ``[A-Za-z0-9_-]+``, an empty filter, a
column not in the labels table (naming the metadata columns), a cohort that matches no frame (naming
the existing values) or only frames of earlier cohorts, and a video with frames in a cohort and
frames outside it (its neighbouring frames would sit on both sides).

Overlapping cohorts: a frame matching several cohorts belongs to the FIRST one listed (cohorts
are disjoint test sets; the overlap is logged). With ``{new_animal: {animal: m4}, new_session:
{session: s3}}``, m4's session-s3 frames are in ``new_animal``: list the cohort you want to be
complete first. Every frame matching any cohort is held out of train / val either way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

COHORT = "cohort"  # the cohort name column of the tables that list cohorts
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def cohort_split(name: str) -> str:
    """The split value of cohort ``name``: ``cohort:<name>``."""
    return f"{S.COHORT_PREFIX}{name}"


def cohort_name(split_value: str) -> str:
    """``cohort:new_animal`` -> ``new_animal``."""
    return split_value[len(S.COHORT_PREFIX):]


def check_cohorts(cohorts: Mapping[str, Any] | None) -> dict[str, dict[str, list[str]]]:
    """``split.cohorts`` normalised: name -> {column: [values as text]} (refusals: see the
    module docstring)."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, spec in (cohorts or {}).items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise PoseopsError(
                f"split.cohorts: cohort name {name!r} must be letters, digits, _ or - "
                "(it names the split value cohort:<name> and its metrics)"
            )
        if not isinstance(spec, Mapping) or not spec:
            raise PoseopsError(
                f"split.cohorts.{name}: give a filter on metadata columns, e.g. "
                f"{{animal: m4}} or {{condition: [high_dose]}}, got {spec!r}"
            )
        filt: dict[str, list[str]] = {}
        for col, value in spec.items():
            values = list(value) if isinstance(value, list | tuple) else [value]
            if not values or any(v is None for v in values):
                raise PoseopsError(f"split.cohorts.{name}.{col}: give a value or a list of values")
            filt[str(col)] = [str(v) for v in values]
        out[name] = filt
    return out


def cohort_members(labels: pd.DataFrame, cohorts: Mapping[str, Any] | None) -> pd.Series:
    """The cohort name of every image of ``labels`` that belongs to one (index: image, sorted);
    empty without cohorts. Refusals: see the module docstring."""
    spec = check_cohorts(cohorts)
    if not spec:
        return pd.Series(dtype=object, name=COHORT)
    frames = labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE).sort_index()
    member = pd.Series(None, index=frames.index, dtype=object, name=COHORT)
    for name, filt in spec.items():
        match = pd.Series(True, index=frames.index)
        for col, values in filt.items():
            if col not in frames.columns:
                raise PoseopsError(
                    f"split.cohorts.{name}: column {col!r} is not in the labels table "
                    f"(metadata columns: {S.metadata_columns(labels)}); add it to the metadata "
                    "CSV or change the cohort"
                )
            match &= _matches(frames[col], values)
        if not match.any():
            existing = {c: sorted(frames[c].dropna().astype(str).unique())[:12] for c in filt}
            raise PoseopsError(
                f"split.cohorts.{name}: no labeled frame has {filt}; existing values: {existing}"
            )
        both = match & member.notna()
        if both.any():  # first match wins: cohorts stay disjoint test sets
            taken = member[both].value_counts().sort_index()
            log.info("split.cohorts.%s: %d matching frame(s) already in an earlier cohort stay "
                     "there: %s", name, int(both.sum()), {k: int(v) for k, v in taken.items()})
        if not (match & ~both).any():
            raise PoseopsError(
                f"split.cohorts.{name}: every frame with {filt} is already in an earlier "
                f"cohort ({sorted(set(member[both]))}): it would be empty; reorder or narrow them"
            )
        member[match & ~both] = name
    _check_videos(frames, member)
    out = member.dropna()
    if len(out) == len(frames):
        raise PoseopsError(
            f"split.cohorts: every labeled frame is in a cohort ({sorted(spec)}): nothing is left "
            "to train on"
        )
    return out


def _matches(column: pd.Series, values: list[str]) -> pd.Series:
    """Rows of ``column`` equal to one of ``values``: as text, or as numbers in a numeric column
    (``dose: 1`` matches 1.0)."""
    hit = column.astype(str).isin(values)
    if pd.api.types.is_numeric_dtype(column):
        nums = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
        hit |= column.isin(nums.to_numpy(float))
    return hit & column.notna()


def _check_videos(frames: pd.DataFrame, member: pd.Series) -> None:
    """A video whose frames are partly in a cohort would put neighbouring frames on both sides."""
    if S.VIDEO not in frames.columns:
        return
    key = member.fillna("")
    per_video = key.groupby(frames[S.VIDEO]).nunique()
    mixed = per_video.index[per_video > 1]
    if len(mixed):
        v = mixed[0]
        names = sorted(set(key[frames[S.VIDEO] == v]) - {""})
        raise PoseopsError(
            f"split.cohorts: video {v} has frames in cohort(s) {names} and frames outside them "
            "(its neighbouring frames would be on both sides); filter on per-video metadata "
            "(animal, session, condition, ...)"
        )


def cohort_rows(
    labels: pd.DataFrame, members: pd.Series, columns: list[str], group_by: list[str]
) -> pd.DataFrame:
    """The split-table rows of the cohort frames: ``columns`` of the split table, ``group`` the
    ``group_by`` key (as the split modes name it), ``split`` = ``cohort:<name>``."""
    first = labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE)
    rows = pd.DataFrame({S.IMAGE: members.index.to_numpy()})
    for col in columns:
        if col in (S.IMAGE, S.GROUP, S.SPLIT):
            continue
        rows[col] = rows[S.IMAGE].map(first[col]) if col in first.columns else pd.NA
    keys = [c for c in group_by if c in first.columns] or [S.VIDEO]
    rows[S.GROUP] = first.loc[members.index, keys].astype(str).agg("|".join, axis=1).to_numpy()
    rows[S.SPLIT] = [cohort_split(n) for n in members.to_numpy()]
    return rows[columns]


def enforce_cohorts(split: pd.DataFrame, members: pd.Series) -> pd.DataFrame:
    """After the previous iteration's split is kept (``honour_fixed_split``): every frame of a
    cohort is labelled with it whatever its earlier split (warned: a fixed image changed sides),
    and a frame labelled with a cohort it no longer matches is left out (warned)."""
    out = split.copy()
    want = out[S.IMAGE].map(members)
    in_cohort = want.notna()
    target = want.map(cohort_split, na_action="ignore")
    changed = in_cohort & (out[S.SPLIT] != target)
    if changed.any():
        log.warning(
            "split: %d frame(s) of the fixed split now match a cohort and move to it (the fixed "
            "sets change): %s", int(changed.sum()), sorted(out.loc[changed, S.IMAGE])[:3],
        )
    out.loc[in_cohort, S.SPLIT] = target[in_cohort]
    stale = out[S.SPLIT].map(S.is_cohort) & ~in_cohort
    if stale.any():
        log.warning(
            "split: %d frame(s) of a former cohort left out (delete split.fixed_split to redraw "
            "them): %s", int(stale.sum()), sorted(out.loc[stale, S.IMAGE])[:3],
        )
    return out[~stale.to_numpy()].reset_index(drop=True)


def cohort_summary(split: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cohort of a split table: ``cohort, split, n_frames, n_videos`` (+ ``n_animals``,
    ``n_sessions``, ``n_conditions`` from ``labels`` where it has those columns)."""
    sub = split[split[S.SPLIT].map(S.is_cohort)]
    cols = [COHORT, S.SPLIT, "n_frames", "n_videos"]
    extra = [c for c in (S.ANIMAL, S.SESSION, S.CONDITION)
             if labels is not None and c in labels.columns]
    meta = labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE) if extra else None
    rows = []
    for value, part in sub.groupby(S.SPLIT, sort=True):
        row = {COHORT: cohort_name(str(value)), S.SPLIT: value, "n_frames": len(part),
               "n_videos": int(part[S.VIDEO].nunique()) if S.VIDEO in part else 0}
        for c in extra:
            row[f"n_{c}s"] = int(part[S.IMAGE].map(meta[c]).nunique())
        rows.append(row)
    return pd.DataFrame(rows, columns=cols + [f"n_{c}s" for c in extra])
