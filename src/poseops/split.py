"""`poseops split`: assign every labeled image to train / val / test without leakage.

Frames of one group (``split.group_by``: the leakage unit, default the video; several columns such
as ``[animal, session]`` make one group per combination) always land in the same split, so
near-identical neighbouring frames never sit on both sides. Two modes:

- ``grouped`` (default): groups drawn at random (seeded) per stratum (``stratify_by``, default
  condition) so every condition is in test and in train, test ~ ``test_fraction`` of each
  condition's frames; then a validation set (~ ``val_fraction`` of the training frames, whole
  groups, spread over conditions) is carved from the training groups for model selection and
  early stopping: the test set is only for reporting.
- ``leave-one-out``: every frame whose ``holdout_column`` equals ``holdout_value`` (an animal, a
  session, a condition cohort...) is the test set; val is carved from the remaining groups.

Impossible requests are refused with a PoseopsError saying why and what would work.
Output (``split.out``): CSV ``image, video, group, split`` + the stratification column.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops import schema as S
from poseops.errors import PoseopsError
from poseops.fileio import write_csv
from poseops.params import section

log = logging.getLogger(__name__)

MODES = ("grouped", "leave-one-out")
GROUP_SEP = "|"  # group key of several columns: "m1|s2"
ALL = "all"  # the single stratum when stratify_by is null
_STRATUM = "_stratum"


@dataclass
class SplitParams:
    """params.yaml ``split``."""

    input: str = "data/interim/labels.parquet"  # labels (later: the consensus table)
    out: str = "data/processed/split.csv"
    mode: str = "grouped"  # grouped | leave-one-out
    group_by: list[str] = field(default_factory=lambda: [S.VIDEO])  # the leakage unit
    stratify_by: str | None = S.CONDITION
    test_fraction: float = 0.2
    val_fraction: float = 0.15  # of the training frames, whole groups
    holdout_column: str | None = None  # leave-one-out: a metadata column, e.g. animal
    holdout_value: Any = None  # leave-one-out: the held-out value
    seed: int = 42
    # written by `poseops merge`: the previous iteration's split, kept (fixed test set)
    fixed_split: str | None = "data/processed/fixed_split.csv"


# ---------------------------------------------------------------------------- frames
def frames_for_split(
    labels: pd.DataFrame,
    group_by: Sequence[str] | str,
    stratify_by: str | None,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per image: ``image, video, group`` (+ ``stratify_by``, ``extra`` columns and the
    internal ``_stratum``). Missing columns or empty values in them are refused."""
    group_by = [group_by] if isinstance(group_by, str) else list(group_by)
    if not group_by:
        raise PoseopsError("split.group_by is empty: name the leakage unit, e.g. [video]")
    S.require_columns(labels, [S.IMAGE, S.VIDEO], "labels")
    needed = list(dict.fromkeys([*group_by, *([stratify_by] if stratify_by else []), *extra]))
    have = set(labels.columns)
    for col in needed:
        if col not in have:
            raise PoseopsError(
                f"split: column {col!r} is not in the labels table "
                f"(metadata columns: {S.metadata_columns(labels)}); fill it in the metadata CSV "
                f"or change params split"
            )
    frames = labels.drop_duplicates(S.IMAGE)[
        list(dict.fromkeys([S.IMAGE, S.VIDEO, *needed]))
    ].reset_index(drop=True)
    for col in needed:
        empty = frames[col].isna()
        if empty.any():
            hint = "set split.stratify_by: null" if col == stratify_by else "fill the metadata CSV"
            raise PoseopsError(
                f"split: {int(empty.sum())} image(s) have no {col!r} "
                f"(e.g. {frames.loc[empty, S.IMAGE].iloc[0]}); {hint}"
            )
    frames[S.GROUP] = frames[group_by].astype(str).agg(GROUP_SEP.join, axis=1)
    frames[_STRATUM] = frames[stratify_by].astype(str) if stratify_by else ALL
    return frames.sort_values(S.IMAGE, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------- group bookkeeping
class _Groups:
    """Frames per (group, stratum) and the current split of each group."""

    def __init__(self, frames: pd.DataFrame, group_label: str) -> None:
        self.counts = frames.groupby([S.GROUP, _STRATUM]).size().unstack(fill_value=0)
        self.names = list(self.counts.index)  # sorted
        self.strata = list(self.counts.columns)
        self.split = dict.fromkeys(self.names, S.TRAIN)
        self.label = group_label

    def groups_of(self, stratum: str) -> list[str]:
        col = self.counts[stratum]
        return list(col.index[col > 0])

    def frames(self, split: str, stratum: str | None = None) -> int:
        members = [g for g in self.names if self.split[g] == split]
        sub = self.counts.loc[members]
        return int(sub[stratum].sum() if stratum else sub.to_numpy().sum())

    def train_keeps_every_stratum(self, moving: str) -> bool:
        """Would every stratum now in train still have a training group if ``moving`` left?"""
        train = [g for g in self.names if self.split[g] == S.TRAIN]
        before = (self.counts.loc[train] > 0).any(axis=0)
        rest = [g for g in train if g != moving]
        after = (self.counts.loc[rest] > 0).any(axis=0) if rest else before & False
        return bool(after[before].all())

    def describe(self, names: Sequence[str]) -> str:
        return ", ".join(f"{self.label}={n}" for n in names)


def _closer(current: int, add: int, target: float) -> bool:
    return abs(current + add - target) < abs(current - target)


# ---------------------------------------------------------------------------- modes
def grouped_split(
    frames: pd.DataFrame,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    group_label: str = S.VIDEO,
    stratify_by: str | None = S.CONDITION,
) -> pd.DataFrame:
    """Add ``split`` to ``frames`` (from ``frames_for_split``): grouped, stratified, seeded."""
    _check_fraction("test_fraction", test_fraction, allow_zero=False)
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    groups = _Groups(frames, group_label)
    what = f"{stratify_by} " if stratify_by else ""
    for stratum in groups.strata:
        members = groups.groups_of(stratum)
        if len(members) < 2:
            where = f"{what}{stratum!r} has" if stratify_by else "the dataset has"
            raise PoseopsError(
                f"grouped split refused: {where} labeled frames in only {len(members)} group "
                f"({groups.describe(members)}), so it cannot be in both train and test without "
                f"frames of one group on both sides. Label frames from another recording"
                + (f" of {stratum!r}" if stratify_by else "")
                + ", group by a finer unit (split.group_by)"
                + (
                    f", or use mode: leave-one-out with holdout_column: {stratify_by}, "
                    f"holdout_value: {stratum} (tests generalisation to an unseen {stratify_by})"
                    if stratify_by
                    else ""
                )
            )
    rng = np.random.default_rng(seed)
    order = [groups.names[i] for i in rng.permutation(len(groups.names))]
    # 1) coverage: every stratum gets a test group (strata with the fewest groups first)
    for stratum in sorted(groups.strata, key=lambda s: (len(groups.groups_of(s)), s)):
        if groups.frames(S.TEST, stratum) > 0:
            continue
        for g in order:
            if (
                groups.split[g] == S.TRAIN
                and groups.counts.at[g, stratum] > 0
                and groups.train_keeps_every_stratum(g)
            ):
                groups.split[g] = S.TEST
                break
        else:
            raise PoseopsError(
                f"grouped split refused: cannot put {what}{stratum!r} in test while keeping every "
                f"{stratify_by or 'stratum'} in train: its groups also hold the only training "
                f"frames of another {stratify_by or 'stratum'}; group by a finer unit "
                f"(split.group_by) or use mode: leave-one-out"
            )
    # 2) fill each stratum towards test_fraction of its frames
    for stratum in groups.strata:
        target = test_fraction * int(groups.counts[stratum].sum())
        for g in order:
            n = int(groups.counts.at[g, stratum])
            if groups.split[g] != S.TRAIN or n == 0:
                continue
            if _closer(
                groups.frames(S.TEST, stratum), n, target
            ) and groups.train_keeps_every_stratum(g):
                groups.split[g] = S.TEST
    _carve_val(groups, val_fraction, order, mode="grouped")
    return _assign(frames, groups)


def leave_one_out_split(
    frames: pd.DataFrame,
    holdout_column: str | None,
    holdout_value: Any,
    val_fraction: float,
    seed: int,
    group_label: str = S.VIDEO,
) -> pd.DataFrame:
    """Add ``split``: frames with ``holdout_column == holdout_value`` are test; val is carved from
    the other groups. Values compare as text (``1`` matches ``"1"``)."""
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    if not holdout_column or holdout_value is None:
        raise PoseopsError(
            "leave-one-out split needs split.holdout_column (e.g. animal) and split.holdout_value"
        )
    if holdout_column not in frames.columns:
        raise PoseopsError(f"leave-one-out: column {holdout_column!r} is not in the labels table")
    values = frames[holdout_column].astype(str)
    held = values == str(holdout_value)
    existing = sorted(values.unique())
    if not held.any():
        raise PoseopsError(
            f"leave-one-out: no labeled frame has {holdout_column}={holdout_value!r}; "
            f"existing values: {existing}"
        )
    if held.all():
        raise PoseopsError(
            f"leave-one-out: every labeled frame has {holdout_column}={holdout_value!r}, "
            f"nothing is left to train on (values: {existing})"
        )
    mixed = frames.loc[held, S.GROUP].isin(frames.loc[~held, S.GROUP])
    if mixed.any():
        g = frames.loc[held, S.GROUP][mixed].iloc[0]
        raise PoseopsError(
            f"leave-one-out: group {group_label}={g} has frames with {holdout_column}="
            f"{holdout_value!r} and frames without, so it would cross train and test; "
            f"add {holdout_column!r} to split.group_by"
        )
    groups = _Groups(frames, group_label)
    for g in frames.loc[held, S.GROUP].unique():
        groups.split[g] = S.TEST
    rng = np.random.default_rng(seed)
    order = [groups.names[i] for i in rng.permutation(len(groups.names))]
    _carve_val(groups, val_fraction, order, mode="leave-one-out")
    return _assign(frames, groups)


def _carve_val(groups: _Groups, val_fraction: float, order: list[str], mode: str) -> None:
    """Move whole training groups to val, round-robin over strata, towards val_fraction of the
    training frames; every stratum keeps a training group. At least one group when > 0."""
    if val_fraction <= 0:
        return
    target = val_fraction * groups.frames(S.TRAIN)
    main = groups.counts.idxmax(axis=1)  # each group's largest stratum
    queues = [
        [g for g in order if main[g] == s and groups.split[g] == S.TRAIN] for s in groups.strata
    ]
    interleaved = [
        q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)
    ]
    for g in interleaved:
        n = int(groups.counts.loc[g].sum())
        if not groups.frames(S.VAL):
            ok = True  # the first group always goes, if training can spare it
        else:
            ok = _closer(groups.frames(S.VAL), n, target)
        if ok and groups.train_keeps_every_stratum(g):
            groups.split[g] = S.VAL
    if not groups.frames(S.VAL):
        train = [g for g in groups.names if groups.split[g] == S.TRAIN]
        raise PoseopsError(
            f"{mode} split refused: too few groups for a validation set: the {len(train)} "
            f"training group(s) ({groups.describe(train)}) are each the only training data of a "
            f"stratum; set split.val_fraction: 0 (no validation set: DLC then selects on test), "
            f"add recordings, or group by a finer unit (split.group_by)"
        )


def _assign(frames: pd.DataFrame, groups: _Groups) -> pd.DataFrame:
    out = frames.copy()
    out[S.SPLIT] = out[S.GROUP].map(groups.split)
    return out


def _check_fraction(name: str, value: float, allow_zero: bool) -> None:
    lo_ok = value >= 0 if allow_zero else value > 0
    if not (lo_ok and value < 1):
        bound = "0 <= x < 1" if allow_zero else "0 < x < 1"
        raise PoseopsError(f"split.{name} must be {bound}, got {value}")


def make_split(labels: pd.DataFrame, p: SplitParams) -> pd.DataFrame:
    """The split table for ``labels``: ``image, video, group, split`` (+ ``stratify_by``)."""
    if p.mode not in MODES:
        raise PoseopsError(f"split.mode must be one of {list(MODES)}, got {p.mode!r}")
    group_by = [p.group_by] if isinstance(p.group_by, str) else list(p.group_by)
    label = "+".join(group_by)
    if p.mode == "grouped":
        frames = frames_for_split(labels, group_by, p.stratify_by)
        out = grouped_split(frames, p.test_fraction, p.val_fraction, p.seed, label, p.stratify_by)
    else:
        extra = [p.holdout_column] if p.holdout_column and p.holdout_column in labels else []
        frames = frames_for_split(labels, group_by, p.stratify_by, extra)
        out = leave_one_out_split(
            frames, p.holdout_column, p.holdout_value, p.val_fraction, p.seed, label
        )
        if p.stratify_by:
            _warn_missing(out, p.stratify_by)
    cols = [S.IMAGE, S.VIDEO, S.GROUP, S.SPLIT] + ([p.stratify_by] if p.stratify_by else [])
    return out[list(dict.fromkeys(cols))]


def _warn_missing(split: pd.DataFrame, col: str) -> None:
    for name in (S.TRAIN, S.TEST):
        missing = sorted(
            set(split[col].astype(str)) - set(split.loc[split[S.SPLIT] == name, col].astype(str))
        )
        if missing:
            log.warning("%s has no frames of %s %s", name, col, missing)


def groups_crossing_splits(split: pd.DataFrame, column: str = S.GROUP) -> list[str]:
    """Values of ``column`` whose frames sit in more than one split (leakage; should be [])."""
    n = split.groupby(column)[S.SPLIT].nunique()
    return sorted(map(str, n.index[n > 1]))


def summary(split: pd.DataFrame) -> str:
    counts = split[S.SPLIT].value_counts()
    groups = split.groupby(S.SPLIT)[S.GROUP].nunique()
    return ", ".join(
        f"{s} {int(counts.get(s, 0))} frames / {int(groups.get(s, 0))} groups" for s in S.SPLITS
    )


# ---------------------------------------------------------------------------- edges
def honour_fixed_split(split: pd.DataFrame, fixed: pd.DataFrame) -> pd.DataFrame:
    """Make a freshly computed split keep the previous iteration's (new frames: train/val only).

    split: image, group, split (+ any columns), computed on the grown dataset; fixed: image,
    split (the previous split). Images in ``fixed`` keep their split. A new frame of a group seen
    before follows that group (train or val); one of a test group is dropped (it would leak the
    test group into training; logged). New groups keep the new split's choice, except ``test``,
    which becomes ``train``. Fixed test images missing from ``split`` are an error (the test set
    would change).
    """
    S.require_columns(split, [S.IMAGE, S.GROUP, S.SPLIT], "split")
    S.require_columns(fixed, [S.IMAGE, S.SPLIT], "fixed split")
    prev = fixed.set_index(S.IMAGE)[S.SPLIT]
    test_imgs = set(prev.index[prev == S.TEST])
    gone = sorted(test_imgs - set(split[S.IMAGE]))
    if gone:
        raise PoseopsError(f"{len(gone)} fixed test image(s) are no longer in the dataset, e.g."
                           f" {gone[0]}: the test set would change", row=gone[0])
    out = split.copy()
    known = out[S.IMAGE].isin(prev.index)
    out.loc[known, S.SPLIT] = out.loc[known, S.IMAGE].map(prev)
    group_split = out[known].groupby(S.GROUP)[S.SPLIT].first()
    new = ~known
    old_group = new & out[S.GROUP].isin(group_split.index)
    out.loc[old_group, S.SPLIT] = out.loc[old_group, S.GROUP].map(group_split)
    leak = new & (out[S.SPLIT] == S.TEST) & old_group
    if leak.any():
        log.warning("split: %d new frame(s) of fixed test groups left out (no leakage): %s",
                    int(leak.sum()), sorted(out.loc[leak, S.IMAGE])[:3])
    out = out[~leak]
    moved = ~out[S.IMAGE].isin(prev.index) & (out[S.SPLIT] == S.TEST)
    out.loc[moved, S.SPLIT] = S.TRAIN
    return out.reset_index(drop=True)


def run(params_file: str | None = None, input_path: str | None = None) -> pd.DataFrame:
    from poseops.validate import read_table

    p = section("split", SplitParams, params_file)
    labels = read_table(input_path or p.input)
    split = make_split(labels, p)
    if p.fixed_split and Path(p.fixed_split).is_file():
        split = honour_fixed_split(split, pd.read_csv(p.fixed_split))
        log.info("split: kept the previous iteration's split from %s", p.fixed_split)
    write_csv(split, p.out)
    log.info("split (%s, seed %d): %s -> %s", p.mode, p.seed, summary(split), p.out)
    return split


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split",
        help="grouped, stratified train/val/test split without leakage (data/processed/split.csv)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--input", help="labels table (default: params split.input)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    run(a.params_file, a.input)
    return 0
