"""`poseops split`: assign every labeled image to train / val / test without leakage.

Frames of one group (``split.group_by``: the leakage unit, default the video; several columns such
as ``[animal, session]`` make one group per combination) always land in the same split, so
near-identical neighbouring frames never sit on both sides. Three modes:

- ``grouped`` (default): groups drawn at random (seeded) per stratum (``stratify_by``, default
  condition) so every condition is in test and in train, test ~ ``test_fraction`` of each
  condition's frames; then a validation set (~ ``val_fraction`` of the training frames, whole
  groups, spread over conditions) is carved from the training groups for model selection and
  early stopping: the test set is only for reporting.
- ``leave-one-out``: every frame whose ``holdout_column`` equals ``holdout_value`` (an animal, a
  session, a condition cohort...) is the test set; val is carved from the remaining groups.
- ``temporal-blocks``: for projects with too few videos to split whole videos (one labeled video,
  as in DLC's example projects). Each video is cut into contiguous blocks of ``block_frames``
  video frames (block k: frames k*block_frames .. (k+1)*block_frames - 1, on the frame number of
  the image name); the blocks are the groups, drawn as in ``grouped`` (seeded, stratified). Then
  every labeled frame within ``gap_frames`` frames of a frame of another split of the same video
  is left out (not in the table), so no two frames of different splits are closer than
  ``gap_frames + 1`` frames. The gap is cut from the lower-priority side (train before val before
  test): test keeps its whole blocks. ``group`` names the block (``m4s1#b03``); the table gains
  ``frame, block_start, block_end``. ``group_by`` is not used (blocks are always within a video).

A ``group_by`` that makes every image its own group (``[image]``) is warned about loudly:
neighbouring frames of a video then sit in train and test and the test error is optimistic.
Impossible requests are refused with a PoseopsError saying why and what would work.
Multi-animal tables (several rows per image: one per individual and bodypart) split the same way:
every count and fraction is of images, never of rows.
Output (``split.out``): CSV ``image, video, group, split`` + the stratification column
(+ ``frame, block_start, block_end`` in temporal-blocks mode).
``split.cohorts`` (generalisation cohorts, :mod:`poseops.data.cohorts`): the frames matching a
cohort's filter are taken out before any mode draws train / val / test and are listed with split
``cohort:<name>`` (extra held-out test sets, evaluated beside ``test``; never trained on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.data import MODES, SplitParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.cohorts import cohort_members, cohort_rows
from poseops.dlc.files import frame_from_image

log = logging.getLogger(__name__)

GROUP_SEP = "|"  # group key of several columns: "m1|s2"
BLOCK_SEP = "#b"  # temporal-blocks group: "<video>#b<block index>", e.g. "m4s1#b03"
BLOCK_START, BLOCK_END = "block_start", "block_end"  # first / last video frame of the block
BLOCK_LABEL = "block"
ALL = "all"  # the single stratum when stratify_by is null
_STRATUM = "_stratum"


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
                + ", use mode: temporal-blocks (contiguous blocks of block_frames frames within "
                "each video, gap_frames left out between splits: no neighbouring frames on both "
                "sides; group_by: [image] would leak them)"
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

# ---------------------------------------------------------------------------- temporal blocks
def frame_numbers(labels: pd.DataFrame, images: pd.Series) -> pd.Series:
    """Video frame number of each of ``images`` (aligned with it): the labels' ``frame`` column,
    else the trailing digits of the image name (img0042.png -> 42). Images without one are
    refused."""
    have = (
        labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE)[S.FRAME]
        if S.FRAME in labels.columns
        else pd.Series(dtype=float)
    )
    frame = pd.to_numeric(images.map(have), errors="coerce")
    parsed = images.map(frame_from_image).astype(float).where(lambda f: f >= 0)
    frame = frame.where(frame.notna() & (frame >= 0), parsed)
    if frame.isna().any():
        bad = images[frame.isna()].iloc[0]
        raise PoseopsError(
            f"temporal-blocks split: no frame number for {int(frame.isna().sum())} image(s), "
            f"e.g. {bad!r} (the name must end in digits, e.g. img0042.png); use mode: grouped"
        )
    return frame.astype(np.int64)


def assign_blocks(frames: pd.DataFrame, frame: pd.Series, block_frames: int) -> pd.DataFrame:
    """``frames`` (from ``frames_for_split``) with ``frame, block_start, block_end`` and the group
    set to the block: block k of a video holds its frames k*block_frames .. (k+1)*block_frames-1
    and is named ``<video>#b<k>`` (k zero-padded, at least 2 digits)."""
    out = frames.copy()
    out[S.FRAME] = frame.to_numpy(np.int64)
    k = out[S.FRAME] // block_frames
    width = max(2, len(str(int(k.max())))) if len(k) else 2
    out[BLOCK_START] = k * block_frames
    out[BLOCK_END] = out[BLOCK_START] + block_frames - 1
    out[S.GROUP] = out[S.VIDEO].astype(str) + BLOCK_SEP + k.map(lambda i: f"{int(i):0{width}d}")
    return out


def _n_blocks(sub: pd.DataFrame, block_frames: int) -> int:
    return int(
        pd.DataFrame({"v": sub[S.VIDEO], "k": sub[S.FRAME] // block_frames}).drop_duplicates().shape[0]
    )


def _check_enough_blocks(
    frames: pd.DataFrame, block_frames: int, needed: int, stratify_by: str | None
) -> None:
    """Every stratum needs ``needed`` blocks (train, val, test; 2 without val); else a one-line
    refusal naming the video(s) and the largest block_frames that would do."""
    for stratum, sub in frames.groupby(_STRATUM, sort=True):
        n = _n_blocks(sub, block_frames)
        if n >= needed:
            continue
        videos = sorted(map(str, sub[S.VIDEO].unique()))
        if len(videos) == 1:
            what = (
                f"video {videos[0]} ({len(sub)} labeled frames, frames "
                f"{int(sub[S.FRAME].min())}..{int(sub[S.FRAME].max())})"
            )
        else:
            what = f"videos {', '.join(videos[:5])}{' ...' if len(videos) > 5 else ''}"
        if stratify_by:
            what = f"{stratify_by} {stratum!r}: {what}"
        fits = next((b for b in range(block_frames - 1, 0, -1) if _n_blocks(sub, b) >= needed),
                    None)
        names = "train, val, test" if needed == 3 else "train, test"
        advice = (
            f"set split.block_frames: {fits} or less, or label frames of another video"
            if fits
            else f"label at least {needed} frames with different frame numbers"
        )
        raise PoseopsError(
            f"temporal-blocks split refused: {what} makes only {n} block(s) of block_frames="
            f"{block_frames}, {needed} are needed ({names}); {advice}"
        )


def _within(f: np.ndarray, ref: np.ndarray, gap: int) -> np.ndarray:
    """Which of ``f`` lie within ``gap`` frames of a value of the sorted ``ref``."""
    if not len(ref) or not len(f):
        return np.zeros(len(f), bool)
    pos = np.searchsorted(ref, f)
    right = np.abs(ref[np.minimum(pos, len(ref) - 1)] - f)
    left = np.abs(ref[np.maximum(pos - 1, 0)] - f)
    return np.minimum(left, right) <= gap


def gap_frames_mask(split: pd.DataFrame, gap_frames: int) -> pd.Series:
    """True for the frames to leave out so that, within each video, frames of different splits
    are more than ``gap_frames`` frames apart. Priority test > val > train: a val frame goes when
    it is within the gap of a test frame, a train frame when within the gap of a test or a kept
    val frame; test frames always stay (the test set keeps its whole blocks)."""
    S.require_columns(split, [S.VIDEO, S.FRAME, S.SPLIT], "split")
    drop = np.zeros(len(split), bool)
    video = split[S.VIDEO].astype(str).to_numpy()
    frame = split[S.FRAME].to_numpy(np.int64)
    name = split[S.SPLIT].to_numpy()
    for v in np.unique(video):
        in_v = video == v
        kept = np.array([], np.int64)
        for s in (S.TEST, S.VAL, S.TRAIN):
            rows = np.flatnonzero(in_v & (name == s))
            near = _within(frame[rows], np.sort(kept), gap_frames)
            drop[rows[near]] = True
            kept = np.concatenate([kept, frame[rows[~near]]])
    return pd.Series(drop, index=split.index)


def drop_gap_frames(split: pd.DataFrame, gap_frames: int, needed: Sequence[str]) -> pd.DataFrame:
    """``split`` without the frames of ``gap_frames_mask`` (logged); refused when a split of
    ``needed`` loses every frame."""
    drop = gap_frames_mask(split, gap_frames)
    out = split[~drop.to_numpy()].reset_index(drop=True)
    for name in needed:
        if (split[S.SPLIT] == name).any() and not (out[S.SPLIT] == name).any():
            raise PoseopsError(
                f"temporal-blocks split refused: gap_frames={gap_frames} leaves no {name} frame "
                f"(its blocks lie within the gap of another split); lower split.gap_frames or "
                f"raise split.block_frames"
            )
    if drop.any():
        log.info(
            "temporal-blocks: %d labeled frame(s) within gap_frames=%d of another split left out: %s",
            int(drop.sum()), gap_frames, sorted(split.loc[drop.to_numpy(), S.IMAGE])[:3],
        )
    return out


def temporal_blocks_split(labels: pd.DataFrame, p: SplitParams, gaps: bool = True) -> pd.DataFrame:
    """The temporal-blocks split of ``labels``: blocks drawn as groups (``grouped_split``), then
    (``gaps``) the frames within ``gap_frames`` of another split left out."""
    for name, value, lo in (("block_frames", p.block_frames, 1), ("gap_frames", p.gap_frames, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
            raise PoseopsError(f"split.{name} must be an integer >= {lo}, got {value!r}")
    group_by = [p.group_by] if isinstance(p.group_by, str) else list(p.group_by)
    if group_by != [S.VIDEO]:
        log.info("temporal-blocks cuts every video into blocks: split.group_by %s is not used",
                 group_by)
    frames = frames_for_split(labels, [S.VIDEO], p.stratify_by)
    frames = assign_blocks(frames, frame_numbers(labels, frames[S.IMAGE]), p.block_frames)
    needed = (S.TRAIN, S.VAL, S.TEST) if p.val_fraction > 0 else (S.TRAIN, S.TEST)
    _check_fraction("test_fraction", p.test_fraction, allow_zero=False)
    _check_fraction("val_fraction", p.val_fraction, allow_zero=True)
    _check_enough_blocks(frames, p.block_frames, len(needed), p.stratify_by)
    out = grouped_split(
        frames, p.test_fraction, p.val_fraction, p.seed, BLOCK_LABEL, p.stratify_by
    )
    return drop_gap_frames(out, p.gap_frames, needed) if gaps else out


def frame_level_groups(
    split: pd.DataFrame, min_distance: int | None = -1, near: int = 5
) -> bool:
    """Is every image its own group while some video has several images (``group_by: [image]``,
    or temporal blocks of one image each) AND can frames of one group be neighbours across
    splits? ``min_distance``: the smallest frame distance between two frames of one video in
    different splits (``min_frame_distance``; None: no video spans two splits; -1: unknown, then
    only the group sizes decide). Neighbours are frames at most ``near`` frames apart (the
    split's ``gap_frames``): frames 220 apart in different splits are not near-duplicates."""
    per_group = split.groupby(S.GROUP)[S.IMAGE].nunique()
    per_video = split.groupby(S.VIDEO)[S.IMAGE].nunique()
    single = bool(len(per_group) and (per_group == 1).all() and (per_video > 1).any())
    if not single or min_distance is None:
        return False
    return min_distance < 0 or min_distance <= near


def min_frame_distance(split: pd.DataFrame, frame: pd.Series) -> int | None:
    """Smallest ``|frame_a - frame_b|`` over two images of one video in different splits (None
    when no video has frames in two splits). ``frame``: frame number per row of ``split``. The
    closest such pair is always adjacent once a video's frames are sorted, so only neighbours
    in frame order are compared."""
    df = pd.DataFrame(
        {"v": split[S.VIDEO].astype(str).to_numpy(), "f": np.asarray(frame, np.int64),
         "s": split[S.SPLIT].astype(str).to_numpy()}
    ).sort_values(["v", "f"], kind="stable")
    v, f, s = df["v"].to_numpy(), df["f"].to_numpy(), df["s"].to_numpy()
    pair = (v[1:] == v[:-1]) & (s[1:] != s[:-1])
    return int((f[1:] - f[:-1])[pair].min()) if pair.any() else None


def _split_min_distance(labels: pd.DataFrame, split: pd.DataFrame) -> int | None:
    """``min_frame_distance`` of a split made from ``labels`` (-1 when a frame is unknown)."""
    images = split[S.IMAGE].reset_index(drop=True)
    try:
        frame = frame_numbers(labels, images)
    except PoseopsError:
        return -1
    return min_frame_distance(split.reset_index(drop=True), frame)


FRAME_LEVEL_WARNING = (
    "every image is its own split group (split.group_by {group_by}): neighbouring frames of one "
    "video (near-duplicates, {distance} frame(s) apart) are in train and in test, so the test error is optimistic "
    "(leakage); use mode: temporal-blocks (blocks of frames with a gap between splits) or group "
    "by the video"
)


def distance_text(min_distance: int | None) -> str:
    return "?" if min_distance is None or min_distance < 0 else str(min_distance)


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
        finer = (
            "a smaller split.block_frames (more blocks)"
            if mode == "temporal-blocks"
            else "group by a finer unit (split.group_by), or mode: temporal-blocks"
        )
        raise PoseopsError(
            f"{mode} split refused: too few groups for a validation set: the {len(train)} "
            f"training group(s) ({groups.describe(train)}) are each the only training data of a "
            f"stratum; set split.val_fraction: 0 (no validation set: DLC then selects on test), "
            f"add recordings, or {finer}"
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


def make_split(labels: pd.DataFrame, p: SplitParams, gaps: bool = True) -> pd.DataFrame:
    """The split table for ``labels``: ``image, video, group, split`` (+ ``stratify_by``; +
    ``frame, block_start, block_end`` in temporal-blocks mode, where ``gaps=False`` keeps the gap
    frames, for ``honour_fixed_split`` before ``drop_gap_frames``). ``split.cohorts``: the frames
    of each cohort are taken out first and listed with split ``cohort:<name>``
    (:mod:`poseops.data.cohorts`); train / val / test are drawn from the other frames."""
    members = cohort_members(labels, p.cohorts)
    if members.empty:
        return _make_split(labels, p, gaps)
    out = _make_split(labels[~labels[S.IMAGE].isin(members.index)], p, gaps)
    group_by = [S.VIDEO] if p.mode == "temporal-blocks" else (
        [p.group_by] if isinstance(p.group_by, str) else list(p.group_by))
    rows = cohort_rows(labels, members, list(out.columns), group_by)
    log.info("split: %d frame(s) in %d cohort(s) held out beside test: %s", len(rows),
             members.nunique(), {k: int(v) for k, v in sorted(members.value_counts().items())})
    return pd.concat([out, rows], ignore_index=True)


def _make_split(labels: pd.DataFrame, p: SplitParams, gaps: bool = True) -> pd.DataFrame:
    """:func:`make_split` without cohorts."""
    if p.mode not in MODES:
        raise PoseopsError(f"split.mode must be one of {list(MODES)}, got {p.mode!r}")
    group_by = [p.group_by] if isinstance(p.group_by, str) else list(p.group_by)
    label = "+".join(group_by)
    if p.mode == "temporal-blocks":
        out = temporal_blocks_split(labels, p, gaps)
        if p.stratify_by:
            _warn_missing(out, p.stratify_by)
        cols = [S.IMAGE, S.VIDEO, S.GROUP, S.SPLIT, *([p.stratify_by] if p.stratify_by else []),
                S.FRAME, BLOCK_START, BLOCK_END]
        return out[list(dict.fromkeys(cols))]
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
    distance = _split_min_distance(labels, out)
    if frame_level_groups(out, distance, p.gap_frames):
        log.warning(FRAME_LEVEL_WARNING.format(group_by=group_by, distance=distance_text(distance)))
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
    names = [*S.SPLITS, *sorted(s for s in counts.index if S.is_cohort(s))]
    return ", ".join(
        f"{s} {int(counts.get(s, 0))} frames / {int(groups.get(s, 0))} groups" for s in names
    )


# ---------------------------------------------------------------------------- edges
def honour_fixed_split(
    split: pd.DataFrame, fixed: pd.DataFrame, held_out: bool = False
) -> pd.DataFrame:
    """Make a freshly computed split keep the previous iteration's (new frames: train/val only).

    split: image, group, split (+ any columns), computed on the grown dataset; fixed: image,
    split (the previous split). Images in ``fixed`` keep their split. A new frame of a group seen
    before follows that group (train or val); one of a test group is dropped (it would leak the
    test group into training; logged). New groups keep the new split's choice, except ``test``,
    which becomes ``train`` -- unless ``held_out`` (``split`` is a leave-one-out split: its test
    set is the held-out cohort): then such frames are dropped (logged), as the cohort must stay
    held out (never train or val) and the fixed test set must not change (``compare``). Fixed
    test images missing from ``split`` are an error (the test set would change).
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
    if held_out:
        if moved.any():
            log.warning(
                "split: %d new frame(s) of the held-out cohort left out (it stays held out; the "
                "fixed test set is kept as it was): %s",
                int(moved.sum()), sorted(out.loc[moved, S.IMAGE])[:3],
            )
        out = out[~moved]
    else:
        out.loc[moved, S.SPLIT] = S.TRAIN
    return out.reset_index(drop=True)
