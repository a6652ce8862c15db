"""`poseops composition`: the dataset composition metrics every iteration should report.

From the field guide's "essential dataset composition metrics": total frames; frames per video,
animal, session and condition; condition coverage (% of the experimental conditions with labeled
frames, and per split); pose variance per bodypart (SD of keypoint positions); NaN share per
bodypart; labeler agreement (mean pairwise pixel distance between scorers on the frames and
bodyparts several of them labeled); and, once the split exists, the leakage check (groups and
videos found in more than one split: must be 0) with frames per split and condition, the split
mode (and temporal-blocks' block_frames, gap_frames, blocks per split), the labeled frames left
out of the split (temporal-blocks: the gap), the smallest frame distance between two frames of
one video in different splits (computed here from the frame numbers, independently of the split
code), and a loud warning when every image is its own group (``group_by: [image]`` leaks).
With generalisation cohorts (``split.cohorts``, split values ``cohort:<name>``): per cohort its
filter, frames, videos, animals, sessions, conditions, and ``frames_in_training`` (frames matching
a cohort's filter found in train or val: must be 0).

Multi-animal labels (an ``individual`` column): frames are still images (not rows); keypoints are
(image, individual, bodypart), so pose variance pools the individuals per bodypart (egocentric:
around each animal's own centroid) and labeler agreement compares the same individual, after
matching labelers' individuals by position (``poseops.data.identities.match_identities``: an identity swap is
counted as ``identity_swaps``, not as a huge disagreement). ``animals_per_frame`` is the
distribution of labeled individuals per image (an animal with at least one labeled keypoint by
any scorer; unique bodyparts' ``single`` is not an animal), overall and per split.

Outputs: DVC metrics JSON (``composition.metrics``) and a long CSV table (``composition.table``,
columns ``metric, stratum_type, stratum, split, value``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.data import labels as L
from poseops.data.cohorts import COHORT, check_cohorts, cohort_members, cohort_summary
from poseops.data.labelers import point_distances
from poseops.data.labels import bodypart_stats, keypoint_missing
from poseops.data.robust import label_cube
from poseops.data.split import min_frame_distance

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["metric", "stratum_type", "stratum", "split", "value"]
ALL = "all"
COUNT_BY = [S.VIDEO, S.ANIMAL, S.SESSION, S.CONDITION]


ANIMALS_IN_FRAME = "animals_in_frame"  # stratum type of the animals-per-frame rows


# ---------------------------------------------------------------------------- pure metrics
def frames_of(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per labeled image with its video and metadata columns."""
    S.require_columns(labels, [S.IMAGE, S.VIDEO], "labels")
    cols = [c for c in [S.IMAGE, S.VIDEO, *S.METADATA_COLUMNS] if c in labels.columns]
    return labels[cols].drop_duplicates(S.IMAGE).reset_index(drop=True)


def frame_counts(frames: pd.DataFrame, by: str) -> dict[str, int]:
    """Frames per value of ``by`` (value as text; frames with no value under "<missing>")."""
    if by not in frames.columns:
        return {}
    keys = frames[by].astype(object).where(frames[by].notna(), "<missing>").astype(str)
    return {k: int(v) for k, v in keys.value_counts().sort_index().items()}


def condition_coverage_pct(present: set[str], conditions: set[str]) -> float | None:
    """% of ``conditions`` (the experimental design) among the ``present`` ones."""
    if not conditions:
        return None
    return 100.0 * len(present & conditions) / len(conditions)


def keypoint_positions(labels: pd.DataFrame) -> pd.DataFrame:
    """Labeled positions per (image, [individual,] bodypart), averaged over scorers:
    ``image, [individual,] bodypart, x, y``."""
    keys = S.keypoint_keys(labels)
    ok = ~keypoint_missing(labels)
    sub = labels.loc[ok, [*keys, S.X, S.Y]].astype({S.X: float, S.Y: float})
    return sub.groupby(keys, as_index=False, observed=True)[[S.X, S.Y]].mean()


def animals_per_frame(labels: pd.DataFrame) -> pd.Series:
    """Labeled individuals per image (index: image, sorted): animals with at least one labeled
    keypoint by any scorer (:func:`poseops.data.labels.animals_per_frame`); ``single`` (unique
    bodyparts) is not an animal. Multi-animal only."""
    n = L.animals_per_frame(labels, per_scorer=False).set_index(S.IMAGE)["n_animals"]
    return n.rename(ANIMALS_IN_FRAME)


def count_distribution(values: pd.Series) -> dict[str, int]:
    """``{value: count}`` with keys in numeric order (as text: JSON keys)."""
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def pose_variance(labels: pd.DataFrame) -> pd.DataFrame:
    """Per bodypart: ``bodypart, n, sd_x, sd_y, sd_px, sd_px_egocentric``.

    sd_x, sd_y: sample SDs (ddof=1) of the labeled positions across frames; ``sd_px =
    sqrt(var_x + var_y)`` (the "pose variance index" in pixels: RMS distance to the mean
    position). ``sd_px_egocentric``: the same after subtracting each frame's centroid (mean of its
    labeled keypoints; multi-animal: of each animal's), i.e. variation of the pose itself rather
    than of where the animal is."""
    pos = keypoint_positions(labels)
    centroid = pos.groupby(S.keypoint_keys(pos)[:-1])[[S.X, S.Y]].transform("mean")
    pos["ex"], pos["ey"] = pos[S.X] - centroid[S.X], pos[S.Y] - centroid[S.Y]
    g = pos.groupby(S.BODYPART, observed=True)
    out = pd.DataFrame(
        {"n": g.size(), "sd_x": g[S.X].std(ddof=1), "sd_y": g[S.Y].std(ddof=1)}
    ).reset_index()
    out["sd_px"] = np.sqrt(out["sd_x"] ** 2 + out["sd_y"] ** 2)
    out["sd_px_egocentric"] = np.sqrt(g["ex"].var(ddof=1) + g["ey"].var(ddof=1)).to_numpy()
    return out


def pairwise_distances(labels: pd.DataFrame) -> pd.DataFrame:
    """Distance between every two scorers' positions of the same (image, [individual,] bodypart),
    where both labeled it: ``image, [individual,] bodypart, scorer_a, scorer_b, distance_px``
    (scorer_a < scorer_b; :func:`poseops.data.labelers.point_distances`; a multi-animal table:
    match identities first). The ``consensus`` scorer is left out (it is derived from the
    others)."""
    S.require_columns(labels, [S.IMAGE, S.BODYPART, S.SCORER, S.X, S.Y], "labels")
    keys = S.keypoint_keys(labels)
    ok = ~keypoint_missing(labels) & (labels[S.SCORER] != S.CONSENSUS_SCORER).to_numpy()
    sub = labels.loc[ok, [*keys, S.SCORER, S.X, S.Y]]
    sub = sub.astype({S.SCORER: str, S.BODYPART: str, S.X: float, S.Y: float})
    cols = [*keys, "scorer_a", "scorer_b", "distance_px"]
    if sub[S.SCORER].nunique() < 2:
        return pd.DataFrame(columns=cols)
    return point_distances(label_cube(sub))[cols]


def labeler_agreement(labels: pd.DataFrame) -> dict[str, Any]:
    """Mean pairwise pixel distance between scorers on commonly labeled frames and bodyparts:
    overall (mean over all pairs), per bodypart and per scorer pair; None where fewer than two
    scorers labeled the same keypoint."""
    d = pairwise_distances(labels)
    scorers = sorted(set(labels[S.SCORER].astype(str)) - {S.CONSENSUS_SCORER})
    if d.empty:
        return {
            "n_scorers": len(scorers),
            "n_frames": 0,
            "n_pairs": 0,
            "mean_pairwise_px": None,
            "per_bodypart": {},
            "per_pair": {},
        }
    pair = d["scorer_a"] + "-" + d["scorer_b"]
    return {
        "n_scorers": len(scorers),
        "n_frames": int(d[S.IMAGE].nunique()),
        "n_pairs": len(d),
        "mean_pairwise_px": float(d["distance_px"].mean()),
        "per_bodypart": {
            k: float(v) for k, v in d.groupby(S.BODYPART)["distance_px"].mean().items()
        },
        "per_pair": {k: float(v) for k, v in d.groupby(pair)["distance_px"].mean().items()},
    }


def split_frame_numbers(split: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.Series:
    """Frame number per row of ``split``: its ``frame`` column, else the labels', else the
    trailing digits of the image name (-1 when there are none)."""
    from poseops.dlc.files import frame_from_image

    if S.FRAME in split.columns and split[S.FRAME].notna().all():
        return split[S.FRAME].astype(np.int64).reset_index(drop=True)
    known = pd.Series(dtype=float)
    if labels is not None and S.FRAME in labels.columns:
        known = labels.drop_duplicates(S.IMAGE).set_index(S.IMAGE)[S.FRAME]
    f = pd.to_numeric(split[S.IMAGE].map(known), errors="coerce")
    parsed = split[S.IMAGE].map(frame_from_image)
    return f.fillna(parsed).astype(np.int64).reset_index(drop=True)


def split_composition(
    split: pd.DataFrame,
    conditions: set[str],
    stratify_by: str = S.CONDITION,
    labels: pd.DataFrame | None = None,
    split_params: Any = None,
) -> dict[str, Any]:
    """Leakage check and per-split composition of a split table (``image, video, group, split``
    + ``stratify_by``): groups/videos in more than one split (must be 0), frames and groups per
    split, frames per split and condition, condition coverage % per split; the smallest frame
    distance between splits within a video and the frame-level-groups warning. With ``labels``:
    ``excluded_frames`` (labeled images not in the split). With ``split_params``
    (``poseops.config.data.SplitParams``): the mode, and for temporal-blocks block_frames, gap_frames
    and blocks per split."""
    from poseops.data.split import (
        BLOCK_START,
        FRAME_LEVEL_WARNING,
        distance_text,
        frame_level_groups,
        groups_crossing_splits,
    )

    out: dict[str, Any] = {
        "groups_crossing_splits": len(groups_crossing_splits(split, S.GROUP)),
        "videos_crossing_splits": len(groups_crossing_splits(split, S.VIDEO)),
        "frames": {s: int((split[S.SPLIT] == s).sum()) for s in S.SPLITS},
        "groups": {s: int(split.loc[split[S.SPLIT] == s, S.GROUP].nunique()) for s in S.SPLITS},
    }
    out["fraction"] = {s: n / len(split) if len(split) else 0.0 for s, n in out["frames"].items()}
    mode = getattr(split_params, "mode", None)
    out["mode"] = mode
    if mode == "temporal-blocks":
        out["block_frames"] = split_params.block_frames
        out["gap_frames"] = split_params.gap_frames
        key = [S.VIDEO, BLOCK_START] if BLOCK_START in split.columns else [S.GROUP]
        out["blocks"] = {
            s: int(split.loc[split[S.SPLIT] == s, key].drop_duplicates().shape[0])
            for s in S.SPLITS
        }
    if labels is not None:
        out["excluded_frames"] = int(len(set(labels[S.IMAGE]) - set(split[S.IMAGE])))
        if S.INDIVIDUAL in labels.columns:
            n = split[S.IMAGE].map(animals_per_frame(labels))
            out["animals_per_frame"] = {
                s: count_distribution(n[(split[S.SPLIT] == s).to_numpy()].dropna().astype(int))
                for s in S.SPLITS
            }
    frame = split_frame_numbers(split, labels)
    ok = (frame >= 0).to_numpy()
    out["min_frame_distance_between_splits"] = (
        min_frame_distance(split[ok], frame[ok]) if ok.any() else None
    )
    distance = out["min_frame_distance_between_splits"] if ok.all() else -1
    out["frame_level_groups"] = frame_level_groups(
        split, distance, getattr(split_params, "gap_frames", 5)
    )
    out["leakage_warning"] = (
        FRAME_LEVEL_WARNING.format(group_by=getattr(split_params, "group_by", "?"),
                                   distance=distance_text(distance))
        if out["frame_level_groups"]
        else None
    )
    cohorts = getattr(split_params, "cohorts", None)
    if cohorts or split[S.SPLIT].map(S.is_cohort).any():
        out["cohorts"] = cohort_composition(split, labels, cohorts)
    if stratify_by in split.columns:
        per = split.groupby([S.SPLIT, split[stratify_by].astype(str)]).size()
        out[f"frames_per_{stratify_by}"] = {
            s: {str(c): int(n) for c, n in per[s].items()}
            if s in per.index.get_level_values(0)
            else {}
            for s in S.SPLITS
        }
        if stratify_by == S.CONDITION:
            out["condition_coverage_pct"] = {
                s: condition_coverage_pct(set(out[f"frames_per_{stratify_by}"][s]), conditions)
                for s in S.SPLITS
            }
    return out


def cohort_composition(
    split: pd.DataFrame, labels: pd.DataFrame | None, cohorts: dict[str, Any] | None
) -> dict[str, Any]:
    """Generalisation cohorts (``split.cohorts``) of a split table: per cohort its filter, frames,
    videos, animals, sessions and conditions (``cohort_summary``), and
    ``frames_in_training``: labeled frames matching a cohort's filter (recomputed from the
    labels' metadata) that sit in train or val (must be 0)."""
    table = cohort_summary(split, labels)
    spec = check_cohorts(cohorts)
    per = {str(r[COHORT]): {k: (int(v) if k.startswith("n_") else v) for k, v in r.items()
                            if k not in (COHORT, S.SPLIT)} | {"filter": spec.get(str(r[COHORT]))}
           for r in table.to_dict("records")}
    in_training = 0
    if labels is not None and spec:
        members = cohort_members(labels, spec)
        trained = split.loc[split[S.SPLIT].isin([S.TRAIN, S.VAL]), S.IMAGE]
        in_training = int(trained.isin(members.index).sum())
    return {"per_cohort": per, "frames_in_training": in_training}


def composition_metrics(
    labels: pd.DataFrame,
    split: pd.DataFrame | None = None,
    conditions: set[str] | None = None,
    split_params: Any = None,
    consensus_params: Any = None,
) -> dict[str, Any]:
    """All composition metrics as a nested dict (the DVC metrics file). ``conditions``: the
    experimental design's conditions (e.g. from the metadata CSV, which also lists unlabeled
    recordings); default: the conditions found in the labels. ``split_params``: the params.yaml
    ``split`` section that made ``split`` (its mode and temporal-blocks settings are recorded).
    ``consensus_params`` (``poseops.config.data.ConsensusParams``, default its defaults): how a
    multi-animal table's identities are matched before labeler agreement."""
    swaps = None
    if S.INDIVIDUAL in labels.columns:
        from poseops.data.identities import match_identities

        labels, swaps = match_identities(labels, consensus_params)
    frames = frames_of(labels)
    present = set(frames_counts_keys(frames, S.CONDITION))
    conditions = set(conditions) if conditions else present
    pv = pose_variance(labels)
    nan = bodypart_stats(labels)
    m: dict[str, Any] = {
        "total_frames": len(frames),
        "total_keypoints": len(labels),
        "n_scorers": int(labels[S.SCORER].nunique()),
    }
    for col in COUNT_BY:
        counts = frame_counts(frames, col)
        m[f"n_{col}s"] = len(set(counts) - {"<missing>"})
        if col == S.CONDITION:  # design conditions with no labeled frame show as 0
            counts = dict(sorted({**dict.fromkeys(conditions, 0), **counts}.items()))
        m[f"frames_per_{col}"] = counts
    m["condition_coverage_pct"] = condition_coverage_pct(present, conditions)
    m["n_conditions_missing"] = len(conditions - present)
    m["pose_variance"] = {
        r.bodypart: {
            "n": int(r.n),
            "sd_x": r.sd_x,
            "sd_y": r.sd_y,
            "sd_px": r.sd_px,
            "sd_px_egocentric": r.sd_px_egocentric,
        }
        for r in pv.itertuples()
    }
    m["pose_variance_index_px"] = float(pv["sd_px"].mean()) if len(pv) else None
    m["nan_share"] = {r.bodypart: float(r.nan_share) for r in nan.itertuples()}
    m["nan_share_overall"] = float(keypoint_missing(labels).mean()) if len(labels) else None
    m["labeler_agreement"] = labeler_agreement(labels)
    if swaps is not None:
        n = animals_per_frame(labels)
        m["n_individuals"] = len(set(labels[S.INDIVIDUAL].astype(str)) - {S.SINGLE})
        m["animals_per_frame"] = count_distribution(n)
        m["animals_per_frame_mean"] = float(n.mean()) if len(n) else None
        m["identity_swaps"] = int(len(swaps.drop_duplicates([S.IMAGE, "labeler"])))
    if split is not None:
        m["split"] = split_composition(split, conditions, labels=labels, split_params=split_params)
    return _clean(m)


def frames_counts_keys(frames: pd.DataFrame, col: str) -> list[str]:
    if col not in frames.columns:
        return []
    return sorted(frames[col].dropna().astype(str).unique())


def _clean(obj: Any) -> Any:
    """NaN -> None, numpy scalars -> Python (JSON metrics)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def composition_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The metrics as a long table: ``metric, stratum_type, stratum, split, value``."""
    rows: list[tuple[str, str, str, str, Any]] = []
    for key in (
        "total_frames",
        "total_keypoints",
        "n_scorers",
        "condition_coverage_pct",
        "pose_variance_index_px",
        "nan_share_overall",
    ):
        rows.append((key, ALL, ALL, ALL, metrics.get(key)))
    for col in COUNT_BY:
        for stratum, n in metrics[f"frames_per_{col}"].items():
            rows.append(("frames", col, stratum, ALL, n))
    if "animals_per_frame" in metrics:  # multi-animal
        for key in ("n_individuals", "animals_per_frame_mean", "identity_swaps"):
            rows.append((key, ALL, ALL, ALL, metrics[key]))
        for k, n in metrics["animals_per_frame"].items():
            rows.append(("frames", ANIMALS_IN_FRAME, k, ALL, n))
    for bp, v in metrics["pose_variance"].items():
        for k in ("sd_x", "sd_y", "sd_px", "sd_px_egocentric"):
            rows.append((f"pose_{k}", S.BODYPART, bp, ALL, v[k]))
    for bp, v in metrics["nan_share"].items():
        rows.append(("nan_share", S.BODYPART, bp, ALL, v))
    la = metrics["labeler_agreement"]
    rows.append(("labeler_mean_pairwise_px", ALL, ALL, ALL, la["mean_pairwise_px"]))
    for bp, v in la["per_bodypart"].items():
        rows.append(("labeler_mean_pairwise_px", S.BODYPART, bp, ALL, v))
    for pair, v in la["per_pair"].items():
        rows.append(("labeler_mean_pairwise_px", "scorer_pair", pair, ALL, v))
    sp = metrics.get("split")
    if sp:
        rows.append(("groups_crossing_splits", ALL, ALL, ALL, sp["groups_crossing_splits"]))
        rows.append(("videos_crossing_splits", ALL, ALL, ALL, sp["videos_crossing_splits"]))
        for s in S.SPLITS:
            rows.append(("frames", ALL, ALL, s, sp["frames"][s]))
            rows.append(("groups", ALL, ALL, s, sp["groups"][s]))
            for c, n in sp.get(f"frames_per_{S.CONDITION}", {}).get(s, {}).items():
                rows.append(("frames", S.CONDITION, c, s, n))
            if "condition_coverage_pct" in sp:
                rows.append(
                    ("condition_coverage_pct", ALL, ALL, s, sp["condition_coverage_pct"][s])
                )
            if "blocks" in sp:
                rows.append(("blocks", ALL, ALL, s, sp["blocks"][s]))
            for k, n in sp.get("animals_per_frame", {}).get(s, {}).items():
                rows.append(("frames", ANIMALS_IN_FRAME, k, s, n))
        for key in ("mode", "block_frames", "gap_frames", "excluded_frames",
                    "min_frame_distance_between_splits"):
            if key in sp:
                rows.append((f"split_{key}" if key == "mode" else key, ALL, ALL, ALL, sp[key]))
        rows.append(("frame_level_groups", ALL, ALL, ALL, int(sp.get("frame_level_groups", 0))))
        for name, c in (sp.get("cohorts") or {}).get("per_cohort", {}).items():
            for k in ("n_frames", "n_videos", "n_animals", "n_sessions", "n_conditions"):
                if k in c:
                    rows.append((k[2:], COHORT, name, f"{S.COHORT_PREFIX}{name}", c[k]))
        if sp.get("cohorts"):
            rows.append(("cohort_frames_in_training", ALL, ALL, ALL,
                         sp["cohorts"]["frames_in_training"]))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
