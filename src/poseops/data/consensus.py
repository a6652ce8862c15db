"""Multi-labeler consensus and labeler quality control (`poseops consensus`).

Reads the tidy labels table of ingest (one row per image, scorer, bodypart) and writes

- the consensus table: same columns with ``scorer == "consensus"``, one row per (image, bodypart),
  plus ``n_labelers`` (labelers kept after outlier removal), ``n_removed``, ``ila_px``
  (inter-labeler agreement: mean pairwise distance of the kept points, NaN when labeled once),
  ``disagreement`` (two labelers further apart than ``two_labeler_disagreement_px``),
  ``frame_ila_px`` (ILA of the whole frame; no ``sample_weight``: DeepLabCut 3 cannot weight
  training samples, docs/data-quality.md);
- labeler QC tables under ``reports/labelers/`` (qc, pairwise, icc, drift, stop_rule, heatmap)
  and a summary JSON (DVC metrics).

The aggregation follows the field guide (FAQ A3): per (image, bodypart), points further than
``mad_k`` x MAD from the median position are removed, the consensus is the median of the rest.

- Median position = coordinate-wise median of x and of y (not the geometric median): it is what
  the guide describes, it is exact and vectorises; for 1-3 points both agree closely.
- MAD = median over labelers of the Euclidean distance to that median position (the 2-D analogue
  of the median absolute deviation; no 1.4826 normal-consistency factor, as in the guide).
- Scale = max(MAD, ``min_scale_px``): identical labels (MAD = 0) remove nothing unless a point is
  further than ``mad_k * min_scale_px`` away.
- Two labelers: nobody can tell who is wrong, so both are kept (consensus = mean = median) and
  the pair is flagged when further apart than ``two_labeler_disagreement_px``.
- Three or more: the rule above; since MAD is a median distance, at most half the points can go.
- A labeler with NaN for a bodypart is ignored for that bodypart; frames labeled once pass through.

Multi-animal labels (an ``individual`` column): one consensus point per (image, individual,
bodypart). Labelers name the animals of a frame independently, so before any median each
labeler's individuals are matched by position to a reference labeler's (:func:`match_identities`:
gold scorer, else the labeler with most keypoints on the image; Hungarian assignment on the mean
keypoint distance); a better assignment by more than ``swap_margin_px`` is an identity swap: the
labeler's individuals are renamed for the consensus and every QC table, and the swap is reported
(``identity_swaps.csv``, ``n_identity_swaps`` in qc.csv's "all" rows and in the summary). Unique
bodyparts (individual ``single``) are never renamed. Per-bodypart QC (bias, ICC, pairwise, stop
rule) pools the individuals: a bodypart's ICC has one target per (image, individual).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.data.identities import N_IDENTITY_SWAPS, match_identities, swaps_per_labeler
from poseops.data.labelers import (
    ALL,
    drift_table,
    icc_table,
    labeler_qc,
    pairwise_distances,
    stop_rule,
)
from poseops.data.robust import LabelCube, group_keys, label_cube, robust_consensus

log = logging.getLogger(__name__)

# Column names added by this stage (consensus table and QC tables).
N_LABELERS = "n_labelers"
N_REMOVED = "n_removed"
ILA_PX = "ila_px"
FRAME_ILA_PX = "frame_ila_px"
DISAGREEMENT = "disagreement"


def build_consensus(
    labels: pd.DataFrame, p: ConsensusParams | None = None, match: bool = True
) -> pd.DataFrame:
    """Consensus table: labels columns with scorer "consensus", one row per (image, bodypart)
    (multi-animal: per (image, individual, bodypart)), plus n_labelers, n_removed, ila_px,
    disagreement, frame_ila_px. Multi-animal labels are first re-matched by
    position (:func:`match_identities`) unless ``match`` is False (already done)."""
    p = p or ConsensusParams()
    if match and S.INDIVIDUAL in labels.columns:
        labels, _ = match_identities(labels, p)
    cube = label_cube(labels)
    r = robust_consensus(cube.x, cube.y, p.mad_k, p.min_scale_px)
    keys = group_keys(labels)
    out = cube.keys.copy()
    out[S.X] = r.cx
    out[S.Y] = r.cy
    out[N_LABELERS] = r.n_kept.astype(int)
    out[N_REMOVED] = r.removed.sum(axis=1).astype(int)
    out[ILA_PX] = r.ila_px
    out[DISAGREEMENT] = (r.n_kept == 2) & (np.nan_to_num(r.ila_px) > p.two_labeler_disagreement_px)
    # frame ILA: mean of every kept pairwise distance in the frame (all bodyparts)
    frame = pd.DataFrame({S.IMAGE: out[S.IMAGE], "s": r.pair_sum, "c": r.pair_count})
    frame = frame.groupby(S.IMAGE, sort=False)[["s", "c"]].sum()
    frame_ila = (frame["s"] / frame["c"].where(frame["c"] > 0)).rename(FRAME_ILA_PX)
    out = out.merge(frame_ila, left_on=S.IMAGE, right_index=True, how="left")
    # every other column (video, frame, width, height, metadata) is per image: take it from
    # any scorer's row of the same key
    other = [c for c in labels.columns if c not in {S.X, S.Y, S.SCORER, S.LABELED, *keys}]
    meta = labels.drop_duplicates(keys)[keys + other]
    out = out.merge(meta, on=keys, how="left")
    out[S.SCORER] = S.CONSENSUS_SCORER
    out[S.LABELED] = np.isfinite(out[S.X]) & np.isfinite(out[S.Y])
    first = [c for c in S.LABEL_COLUMNS if c in out.columns]
    if S.INDIVIDUAL in out.columns:
        first.insert(first.index(S.BODYPART), S.INDIVIDUAL)
    rest = [c for c in out.columns if c not in first]
    return out[first + rest].sort_values(keys, kind="stable").reset_index(drop=True)


@dataclass
class ConsensusResult:
    """Everything the stage computes (tables as documented in the functions that build them)."""

    consensus: pd.DataFrame
    qc: pd.DataFrame
    pairwise: pd.DataFrame
    icc: pd.DataFrame
    drift: pd.DataFrame
    stop_rule: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    identity_swaps: pd.DataFrame | None = None  # multi-animal only (see match_identities)


def analyse(labels: pd.DataFrame, p: ConsensusParams | None = None) -> ConsensusResult:
    """Consensus table and every labeler QC table from a labels table (pure)."""
    p = p or ConsensusParams()
    swaps = None
    if S.INDIVIDUAL in labels.columns:
        # every QC table below sees the re-matched individuals: a swap is reported once (in
        # identity_swaps.csv), not again as outliers, bias or low ICC
        labels, swaps = match_identities(labels, p)
    cube = label_cube(labels)
    log.info(
        "consensus: %d (%s) points, %d labelers %s",
        len(cube.keys),
        ", ".join(group_keys(labels)),
        len(cube.scorers),
        cube.scorers,
    )
    qc = labeler_qc(cube, p)
    if swaps is not None:
        per = swaps_per_labeler(swaps, cube.scorers)
        qc[N_IDENTITY_SWAPS] = np.where(qc[S.BODYPART] == ALL, qc[S.SCORER].map(per), np.nan)
    res = ConsensusResult(
        consensus=build_consensus(labels, p, match=False),
        qc=qc,
        pairwise=pairwise_distances(cube),
        icc=icc_table(cube, p),
        drift=drift_table(labels, cube, p),
        stop_rule=stop_rule(cube, p),
        identity_swaps=swaps,
    )
    res.summary = summarise(res, cube, p)
    return res


def summarise(res: ConsensusResult, cube: LabelCube, p: ConsensusParams) -> dict[str, Any]:
    """Flat numbers for DVC metrics / MLflow, plus lists of flagged labelers."""
    c = res.consensus
    multi = cube.ok.sum(axis=1) >= 2
    n_multi_points = int(cube.ok[multi].sum())
    n_removed = int(c[N_REMOVED].sum())
    overall = res.stop_rule[res.stop_rule[S.BODYPART] == ALL]
    enough = overall[overall["enough"]]
    icc = res.icc["icc"].dropna()
    frame_multi = c.groupby(S.IMAGE)[N_LABELERS].max() >= 2
    return {
        "n_labelers": len(cube.scorers),
        "scorers": cube.scorers,
        "n_images": int(c[S.IMAGE].nunique()),
        "n_images_multi_labeled": int(frame_multi.sum()),
        "n_points_multi_labeled": n_multi_points,
        "n_removed": n_removed,
        "removed_share": n_removed / n_multi_points if n_multi_points else 0.0,
        "n_disagreements": int(c[DISAGREEMENT].sum()),
        "ila_px_mean": _finite_or_none(c[ILA_PX].mean()),
        "ila_px_median": _finite_or_none(c[ILA_PX].median()),
        "icc_min": _finite_or_none(icc.min()) if len(icc) else None,
        "icc_below_min": int((icc < p.min_icc).sum()),
        "flagged_bias": sorted(
            f"{r.scorer}/{r.bodypart}"
            for r in res.qc[(res.qc["flagged_bias"]) & (res.qc[S.BODYPART] != ALL)].itertuples()
        ),
        "n_drift_flags": int(res.drift["flagged"].sum()) if len(res.drift) else 0,
        "drift_flagged": sorted(
            f"{r.scorer}/{r.batch}"
            for r in res.drift[res.drift["flagged"] & ~res.drift["persistent"]].itertuples()
        ),
        "stop_rule_last_shift_px": _finite_or_none(overall["mean_shift_px"].iloc[-1])
        if len(overall)
        else None,
        "labelers_needed": int(enough["step"].iloc[0]) - 1 if len(enough) else None,
        "enough_labelers": bool(len(overall) and overall["enough"].iloc[-1]),
    } | (_swap_summary(res.identity_swaps, cube) if res.identity_swaps is not None else {})


def _swap_summary(swaps: pd.DataFrame, cube: LabelCube) -> dict[str, Any]:
    """Multi-animal summary keys: identity swaps (labeler-images re-matched) in total, images
    concerned, and per labeler."""
    per = swaps_per_labeler(swaps, cube.scorers)
    return {
        "n_individuals": len(set(cube.keys[S.INDIVIDUAL].astype(str)) - {S.SINGLE}),
        "n_identity_swaps": int(sum(per.values())),
        "n_images_identity_swapped": int(swaps[S.IMAGE].nunique()),
        "identity_swaps": per,
    }


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
