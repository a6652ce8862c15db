"""Multi-animal identity matching: labelers' individuals matched by position before the medians.

Labelers name the animals of a frame independently; :func:`match_identities` renames each
labeler's individuals to a reference labeler's (Hungarian assignment on the mean keypoint
distance) when that lowers the cost by more than ``swap_margin_px``: an identity swap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.data.robust import nanmean

log = logging.getLogger(__name__)

SWAP_COLUMNS = [
    S.IMAGE,
    "labeler",
    "reference",
    "from_individual",
    "to_individual",
    "cost_before_px",
    "cost_after_px",
    "labeler_cost_before_px",
    "labeler_cost_after_px",
]
N_IDENTITY_SWAPS = "n_identity_swaps"
_NO_EVIDENCE = 1e6  # cost of a pair with no bodypart labeled by both: used only when unavoidable
_PREFER_SAME = 1e-6  # ties go to the identity mapping


def _labeler_priority(pts: pd.DataFrame, p: ConsensusParams) -> list[str]:
    """Reference tie-break order: gold scorer, then most labeled animal keypoints, then name."""
    counts = pts[S.SCORER].astype(str).value_counts()
    return sorted(counts.index, key=lambda s: (s != p.gold_scorer, -int(counts[s]), s))


@dataclass
class _Assignment:
    """A labeler's individuals re-matched to the reference's (see :func:`_assign`)."""

    names: np.ndarray  # individual codes considered (labeled by either)
    cost: np.ndarray  # (n, n): labeler's a vs reference's b, mean distance (NaN: nothing shared)
    match: np.ndarray  # labeler's names[k] is the reference's names[match[k]]
    moved: np.ndarray  # k with match[k] != k
    labeled: np.ndarray  # bool (n,): the labeler labeled names[k]
    before: float  # mean cost of the identity mapping (pairs with a common bodypart)
    after: float  # mean cost of the assignment


def _assign(lab: np.ndarray, ref: np.ndarray, margin: float) -> _Assignment | None:
    """Best one-to-one matching of one labeler's individuals ``lab`` to the reference's ``ref``
    (both (individuals, bodyparts, 2), NaN = not labeled) on one image; None unless it is not
    the identity and lowers the mean cost by more than ``margin``."""
    from scipy.optimize import linear_sum_assignment

    names = np.flatnonzero(
        np.isfinite(lab[..., 0]).any(axis=1) | np.isfinite(ref[..., 0]).any(axis=1)
    )
    if len(names) < 2:
        return None
    a, b = lab[names], ref[names]
    d = np.hypot(a[:, None, :, 0] - b[None, :, :, 0], a[:, None, :, 1] - b[None, :, :, 1])
    cost = nanmean(d, 2)
    solve = np.where(np.isfinite(cost), cost, _NO_EVIDENCE) - _PREFER_SAME * np.eye(len(names))
    _, match = linear_sum_assignment(solve)
    moved = np.flatnonzero(match != np.arange(len(names)))
    if not len(moved):
        return None
    before = float(nanmean(np.diag(cost), 0))
    after = float(nanmean(cost[np.arange(len(names)), match], 0))
    if not before - after > margin:  # NaN (no evidence for the identity mapping): no swap
        return None
    return _Assignment(names, cost, match, moved, np.isfinite(a[..., 0]).any(axis=1), before, after)


def _reference(
    arr: np.ndarray, who: list[int], candidates: list[int], priority: list[int], margin: float
) -> tuple[int, dict[int, _Assignment]]:
    """The reference labeler of one image and the labelers found swapped against it.

    ``arr``: (scorers, individuals, bodyparts, 2) of the image; ``who``: the labelers with points
    on it; ``candidates`` (with their ``priority``, lower first): the gold scorer, else ``who``.
    The reference is the candidate whose names the fewest others contradict (a majority: one
    labeler's swap is not blamed on everyone else), ties by priority."""
    best: tuple[int, int, int, dict[int, _Assignment]] | None = None
    for ref, prio in zip(candidates, priority, strict=True):
        found = {}
        for s in who:
            if s != ref:
                m = _assign(arr[s], arr[ref], margin)
                if m is not None:
                    found[s] = m
        key = (len(found), prio, ref, found)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2], best[3]


def _rename(labels: pd.DataFrame, renames: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """``labels`` with the individuals of ``renames`` (image, scorer, old, new) renamed."""
    key = [S.IMAGE, S.SCORER, S.INDIVIDUAL]
    ren = pd.DataFrame(renames, columns=[*key, "_new"])
    cur = labels[key].astype(str)
    new = cur.merge(ren, on=key, how="left")["_new"].to_numpy()
    out = labels.copy()
    hit = pd.notna(new)
    out[S.INDIVIDUAL] = np.where(hit, new, labels[S.INDIVIDUAL].to_numpy(object))
    return out


def match_identities(
    labels: pd.DataFrame, p: ConsensusParams | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match every labeler's individuals to a reference labeler's, per image, by position.

    Multi-animal labels only (an ``individual`` column; otherwise ``labels`` is returned as is
    with an empty swaps table). Individual names are arbitrary per labeler: one may call
    "animal2" what another calls "animal1". Per image:

    - reference = the gold scorer if it labeled an animal keypoint of the image, else the labeler
      whose individuals the fewest other labelers are found swapped against (so with three
      labelers the one who swapped is blamed, not the two who agree; with two, or on ties: the
      labeler with most labeled animal keypoints overall, then name);
    - for every other labeler, cost[a, b] = mean distance over the bodyparts both labeled between
      the labeler's individual ``a`` and the reference's ``b`` (individuals either labeled);
      the best one-to-one assignment is found with ``scipy.optimize.linear_sum_assignment``
      (pairs with no common bodypart are avoided when possible; ties keep the names);
    - when it is not the identity and the mean cost of the labeler's individuals drops by more
      than ``swap_margin_px`` (identity: mean over individuals of cost[a, a]; assignment: of
      cost[a, match(a)], both over pairs with a common bodypart), that is an identity swap:
      the labeler's individuals on that image are renamed (a permutation: no two rows collide).
      Without evidence for the identity mapping (no cost[a, a]) nothing is renamed.

    Unique bodyparts (individual ``single``) are never matched nor renamed. Returns
    ``(labels with individuals renamed, swaps)``; swaps has one row per labeled individual
    renamed: image, labeler, reference, from_individual, to_individual, cost_before_px
    (cost[from, from]), cost_after_px (cost[from, to]), labeler_cost_before_px and
    labeler_cost_after_px (the means compared with the margin).
    """
    p = p or ConsensusParams()
    empty = pd.DataFrame(columns=SWAP_COLUMNS)
    if S.INDIVIDUAL not in labels.columns:
        return labels, empty
    S.require_columns(labels, [S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y], "labels")
    x = pd.to_numeric(labels[S.X], errors="coerce").to_numpy(float)
    y = pd.to_numeric(labels[S.Y], errors="coerce").to_numpy(float)
    animal = labels[S.INDIVIDUAL].astype(str).to_numpy() != S.SINGLE
    pts = labels.loc[animal & np.isfinite(x) & np.isfinite(y)]
    if pts[S.SCORER].nunique() < 2:
        return labels, empty
    # points as a dense array: (image, scorer, individual, bodypart, xy), NaN = not labeled
    img_codes, images = pd.factorize(pts[S.IMAGE].astype(str))
    sc_codes, scorers = pd.factorize(pts[S.SCORER].astype(str))
    ind_codes, individuals = pd.factorize(pts[S.INDIVIDUAL].astype(str))
    bp_codes, _ = pd.factorize(pts[S.BODYPART].astype(str))
    arr = np.full((len(images), len(scorers), len(individuals), bp_codes.max() + 1, 2), np.nan)
    arr[img_codes, sc_codes, ind_codes, bp_codes] = pts[[S.X, S.Y]].to_numpy(float)
    n_points = np.isfinite(arr[..., 0]).sum(axis=(2, 3))  # (image, scorer)
    rank = {s: i for i, s in enumerate(_labeler_priority(pts, p))}
    gold = scorers.get_loc(p.gold_scorer) if p.gold_scorer in scorers else None
    swaps: list[dict[str, Any]] = []
    renames: list[tuple[str, str, str, str]] = []  # image, scorer, old, new
    for i, image in enumerate(images):
        who = [s for s in range(len(scorers)) if n_points[i, s] > 0]
        if len(who) < 2:
            continue
        candidates = [gold] if gold is not None and gold in who else who
        priority = [rank[scorers[c]] for c in candidates]
        ref, found = _reference(arr[i], who, candidates, priority, p.swap_margin_px)
        for s, m in found.items():
            for k in m.moved:
                old, new = individuals[m.names[k]], individuals[m.names[m.match[k]]]
                renames.append((image, scorers[s], old, new))
                if m.labeled[k]:
                    swaps.append(
                        {
                            S.IMAGE: image,
                            "labeler": scorers[s],
                            "reference": scorers[ref],
                            "from_individual": old,
                            "to_individual": new,
                            "cost_before_px": m.cost[k, k],
                            "cost_after_px": m.cost[k, m.match[k]],
                            "labeler_cost_before_px": m.before,
                            "labeler_cost_after_px": m.after,
                        }
                    )
    table = pd.DataFrame(swaps, columns=SWAP_COLUMNS)
    if not renames:
        return labels, table
    out = _rename(labels, renames)
    log.info(
        "consensus: %d identity swap(s) on %d image(s) re-matched before the medians",
        len(table.drop_duplicates([S.IMAGE, "labeler"])),
        table[S.IMAGE].nunique(),
    )
    return out, table.sort_values([S.IMAGE, "labeler", "from_individual"]).reset_index(drop=True)


def swaps_per_labeler(swaps: pd.DataFrame, scorers: list[str]) -> dict[str, int]:
    """Images on which each labeler's individuals were re-matched (0 for the others)."""
    n = swaps.drop_duplicates([S.IMAGE, "labeler"])["labeler"].value_counts()
    return {s: int(n.get(s, 0)) for s in scorers}
