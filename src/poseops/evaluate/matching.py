"""Multi-animal evaluation: predicted assemblies matched to labeled animals (OKS, as DeepLabCut's
``evaluate_network`` does), the multi-animal errors table, identity outcomes (missed animals,
false positives, identity swaps) and DeepLabCut's own mAP / mAR. Pure functions over tidy tables;
DLC's metric functions are imported inside the functions that call them.

Tables (column names from :mod:`poseops.core.schema`):

- predictions: one row per (image, assembly, bodypart): ``image, assembly, bodypart, x, y,
  likelihood`` (assembly -1: the unique bodyparts); matched: plus ``individual``, ``oks``.
- errors: one row per labeled (image, individual, bodypart), see
  :func:`compute_errors_multianimal`.
- identity: one row per image, see :func:`identity_table`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate.common import (
    PRED_X,
    PRED_Y,
    REF_LENGTH,
    Pcutoff,
    check_images,
    pcutoff_array,
    reference_lengths,
)

log = logging.getLogger(__name__)

# A multi-animal model predicts, per image, up to ``max individuals`` animals ("assemblies",
# unordered, no identity) plus the unique bodyparts (one "single" animal). Evaluation first
# matches each predicted assembly to a ground-truth individual exactly as DeepLabCut's
# ``evaluate_network`` does (``deeplabcut.core.metrics``: GT animals with no visible keypoint and
# predictions with no valid keypoint dropped, predictions sorted by mean score, greedy OKS
# matching with sigma 0.1 and a 1e-6 OKS threshold), by CALLING DLC's own functions, so the
# matched errors, DLC's "rmse" and mAP/mAR are DLC's numbers by construction.

OKS = "oks"
SWAPPED = "swapped"  # matched keypoint nearer another labeled animal's same bodypart
NEAREST = "nearest_individual"
OKS_SIGMA = 0.1  # DLC's evaluate(): compute_metrics defaults
OKS_MATCH_THRESHOLD = 1e-6  # DLC's match_predictions_for_rmse
MA_PREDICTION_COLUMNS = [S.IMAGE, S.ASSEMBLY, S.BODYPART, S.X, S.Y, S.LIKELIHOOD]
IDENTITY_COLUMNS = [S.IMAGE, S.SPLIT, S.VIDEO, S.ANIMALS_IN_FRAME, "n_predicted", "n_matched",
                    "n_missed", "n_false_positive", "n_swapped", "n_swapped_keypoints"]


def is_multianimal(df: pd.DataFrame) -> bool:
    """A multi-animal table has an ``individual`` column (the shared contract)."""
    return S.INDIVIDUAL in df.columns


def animal_names(labels: pd.DataFrame, individuals: Sequence[str] | None = None) -> list[str]:
    """The animals (individuals other than ``single``), in ``individuals`` order (DLC's config
    order; it decides ties in the greedy matching) or else in order of appearance."""
    seen = [i for i in pd.unique(labels[S.INDIVIDUAL].astype(str)) if i != S.SINGLE]
    if individuals is None:
        return seen
    order = [str(i) for i in individuals if str(i) != S.SINGLE]
    return order + [i for i in seen if i not in order]


def _bodyparts(df: pd.DataFrame, single: bool) -> list[str]:
    is_single = df[S.INDIVIDUAL].astype(str) == S.SINGLE
    return list(pd.unique(df.loc[is_single if single else ~is_single, S.BODYPART].astype(str)))


def dlc_visible(labels: pd.DataFrame) -> np.ndarray:
    """DLC's visibility of a labeled keypoint (``DLCLoader``): x, y finite and strictly inside the
    image (0 < x < width, 0 < y < height, where the table has the image size)."""
    x, y = labels[S.X].to_numpy(float), labels[S.Y].to_numpy(float)
    vis = np.isfinite(x) & np.isfinite(y)
    if S.WIDTH in labels.columns and S.HEIGHT in labels.columns:
        w, h = labels[S.WIDTH].to_numpy(float), labels[S.HEIGHT].to_numpy(float)
        inside = (x > 0) & (y > 0) & ~(x >= w) & ~(y >= h)  # NaN size: no bound known
        vis &= inside
    return vis


def _fill(df: pd.DataFrame, images: pd.Index, rows: Sequence[str], bodyparts: Sequence[str],
          row_col: str | None, values: Sequence[np.ndarray], fill: Sequence[float]) -> np.ndarray:
    """(n_images, len(rows), len(bodyparts), len(values)) array from long rows."""
    out = np.empty((len(images), max(len(rows), 0), len(bodyparts), len(values)))
    for k, f in enumerate(fill):
        out[..., k] = f
    if df.empty or not len(rows):
        return out
    i = images.get_indexer(df[S.IMAGE])
    r = (pd.Index(rows).get_indexer(df[row_col].astype(str)) if row_col
         else np.zeros(len(df), dtype=np.int64))
    b = pd.Index(bodyparts).get_indexer(df[S.BODYPART].astype(str))
    ok = (i >= 0) & (r >= 0) & (b >= 0)
    for k, v in enumerate(values):
        out[i[ok], r[ok], b[ok], k] = np.asarray(v, float)[ok]
    return out


def pose_arrays(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    images: Sequence[str],
    individuals: Sequence[str] | None = None,
) -> dict[str, Any]:
    """DLC's evaluation inputs for ``images``, from the tidy tables.

    Ground truth as ``DLCLoader.ground_truth_keypoints`` builds it: (animals, bodyparts, 3) x, y,
    visibility (2 visible, 0 not: see :func:`dlc_visible`), animals in ``individuals`` order;
    unique bodyparts (1, unique, 3). Predictions as the runner returns them: (assemblies,
    bodyparts, 3) x, y, score (a missing assembly/keypoint: score -1, DLC's "not predicted");
    unique (1, unique, 3). Returns ``gt, pred, gt_unique, pred_unique`` (dicts image -> array;
    the unique ones None without unique bodyparts), ``animals, bodyparts, unique_bodyparts``.
    """
    animals = animal_names(labels, individuals)
    bps, ubps = _bodyparts(labels, False), _bodyparts(labels, True)
    img = pd.Index(list(images))
    lab = labels[labels[S.IMAGE].isin(img)]
    vis = dlc_visible(lab)
    xs = np.where(vis, lab[S.X].to_numpy(float), 0.0)
    ys = np.where(vis, lab[S.Y].to_numpy(float), 0.0)
    v = np.where(vis, 2.0, 0.0)
    is_u = lab[S.INDIVIDUAL].astype(str).to_numpy() == S.SINGLE
    gt = _fill(lab[~is_u], img, animals, bps, S.INDIVIDUAL, [xs[~is_u], ys[~is_u], v[~is_u]],
               (0.0, 0.0, 0.0))
    pr = predictions[predictions[S.IMAGE].isin(img)]
    asm = pr[S.ASSEMBLY].to_numpy(int)
    n_asm = int(asm.max()) + 1 if len(asm) and asm.max() >= 0 else 0
    pa = pr[asm >= 0].assign(_a=lambda d: d[S.ASSEMBLY].astype(str))
    pvals = [pa[c].to_numpy(float) for c in (S.X, S.Y, S.LIKELIHOOD)]
    pred = _fill(pa, img, [str(k) for k in range(n_asm)], bps, "_a", pvals, (np.nan, np.nan, -1.0))
    out: dict[str, Any] = {
        "gt": dict(zip(images, gt, strict=True)), "pred": dict(zip(images, pred, strict=True)),
        "gt_unique": None, "pred_unique": None,
        "animals": animals, "bodyparts": bps, "unique_bodyparts": ubps,
    }
    if ubps:
        gu = _fill(lab[is_u], img, [S.SINGLE], ubps, None, [xs[is_u], ys[is_u], v[is_u]],
                   (0.0, 0.0, 0.0))
        pu = pr[asm < 0]
        puv = [pu[c].to_numpy(float) for c in (S.X, S.Y, S.LIKELIHOOD)]
        pun = _fill(pu, img, [S.SINGLE], ubps, None, puv, (np.nan, np.nan, -1.0))
        out["gt_unique"] = dict(zip(images, gu, strict=True))
        out["pred_unique"] = dict(zip(images, pun, strict=True))
    return out


def match_image(
    gt: np.ndarray, pred: np.ndarray, single_animal: bool = False, oks_bbox_margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Match the predicted assemblies of one image to its ground-truth animals as DLC's RMSE
    does (``distance_metrics.match_predictions_for_rmse`` after ``prepare_evaluation_data``).

    ``gt``: (animals, bodyparts, 3) x, y, visibility; ``pred``: (assemblies, bodyparts, 3) x, y,
    score. Returns, per assembly (input order), the matched ground-truth row (-1: unmatched) and
    the OKS of the match. DLC's own ``compute_oks_matrix`` and ``match_greedy_oks`` do the work;
    the ground truth carries its row number in a fourth channel so the match can be read back.
    """
    from deeplabcut.core.metrics import distance_metrics as dm
    from deeplabcut.core.metrics import matching

    idx = np.full(len(pred), -1, dtype=np.int64)
    oks = np.full(len(pred), np.nan)
    g = np.asarray(gt, float)[..., :3].copy()
    g[g[..., 2] <= 0] = np.nan
    g_keep = np.flatnonzero(np.any(np.all(~np.isnan(g), axis=-1), axis=-1))
    p = np.asarray(pred, float)[..., :3].copy()
    p[p[..., 2] < 0] = np.nan
    p_keep = np.flatnonzero(np.any(np.all(~np.isnan(p), axis=-1), axis=-1))
    if not len(p_keep) or not len(g_keep):
        return idx, oks
    scores = np.nanmean(p[p_keep, :, 2], axis=-1)
    order = p_keep[np.argsort(-scores, kind="mergesort")]
    if single_animal:  # DLC: no matching, the one prediction against the one animal
        if len(g_keep) == 1 and len(order) == 1:
            idx[order[0]] = g_keep[0]
        return idx, oks
    g_sub, p_sub = g[g_keep], p[order]
    mat = dm.compute_oks_matrix(g_sub[:, :, :2], p_sub[:, :, :2], oks_sigma=OKS_SIGMA,
                                oks_bbox_margin=oks_bbox_margin)
    tag = np.broadcast_to(np.arange(len(g_sub), dtype=float)[:, None, None],
                          (*g_sub.shape[:2], 1))
    matches = matching.match_greedy_oks(np.concatenate([g_sub, tag], axis=-1), p_sub,
                                        oks_matrix=mat, oks_threshold=OKS_MATCH_THRESHOLD)
    for k, m in enumerate(matches):
        if m.gt is not None:
            idx[order[k]] = g_keep[int(m.gt[0, 3])]
            oks[order[k]] = float(m.oks)
    return idx, oks


def match_predictions(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    individuals: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The predictions table with ``individual`` (the ground-truth animal each assembly is
    matched to, DLC's matching: :func:`match_image`; None when unmatched; ``single`` for the
    unique bodyparts) and ``oks`` (of the match). ``labels``: one scorer, with ``individual``."""
    S.require_columns(labels, [S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y], "labels")
    S.require_columns(predictions, MA_PREDICTION_COLUMNS, "predictions")
    images = list(pd.unique(predictions[S.IMAGE]))
    arr = pose_arrays(labels, predictions, images, individuals)
    animals = arr["animals"]
    single = len(animals) == 1  # DLC: max_num_animals == 1 is scored as single-animal
    rows = []
    for image in images:
        gi, go = match_image(arr["gt"][image], arr["pred"][image], single)
        for a, (k, o) in enumerate(zip(gi, go, strict=True)):
            rows.append((image, a, animals[k] if k >= 0 else None, o))
    m = pd.DataFrame(rows, columns=[S.IMAGE, S.ASSEMBLY, S.INDIVIDUAL, OKS])
    out = predictions.drop(columns=[S.INDIVIDUAL, OKS], errors="ignore")
    out = out.merge(m, on=[S.IMAGE, S.ASSEMBLY], how="left")
    unique = out[S.ASSEMBLY].to_numpy(int) < 0
    out.loc[unique, S.INDIVIDUAL] = S.SINGLE
    front = [S.IMAGE, S.ASSEMBLY, S.INDIVIDUAL, S.BODYPART]
    return out[front + [c for c in out.columns if c not in front]]


def animals_in_frame(labels: pd.DataFrame) -> pd.Series:
    """Per image: the number of animals (individuals other than ``single``) with at least one
    labeled keypoint."""
    lab = labels[labels[S.X].notna() & labels[S.Y].notna()
                 & (labels[S.INDIVIDUAL].astype(str) != S.SINGLE)]
    n = lab.groupby(S.IMAGE, observed=True)[S.INDIVIDUAL].nunique()
    return n.reindex(pd.unique(labels[S.IMAGE]), fill_value=0).rename(S.ANIMALS_IN_FRAME)


def _swaps(errors: pd.DataFrame, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per errors row: the nearest visible ground-truth animal at the same bodypart to the
    prediction, and whether it is another animal than the matched one (strictly nearer)."""
    nearest = np.full(len(errors), None, dtype=object)
    swapped = np.zeros(len(errors), dtype=bool)
    ok = np.isfinite(errors[S.ERROR_PX].to_numpy(float)) & (
        errors[S.INDIVIDUAL].astype(str).to_numpy() != S.SINGLE)
    if not ok.any():
        return nearest, swapped
    vis = dlc_visible(labels) & (labels[S.INDIVIDUAL].astype(str).to_numpy() != S.SINGLE)
    gt = labels.loc[vis, [S.IMAGE, S.BODYPART, S.INDIVIDUAL, S.X, S.Y]].rename(
        columns={S.INDIVIDUAL: "_gi", S.X: "_gx", S.Y: "_gy"})
    e = errors.loc[ok, [S.IMAGE, S.BODYPART, PRED_X, PRED_Y, S.ERROR_PX]].copy()
    e["_row"] = np.flatnonzero(ok)
    cand = e.merge(gt, on=[S.IMAGE, S.BODYPART], how="inner")
    cand["_d"] = np.hypot(cand[PRED_X] - cand["_gx"], cand[PRED_Y] - cand["_gy"])
    best = cand.sort_values(["_row", "_d"], kind="stable").drop_duplicates("_row")
    rows = best["_row"].to_numpy()
    nearest[rows] = best["_gi"].astype(str).to_numpy()
    own = errors[S.INDIVIDUAL].astype(str).to_numpy()[rows]
    swapped[rows] = (nearest[rows] != own) & (best["_d"].to_numpy() < best[S.ERROR_PX].to_numpy())
    return nearest, swapped


def compute_errors_multianimal(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    split: pd.DataFrame,
    reference_bodyparts: Sequence[str] | None = None,
    individuals: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The multi-animal errors table: one row per labeled-table row (image, individual,
    bodypart), joined to the prediction of the assembly matched to that individual
    (:func:`match_predictions`; ``predictions`` without ``individual`` are matched here).

    Columns as the single-animal table plus ``individual``, ``assembly`` (-1 unique bodyparts,
    NaN unmatched), ``oks``, ``animals_in_frame``, ``nearest_individual``, ``swapped``.
    ``labeled`` is DLC's visibility (labeled and inside the image; DLC ignores the rest).
    ``error_px`` is finite exactly where DLC's RMSE counts a pixel error: labeled, matched, and
    the keypoint predicted (score >= 0). So ``mean_px`` over the table is DLC's multi-animal
    "rmse". ``ref_length_px`` is per (image, individual) (NaN for ``single``).
    """
    S.require_columns(labels, [S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y], "labels")
    S.require_columns(split, [S.IMAGE, S.SPLIT], "split")
    if S.INDIVIDUAL not in predictions.columns:
        predictions = match_predictions(labels, predictions, individuals)
    S.require_columns(predictions, [*MA_PREDICTION_COLUMNS, S.INDIVIDUAL], "predictions")
    check_images(labels, predictions, split)
    pred = predictions[predictions[S.INDIVIDUAL].notna()]
    pred = pred[[S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y, S.LIKELIHOOD, S.ASSEMBLY]
                + ([OKS] if OKS in pred.columns else [])]
    pred = pred.rename(columns={S.X: PRED_X, S.Y: PRED_Y})
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART]
    lab = labels.drop(columns=[S.LIKELIHOOD, S.SPLIT, S.LABELED], errors="ignore")
    lab = lab[lab[S.IMAGE].isin(pd.unique(predictions[S.IMAGE]))]
    lab = lab.assign(**{S.INDIVIDUAL: lab[S.INDIVIDUAL].astype(str)})
    df = lab.merge(pred.assign(**{S.INDIVIDUAL: pred[S.INDIVIDUAL].astype(str)}), on=keys,
                   how="left", validate="one_to_one")
    split_cols = [c for c in split.columns if c not in labels.columns or c == S.IMAGE]
    df = df.merge(split[split_cols].drop_duplicates(S.IMAGE), on=S.IMAGE, how="inner")
    visible = dlc_visible(df)
    df[S.LABELED] = visible
    lik = df[S.LIKELIHOOD].to_numpy(float)
    predicted = np.isfinite(lik) & (lik >= 0)  # DLC: score < 0 is "not predicted"
    df.loc[~predicted, [PRED_X, PRED_Y]] = np.nan
    err = np.hypot(df[PRED_X].to_numpy(float) - df[S.X], df[PRED_Y].to_numpy(float) - df[S.Y])
    df[S.ERROR_PX] = np.where(visible & predicted, err, np.nan)
    df[S.ANIMALS_IN_FRAME] = df[S.IMAGE].map(animals_in_frame(labels)).astype(int)
    df[NEAREST], df[SWAPPED] = _swaps(df, labels)
    if reference_bodyparts:
        ref = _reference_lengths_ma(labels, reference_bodyparts)
        df[REF_LENGTH] = pd.MultiIndex.from_frame(df[[S.IMAGE, S.INDIVIDUAL]]).map(
            lambda k: ref.get(k, np.nan)).astype(float)
    front = [S.IMAGE, S.SPLIT, S.INDIVIDUAL, S.BODYPART, S.VIDEO]
    front = [c for c in front if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)


def _reference_lengths_ma(labels: pd.DataFrame, bodyparts: Sequence[str]) -> dict:
    """``reference_lengths`` per (image, individual): {(image, individual): px}."""
    out: dict = {}
    lab = labels[labels[S.INDIVIDUAL].astype(str) != S.SINGLE]
    for ind, g in lab.groupby(lab[S.INDIVIDUAL].astype(str), observed=True, sort=False):
        for image, v in reference_lengths(g, bodyparts).items():
            out[(image, ind)] = v
    if not out:  # no animal rows: the same error as single-animal for a missing bodypart
        reference_lengths(lab, bodyparts)
    return out


def identity_table(errors: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Per image, the animal-level outcome of the matching (multi-animal errors + matched
    predictions): ``image, split, video, animals_in_frame, n_predicted`` (assemblies with a
    predicted keypoint), ``n_matched``, ``n_missed`` (labeled animals left unmatched),
    ``n_false_positive`` (predicted assemblies left unmatched), ``n_swapped``,
    ``n_swapped_keypoints``.

    Identity error ("swap"): a matched assembly with at least one keypoint that lies strictly
    nearer the same bodypart of ANOTHER labeled animal than of the animal it was matched to. The
    assembly then mixes two animals' parts (assembly purity < 1 in Lauer et al. 2022, Nature
    Methods, maDLC), or the prediction has jumped to the neighbour for that part: the error DLC's
    "rmse after matching" counts as a large pixel error but does not name. Per-keypoint flags are
    the errors table's ``swapped``; frame-to-frame identity (tracking) is not judged here.
    """
    e = errors[errors[S.INDIVIDUAL].astype(str) != S.SINGLE]
    per = e.groupby(S.IMAGE, sort=True, observed=True)
    out = per[[S.SPLIT] + ([S.VIDEO] if S.VIDEO in e.columns else [])].first()
    out[S.ANIMALS_IN_FRAME] = per[S.ANIMALS_IN_FRAME].first()
    p = predictions[predictions[S.ASSEMBLY].to_numpy(int) >= 0]
    valid = p[S.LIKELIHOOD].to_numpy(float) >= 0
    out["n_predicted"] = p[valid].groupby(S.IMAGE)[S.ASSEMBLY].nunique().reindex(out.index)
    asm = p[valid].drop_duplicates([S.IMAGE, S.ASSEMBLY])
    matched = asm[S.INDIVIDUAL].notna()
    out["n_matched"] = asm[matched].groupby(S.IMAGE).size().reindex(out.index)
    vis_animals = e[e[S.LABELED]].groupby(S.IMAGE)[S.INDIVIDUAL].nunique().reindex(out.index)
    out["n_missed"] = vis_animals.fillna(0) - out["n_matched"].fillna(0)
    out["n_false_positive"] = out["n_predicted"].fillna(0) - out["n_matched"].fillna(0)
    sw = e[e[SWAPPED].astype(bool)]
    out["n_swapped"] = sw.groupby(S.IMAGE)[S.INDIVIDUAL].nunique().reindex(out.index)
    out["n_swapped_keypoints"] = sw.groupby(S.IMAGE).size().reindex(out.index)
    for c in ("n_predicted", "n_matched", "n_missed", "n_false_positive", "n_swapped",
              "n_swapped_keypoints"):
        out[c] = out[c].fillna(0).astype(int)
    out = out.reset_index()
    return out[[c for c in IDENTITY_COLUMNS if c in out.columns]]


def identity_summary(identity: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per split: ``n_animals`` (labeled), ``n_matched_animals``, ``n_missed_animals``,
    ``n_false_positives``, ``identity_swaps`` (swapped assemblies), ``identity_swap_rate``
    (swaps / matched), ``swapped_keypoints``."""
    out: dict[str, dict[str, float]] = {}
    for split_name, g in identity.groupby(S.SPLIT, sort=False):
        matched = float(g["n_matched"].sum())
        out[str(split_name)] = {
            "n_animals": float((g["n_matched"] + g["n_missed"]).sum()),
            "n_matched_animals": matched,
            "n_missed_animals": float(g["n_missed"].sum()),
            "n_false_positives": float(g["n_false_positive"].sum()),
            "identity_swaps": float(g["n_swapped"].sum()),
            "identity_swap_rate": float(g["n_swapped"].sum()) / matched if matched else np.nan,
            "swapped_keypoints": float(g["n_swapped_keypoints"].sum()),
        }
    return out


def dlc_pcutoff_list(pcutoff: Pcutoff, bodyparts: Sequence[str],
                     unique_bodyparts: Sequence[str]) -> float | list[float]:
    """DLC's pcutoff argument: the scalar, or one value per bodypart then unique bodypart."""
    if not isinstance(pcutoff, Mapping):
        return float(pcutoff)
    names = [*bodyparts, *unique_bodyparts]
    return [float(x) for x in pcutoff_array(pd.Series(names), pcutoff)]


def dlc_multianimal_metrics(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    images: Sequence[str],
    pcutoff: Pcutoff = 0.6,
    individuals: Sequence[str] | None = None,
) -> dict[str, float]:
    """DeepLabCut's own multi-animal metrics on ``images``: ``deeplabcut.core.metrics.
    compute_metrics`` called exactly as ``evaluate_network`` calls it (OKS sigma 0.1, no bbox
    margin, single-animal scoring when the project has one animal, unique bodyparts included).
    Returns ``mAP``, ``mAR`` (percent), ``dlc_rmse_px`` (mean pixel error after OKS matching)
    and ``dlc_rmse_pcutoff_px``."""
    from deeplabcut.core.metrics import compute_metrics

    if not len(images):
        return {"mAP": np.nan, "mAR": np.nan, "dlc_rmse_px": np.nan,
                "dlc_rmse_pcutoff_px": np.nan}
    arr = pose_arrays(labels, predictions, list(images), individuals)
    r = compute_metrics(
        arr["gt"], arr["pred"], single_animal=len(arr["animals"]) == 1,
        unique_bodypart_gt=arr["gt_unique"], unique_bodypart_poses=arr["pred_unique"],
        pcutoff=dlc_pcutoff_list(pcutoff, arr["bodyparts"], arr["unique_bodyparts"]),
        compute_detection_rmse=False,
    )
    return {"mAP": float(r["mAP"]), "mAR": float(r["mAR"]), "dlc_rmse_px": float(r["rmse"]),
            "dlc_rmse_pcutoff_px": float(r["rmse_pcutoff"])}
