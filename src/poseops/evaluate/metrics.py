"""Pose-error metrics: pure, vectorised functions over tidy tables (no I/O; DLC only for its own
metric functions): the errors
table, the stratified table, headline numbers, PCK (and the PCK curve's AUC), keypoint
visibility precision / recall, single-animal OKS mAP / mAR (DLC's own), condition-bias tests.

Two "RMSE"s, named apart everywhere:

- ``rmse_px``: the true root-mean-square Euclidean error, sqrt(mean(d**2)).
- ``mean_px``: the mean Euclidean error, mean(d). This is what DeepLabCut calls "rmse"
  (``deeplabcut/core/metrics/distance_metrics.py``: sum of distances / number of distances);
  the headline metrics repeat it as ``dlc_rmse_px`` so it can be compared with DLC's tables.

``*_pcutoff`` variants keep only keypoints whose prediction likelihood is >= pcutoff (a scalar
or one cutoff per bodypart), as DLC's ``rmse_pcutoff`` does.

Tables (column names from :mod:`poseops.core.schema`):

- errors: one row per (image, bodypart): ``image, split, bodypart, video, <metadata>, x, y
  (label), pred_x, pred_y, error_px, likelihood, labeled, ref_length_px`` (column names of the
  predictions and reference lengths: :mod:`poseops.evaluate.common`; multi-animal tables:
  :mod:`poseops.evaluate.matching`).
- stratified: one row per (stratum_type, stratum, split): ``n, mean_px, rmse_px, median_px,
  p95_px, n_pcutoff, mean_px_pcutoff, rmse_px_pcutoff, pcutoff_coverage, median_likelihood,
  norm_mean, pck_<t>px..., pck_<f>ref...``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poseops.config.evaluate import DEFAULT_STRATA  # noqa: F401 - re-exported: the strata default
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.evaluate.common import (
    PRED_X,
    PRED_Y,
    REF_LENGTH,
    Pcutoff,
    check_images,
    pcutoff_array,
    reference_lengths,
)
from poseops.evaluate.matching import (
    compute_errors_multianimal,
    dlc_pcutoff_list,
    dlc_visible,
    is_multianimal,
)

log = logging.getLogger(__name__)

STRATUM_TYPE, STRATUM, N = "stratum_type", "stratum", "n"
ALL = "all"
CELL_SEP = "|"  # joins the values of a crossed stratum, e.g. "snout|vehicle"


@dataclass(frozen=True)
class MetricSpec:
    """What to compute for each cell of the stratified table."""

    pcutoff: Pcutoff = 0.6
    pck_px: tuple[float, ...] = (2.0, 5.0, 10.0)
    pck_fractions: tuple[float, ...] = (0.05, 0.1, 0.2)


# ---------------------------------------------------------------------------------- errors


def compute_errors(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    split: pd.DataFrame,
    reference_bodyparts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Join predictions to labels and the split: the per-frame, per-bodypart error table.

    ``labels``: consensus table (image, bodypart, x, y, labeled, video, metadata...).
    ``predictions``: (image, bodypart, x, y, likelihood). ``split``: (image, split, ...).
    Every predicted image must be in the split and in the labels, and every image of the split
    with at least one labeled keypoint must have predictions (PoseopsError naming the first culprit otherwise).
    ``error_px`` is NaN where the keypoint is not labeled (it then counts in no metric).
    A multi-animal ``labels`` table (with ``individual``) gives
    :func:`poseops.evaluate.matching.compute_errors_multianimal`'s table.
    """
    if is_multianimal(labels):
        return compute_errors_multianimal(labels, predictions, split, reference_bodyparts)
    S.require_columns(labels, [S.IMAGE, S.BODYPART, S.X, S.Y], "labels")
    S.require_columns(predictions, S.PREDICTION_COLUMNS, "predictions")
    S.require_columns(split, [S.IMAGE, S.SPLIT], "split")
    check_images(labels, predictions, split)
    pred = predictions[S.PREDICTION_COLUMNS].rename(columns={S.X: PRED_X, S.Y: PRED_Y})
    split_cols = [c for c in split.columns if c not in labels.columns or c == S.IMAGE]
    lab = labels.drop(columns=[S.LIKELIHOOD, S.SPLIT], errors="ignore")
    df = lab.merge(pred, on=[S.IMAGE, S.BODYPART], how="inner", validate="one_to_one")
    df = df.merge(split[split_cols].drop_duplicates(S.IMAGE), on=S.IMAGE, how="inner")
    labeled = np.isfinite(df[S.X].to_numpy(float)) & np.isfinite(df[S.Y].to_numpy(float))
    df[S.LABELED] = labeled
    err = np.hypot(df[PRED_X].to_numpy(float) - df[S.X], df[PRED_Y].to_numpy(float) - df[S.Y])
    df[S.ERROR_PX] = np.where(labeled, err, np.nan)
    if reference_bodyparts:
        ref = reference_lengths(labels, reference_bodyparts)
        df[REF_LENGTH] = df[S.IMAGE].map(ref).astype(float)
    front = [S.IMAGE, S.SPLIT, S.BODYPART, S.VIDEO]
    front = [c for c in front if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)


# ---------------------------------------------------------------------------- aggregation


def _label(t: float) -> str:
    return f"{t:g}".replace(".", "_")


def pck_px_column(t: float) -> str:
    return f"pck_{_label(t)}px"


def pck_ref_column(f: float) -> str:
    return f"pck_{_label(f)}ref"


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (-1 = missing) and the sorted distinct values (as strings) of a column."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories.astype(str).to_numpy()
        codes = values.cat.codes.to_numpy()
        order = np.argsort(cats, kind="stable")
        remap = np.empty(len(cats) + 1, dtype=np.int64)
        remap[order] = np.arange(len(cats))
        remap[-1] = -1
        return remap[codes], cats[order]
    codes, uniques = pd.factorize(values.astype(str) if values.dtype != object else values, sort=True)
    return codes, np.asarray(uniques, dtype=object).astype(str)


def _sorted_quantiles(
    cell: np.ndarray, values: np.ndarray, by_val: np.ndarray, n_cells: int, qs: Sequence[float]
) -> np.ndarray:
    """Per-cell quantiles (linear interpolation, numpy's default) of ``values`` grouped by
    ``cell`` (ints in [0, n_cells)). ``by_val`` = argsort of ``values``, computed once; then one
    stable integer sort by cell per stratum (radix sort for small cell codes)."""
    small = np.int16 if n_cells < np.iinfo(np.int16).max else np.int64
    order = by_val[np.argsort(cell[by_val].astype(small), kind="stable")]
    v = values[order]
    counts = np.bincount(cell, minlength=n_cells)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full((n_cells, len(qs)), np.nan)
    has = counts > 0
    for j, q in enumerate(qs):
        pos = (counts[has] - 1) * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, counts[has] - 1)
        frac = pos - lo
        a, b = v[starts[has] + lo], v[starts[has] + hi]
        out[has, j] = a + (b - a) * frac
    return out


@dataclass
class _Prepared:
    """Per-row arrays over the labeled keypoints (finite error) of an errors table."""

    rows: np.ndarray  # positions in the errors table
    e: np.ndarray
    lik: np.ndarray
    weights: dict[str, np.ndarray]  # summed per cell
    e_order: np.ndarray  # argsort of e
    lik_order: np.ndarray  # argsort of lik


def _prepare(errors: pd.DataFrame, spec: MetricSpec) -> _Prepared:
    """Only labeled keypoints with a finite error, plus the per-row columns summed later."""
    S.require_columns(errors, [S.SPLIT, S.BODYPART, S.ERROR_PX, S.LIKELIHOOD], "errors")
    e_all = errors[S.ERROR_PX].to_numpy(float)
    rows = np.flatnonzero(np.isfinite(e_all))
    e = e_all[rows]
    lik = errors[S.LIKELIHOOD].to_numpy(float)[rows]
    cut = pcutoff_array(errors[S.BODYPART].to_numpy()[rows], spec.pcutoff)
    above = lik >= cut
    w: dict[str, np.ndarray] = {
        "_e": e,
        "_e2": e * e,
        "_pc": above.astype(float),
        "_epc": np.where(above, e, 0.0),
        "_e2pc": np.where(above, e * e, 0.0),
    }
    for t in spec.pck_px:
        w[pck_px_column(t)] = (e <= t).astype(float)
    if REF_LENGTH in errors.columns:
        ref = errors[REF_LENGTH].to_numpy(float)[rows]
    else:
        ref = np.full(len(rows), np.nan)
    has_ref = np.isfinite(ref) & (ref > 0)
    safe_ref = np.where(has_ref, ref, 1.0)
    w["_hasref"] = has_ref.astype(float)
    w["_norm"] = np.where(has_ref, e / safe_ref, 0.0)
    for f in spec.pck_fractions:
        w[pck_ref_column(f)] = (has_ref & (e <= f * safe_ref)).astype(float)
    return _Prepared(
        rows=rows,
        e=e,
        lik=lik,
        weights=w,
        e_order=np.argsort(e, kind="stable"),
        lik_order=np.argsort(lik, kind="stable"),
    )


def _aggregate_cells(
    prep: _Prepared, cell: np.ndarray, n_cells: int, spec: MetricSpec
) -> pd.DataFrame:
    """Aggregate the prepared rows by integer ``cell`` code: one row per cell (all n_cells)."""
    c = cell[prep.rows]
    n = np.bincount(c, minlength=n_cells).astype(float)
    sums = {k: np.bincount(c, weights=v, minlength=n_cells) for k, v in prep.weights.items()}
    q = _sorted_quantiles(c, prep.e, prep.e_order, n_cells, (0.5, 0.95))
    med_lik = _sorted_quantiles(c, prep.lik, prep.lik_order, n_cells, (0.5,))[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        npc, nref = sums["_pc"], sums["_hasref"]
        out = {
            N: n.astype(int),
            "mean_px": sums["_e"] / n,
            "rmse_px": np.sqrt(sums["_e2"] / n),
            "median_px": q[:, 0],
            "p95_px": q[:, 1],
            "n_pcutoff": npc.astype(int),
            "mean_px_pcutoff": np.where(npc > 0, sums["_epc"] / npc, np.nan),
            "rmse_px_pcutoff": np.where(npc > 0, np.sqrt(sums["_e2pc"] / npc), np.nan),
            "pcutoff_coverage": npc / n,
            "median_likelihood": med_lik,
            "norm_mean": np.where(nref > 0, sums["_norm"] / nref, np.nan),
        }
        for t in spec.pck_px:
            col = pck_px_column(t)
            out[col] = sums[col] / n
        for f in spec.pck_fractions:
            col = pck_ref_column(f)
            out[col] = np.where(nref > 0, sums[col] / nref, np.nan)
    return pd.DataFrame(out)


def _stratum_name(stratum: str | tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    cols = (stratum,) if isinstance(stratum, str) else tuple(stratum)
    return "_x_".join(cols), cols


def stratified_table(
    errors: pd.DataFrame,
    spec: MetricSpec = MetricSpec(),
    strata: Iterable[str | tuple[str, ...]] = DEFAULT_STRATA,
) -> pd.DataFrame:
    """The long stratified error table: one row per (stratum_type, stratum, split).

    ``stratum_type`` is ``all`` (stratum ``all``), a column name (``bodypart``, ``condition``...)
    or crossed columns joined by ``_x_`` (``bodypart_x_condition``, stratum ``snout|vehicle``).
    Strata whose column is absent from ``errors`` are skipped; rows with a missing stratum value
    are left out of that stratum. A cell that has rows in a split but no labeled keypoint there
    (n = 0) is an error naming the cell. Vectorised: integer cell codes + ``np.bincount``.

    Multi-animal errors (with ``individual``): also strata ``individual`` and
    ``animals_in_frame``, and a column ``n_labeled`` (labeled keypoints of the cell; ``n`` counts
    those matched to a prediction, so n < n_labeled means missed animals). A cell with labeled
    keypoints but none matched is a result (n = 0, NaN metrics), not an error; a cell without
    labeled keypoints is left out.
    """
    S.require_columns(errors, [S.SPLIT, S.BODYPART, S.ERROR_PX, S.LIKELIHOOD], "errors")
    if errors.empty:
        raise PoseopsError("errors table is empty: nothing to evaluate")
    strata = list(strata)
    prep = _prepare(errors, spec)
    multi = is_multianimal(errors) and S.LABELED in errors.columns
    labeled_rows = errors[S.LABELED].to_numpy(bool) if multi else None
    split_codes, split_names = _codes(errors[S.SPLIT])
    split_rank = np.array([S.SPLITS.index(s) if s in S.SPLITS else len(S.SPLITS) + i
                           for i, s in enumerate(split_names)])
    parts = []
    for stratum in [ALL, *strata]:
        name, cols = (ALL, ()) if stratum == ALL else _stratum_name(stratum)
        if any(c not in errors.columns for c in cols):
            continue
        cell, n_cells, labels = split_codes.astype(np.int64), len(split_names), [split_names]
        for col in cols:
            codes, uniq = _codes(errors[col])
            cell = np.where((cell < 0) | (codes < 0), -1, cell * len(uniq) + codes)
            n_cells *= len(uniq)
            labels.append(uniq)
        present = np.bincount(cell[cell >= 0], minlength=n_cells)
        if labeled_rows is not None:
            present = np.bincount(cell[(cell >= 0) & labeled_rows], minlength=n_cells)
        cell_for_prep = np.where(cell >= 0, cell, n_cells)  # parking cell for missing values
        agg = _aggregate_cells(prep, cell_for_prep, n_cells + 1, spec).iloc[:n_cells]
        idx = np.unravel_index(np.arange(n_cells), [len(u) for u in labels])
        agg.insert(0, S.SPLIT, labels[0][idx[0]])
        if cols:
            stratum_vals = labels[1][idx[1]].astype(object)
            for k in range(2, len(labels)):
                stratum_vals = stratum_vals + CELL_SEP + labels[k][idx[k]].astype(object)
        else:
            stratum_vals = np.full(n_cells, ALL, dtype=object)
        agg.insert(0, STRATUM, stratum_vals)
        agg.insert(0, STRATUM_TYPE, name)
        agg["_rank"] = split_rank[idx[0]]
        if labeled_rows is not None:
            agg.insert(agg.columns.get_loc(N) + 1, "n_labeled", present)
        empty = (present > 0) & (agg[N].to_numpy() == 0)
        if empty.any() and labeled_rows is None:
            row = agg[empty].iloc[0]
            raise PoseopsError(
                f"empty stratum: {name}={row[STRATUM]!r} in split {row[S.SPLIT]!r} has no "
                f"labeled keypoint with a prediction ({int(empty.sum())} empty cell(s)); "
                "relabel or drop these frames"
            )
        parts.append(agg[present > 0].sort_values(["_rank", STRATUM], kind="stable"))
    out = pd.concat(parts, ignore_index=True).drop(columns="_rank")
    return out


# ------------------------------------------------------------------------------ headline


def headline_metrics(stratified: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Headline numbers per split from the ``all`` rows, plus the train-test gap.

    Returns ``{split: {metric: value}}`` (``dlc_rmse_px`` = ``mean_px``, DLC's "rmse") and
    ``{"gap": {"train_test_gap_pct": ..., "train_test_gap_mean_pct": ...}}``.
    """
    rows = stratified[stratified[STRATUM_TYPE] == ALL].set_index(S.SPLIT)
    out: dict[str, dict[str, float]] = {}
    metric_cols = [c for c in rows.columns if c not in (STRATUM_TYPE, STRATUM)]
    for split_name, row in rows.iterrows():
        d = {c: _num(row[c]) for c in metric_cols}
        d["dlc_rmse_px"] = d["mean_px"]
        d["dlc_rmse_pcutoff_px"] = d["mean_px_pcutoff"]
        out[str(split_name)] = d
    if S.TRAIN in out and S.TEST in out:
        out["gap"] = {
            "train_test_gap_pct": gap_pct(out[S.TRAIN]["rmse_px"], out[S.TEST]["rmse_px"]),
            "train_test_gap_mean_pct": gap_pct(out[S.TRAIN]["mean_px"], out[S.TEST]["mean_px"]),
        }
    return out


def gap_pct(train: float, test: float) -> float:
    """Relative train-test gap in percent: 100 * (test - train) / train (NaN if train is 0)."""
    if not np.isfinite(train) or train == 0:
        return float("nan")
    return float(100.0 * (test - train) / train)


def _num(v: object) -> float:
    return float(v) if v is not None and pd.notna(v) else float("nan")


def pck_curve(
    errors: pd.DataFrame, thresholds_px: Sequence[float] | np.ndarray
) -> pd.DataFrame:
    """PCK (share of labeled keypoints with error <= t) per split over thresholds.

    Returns columns ``split, threshold_px, pck`` (long, for a DVC/vega line plot).
    """
    thr = np.asarray(thresholds_px, float)
    e = errors[S.ERROR_PX].to_numpy(float)
    keep = np.isfinite(e)
    rows = []
    for split_name, ev in pd.Series(e[keep], index=errors[S.SPLIT].to_numpy()[keep]).groupby(
        level=0, sort=False
    ):
        srt = np.sort(ev.to_numpy())
        pck = np.searchsorted(srt, thr, side="right") / len(srt)
        rows.append(pd.DataFrame({S.SPLIT: split_name, "threshold_px": thr, "pck": pck}))
    out = pd.concat(rows, ignore_index=True)
    out["_o"] = out[S.SPLIT].map({s: i for i, s in enumerate(S.SPLITS)})
    return out.sort_values(["_o", "threshold_px"]).drop(columns="_o").reset_index(drop=True)


# ---------------------------------------------------------------------------- condition bias


def frame_errors(
    errors: pd.DataFrame, split: str | None = S.TEST, columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Per-frame error: the mean ``error_px`` over the labeled bodyparts of each image.

    Returns one row per image with ``image, split, error_px`` and the image's metadata columns
    (the standard ones and ``columns``, where present; the image's first row's value).
    """
    df = errors if split is None else errors[errors[S.SPLIT] == split]
    df = df[np.isfinite(df[S.ERROR_PX].to_numpy(float))]
    wanted = [S.SPLIT, S.VIDEO, *S.METADATA_COLUMNS, *columns]
    meta = [c for c in dict.fromkeys(wanted) if c in df.columns and c != S.IMAGE]
    per = df.groupby(S.IMAGE, sort=True, observed=True)[S.ERROR_PX].mean()
    first = df.drop_duplicates(S.IMAGE).set_index(S.IMAGE)[meta]
    return first.join(per).reset_index()


def group_tests(
    values: np.ndarray, groups: np.ndarray, min_per_group: int = 1, what: str = "observations"
) -> dict[str, float | str]:
    """One-way ANOVA and Kruskal-Wallis of ``values`` across ``groups``, with effect sizes.

    eta² = SS_between / SS_total; epsilon² (Kruskal-Wallis) = H / (n - 1)
    (Tomczak & Tomczak 2014: H / ((n² - 1) / (n + 1))). NaN, with the reason in ``note``, when
    there are fewer than two groups, no more observations than groups, or a group with fewer than
    ``min_per_group`` observations (a p-value from one observation per group is not evidence).
    """
    from scipy import stats

    values = np.asarray(values, float)
    labels, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n, k = len(values), len(labels)
    res: dict[str, float | str] = {
        "n": float(n),
        "k": float(k),
        "anova_f": np.nan,
        "anova_p": np.nan,
        "eta_sq": np.nan,
        "kruskal_h": np.nan,
        "kruskal_p": np.nan,
        "epsilon_sq": np.nan,
        "note": "",
    }
    counts = np.bincount(codes, minlength=k)
    if k < 2:
        res["note"] = f"fewer than 2 groups ({k})"
        return res
    if counts.min() < min_per_group:
        few = ", ".join(f"{lab} {c}" for lab, c in zip(labels, counts, strict=True)
                        if c < min_per_group)
        res["note"] = f"fewer than {min_per_group} {what} per group ({few})"
        return res
    if n <= k:
        res["note"] = f"{n} {what} for {k} groups: no within-group variation"
        return res
    samples = [values[codes == i] for i in range(k)]
    f = stats.f_oneway(*samples)
    grand = values.mean()
    means = np.bincount(codes, weights=values) / counts
    ss_between = float((counts * (means - grand) ** 2).sum())
    ss_total = float(((values - grand) ** 2).sum())
    res.update(anova_f=float(f.statistic), anova_p=float(f.pvalue))
    res["eta_sq"] = ss_between / ss_total if ss_total > 0 else np.nan
    if np.ptp(values) > 0:
        h = stats.kruskal(*samples)
        res.update(kruskal_h=float(h.statistic), kruskal_p=float(h.pvalue))
        res["epsilon_sq"] = float(h.statistic) / (n - 1)
    return res


MIN_UNITS_PER_GROUP = 2  # condition bias: units needed in every group for a p-value
BIAS_COLUMNS = ["factor", S.SPLIT, "unit", "n_units", "n_frames", "n", "k", "anova_f", "anova_p",
                "eta_sq", "kruskal_h", "kruskal_p", "epsilon_sq", "note"]


def unit_means(fe: pd.DataFrame, factor: str, unit: str) -> tuple[pd.DataFrame, bool]:
    """Mean per-frame error per ``unit`` (video, animal...) and ``factor`` level, from
    :func:`frame_errors` rows with both values present: ``unit, factor, error_px, n_frames``.
    Also returns whether the factor varies within a unit (then a unit has several rows, one per
    level it was seen at)."""
    ok = fe[factor].notna() & fe[unit].notna()
    keys = list(dict.fromkeys([unit, factor]))  # unit == factor: one key
    d = fe.loc[ok, [*keys, S.ERROR_PX]]
    within = len(keys) == 2 and bool((d.groupby(unit, observed=True)[factor].nunique() > 1).any())
    out = d.groupby(keys, observed=True, sort=True)[S.ERROR_PX].agg(["mean", "size"])
    out = out.reset_index().rename(columns={"mean": S.ERROR_PX, "size": "n_frames"})
    return out, within


def condition_bias(
    errors: pd.DataFrame,
    factors: Sequence[str] = (S.CONDITION, S.ANIMAL),
    split: str = S.TEST,
    unit: str = S.VIDEO,
    min_units_per_group: int = MIN_UNITS_PER_GROUP,
) -> pd.DataFrame:
    """Does ``split`` error differ across conditions (animals...)? One row per factor:
    ``factor, split, unit, n_units, n_frames, n, k, anova_f, anova_p, eta_sq, kruskal_h,
    kruskal_p, epsilon_sq, note``.

    Frames are not independent: they are nested in a few videos, and condition is confounded with
    video. So the tests run on ``unit`` means (default: the mean per-frame error of each video),
    ``n`` = the number of those means, ``n_units`` = distinct units, ``n_frames`` = the frames
    behind them. ``unit="image"`` treats every frame as independent (the optimistic, too-small
    p-values of a per-frame test). A factor that varies within a unit (e.g. unit animal, factor
    condition in a crossover) is aggregated per (unit, level): a unit then counts in several
    groups, which are no longer independent (said in ``note``). Fewer than ``min_units_per_group``
    means in some group: NaN statistics, the reason in ``note``.
    """
    fe = frame_errors(errors, split, [*factors, unit])
    if unit != S.IMAGE and unit not in fe.columns:
        raise PoseopsError(
            f"condition bias: unit column {unit!r} not in the errors table (have "
            f"{sorted(fe.columns)}); set evaluate.bias_unit to one of them, or 'image'"
        )
    rows = []
    for factor in factors:
        if factor not in fe.columns:
            continue
        if unit == S.IMAGE:
            ok = fe[factor].notna()
            vals, groups = fe.loc[ok, S.ERROR_PX].to_numpy(), fe.loc[ok, factor].to_numpy()
            n_units = n_frames = int(ok.sum())
            res = group_tests(vals, groups, what="frames")
            note = "every frame counted as independent (optimistic p-values)"
        else:
            cells, within = unit_means(fe, factor, unit)
            res = group_tests(cells[S.ERROR_PX].to_numpy(), cells[factor].to_numpy(),
                              min_units_per_group, f"{unit}s")
            n_units, n_frames = int(cells[unit].nunique()), int(cells["n_frames"].sum())
            note = ""
            if within:
                note = (f"{factor} varies within {unit}: tests on ({unit}, {factor}) means; a "
                        f"{unit} in several groups makes them dependent (p-values approximate)")
        why = res.pop("note")
        rows.append({"factor": factor, S.SPLIT: split, "unit": unit, "n_units": n_units,
                     "n_frames": n_frames, **res,
                     "note": "; ".join(x for x in (why, note) if x)})
    out = pd.DataFrame(rows, columns=BIAS_COLUMNS)
    for c in ("n_units", "n_frames", "n", "k"):
        out[c] = out[c].astype(int)
    return out


# ------------------------------------------------------- PCK AUC, visibility, single-animal OKS

VISIBILITY_COLUMNS = [S.SPLIT, S.BODYPART, "n", "n_labeled", "tp", "fp", "fn", "tn",
                      "precision", "recall"]


def pck_auc(pck: pd.DataFrame) -> dict[str, float]:
    """Normalised area under each split's PCK curve (:func:`pck_curve`'s table): the trapezoid
    integral of ``pck`` over ``threshold_px`` divided by the thresholds' range, so 1.0 means
    every keypoint within the smallest threshold and 0.0 none within the largest. ``{split:
    auc}``; NaN for a split whose curve has fewer than two distinct thresholds."""
    out: dict[str, float] = {}
    for split_name, g in pck.groupby(S.SPLIT, sort=False):
        g = g.sort_values("threshold_px")
        t, p = g["threshold_px"].to_numpy(float), g["pck"].to_numpy(float)
        span = t[-1] - t[0] if len(t) else 0.0
        out[str(split_name)] = float(np.trapezoid(p, t) / span) if span > 0 else float("nan")
    return out


def visibility_table(errors: pd.DataFrame, pcutoff: Pcutoff = 0.6) -> pd.DataFrame:
    """Keypoint visibility as a detection problem, per (split, bodypart) and per split over all
    bodyparts (bodypart ``all``): a keypoint predicted with likelihood >= pcutoff counts as
    "visible". ``tp``: labeled and visible; ``fp``: visible where none is labeled; ``fn``:
    labeled but below pcutoff (or not predicted); ``tn``: neither. ``precision`` = tp / (tp +
    fp), ``recall`` = tp / (tp + fn) (NaN when the denominator is 0). Multi-animal errors
    tables count the keypoints of the labeled individuals (an assembly matched to none is in
    ``identity.csv``'s false positives). Columns: :data:`VISIBILITY_COLUMNS`."""
    S.require_columns(errors, [S.SPLIT, S.BODYPART, S.LIKELIHOOD], "errors")
    if S.LABELED in errors.columns:
        lab = errors[S.LABELED].to_numpy(bool)
    else:
        lab = np.isfinite(errors[S.X].to_numpy(float)) & np.isfinite(errors[S.Y].to_numpy(float))
    lik = errors[S.LIKELIHOOD].to_numpy(float)
    cut = pcutoff_array(errors[S.BODYPART].to_numpy(), pcutoff)
    vis = np.isfinite(lik) & (lik >= cut)
    df = pd.DataFrame({S.SPLIT: errors[S.SPLIT].astype(str).to_numpy(),
                       S.BODYPART: errors[S.BODYPART].astype(str).to_numpy(),
                       "n": 1, "n_labeled": lab.astype(int), "tp": (lab & vis).astype(int),
                       "fp": (~lab & vis).astype(int), "fn": (lab & ~vis).astype(int),
                       "tn": (~lab & ~vis).astype(int)})
    per_bp = df.groupby([S.SPLIT, S.BODYPART], sort=True).sum().reset_index()
    per_split = df.drop(columns=S.BODYPART).groupby(S.SPLIT, sort=True).sum().reset_index()
    out = pd.concat([per_split.assign(**{S.BODYPART: ALL}), per_bp], ignore_index=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp, fp, fn = (out[c].to_numpy(float) for c in ("tp", "fp", "fn"))
        out["precision"] = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        out["recall"] = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    rank = out[S.SPLIT].map({s: i for i, s in enumerate(S.SPLITS)}).fillna(len(S.SPLITS))
    out = out.assign(_o=rank, _a=out[S.BODYPART] != ALL)
    out = out.sort_values(["_o", S.SPLIT, "_a"], kind="stable").drop(columns=["_o", "_a"])
    return out[VISIBILITY_COLUMNS].reset_index(drop=True)


def dlc_oks_metrics(errors: pd.DataFrame, pcutoff: Pcutoff = 0.6) -> dict[str, dict[str, float]]:
    """Single-animal OKS ``mAP`` / ``mAR`` (percent) per split as DeepLabCut computes them
    (``deeplabcut.core.metrics.compute_metrics``, as ``evaluate_network`` calls it for a
    one-animal project: OKS sigma 0.1, the OKS scale the labeled keypoints' bounding box, an
    image counted when >= 2 keypoints are labeled; COCO's 10 OKS thresholds 0.5..0.95 and 101
    recall points). A keypoint is labeled as DLC reads labels: finite and inside the image."""
    from deeplabcut.core.metrics import compute_metrics

    S.require_columns(errors, [S.IMAGE, S.SPLIT, S.BODYPART, S.X, S.Y, PRED_X, PRED_Y,
                               S.LIKELIHOOD], "errors")
    bodyparts = pd.Index(pd.unique(errors[S.BODYPART].astype(str)))
    out: dict[str, dict[str, float]] = {}
    for split_name, df in errors.groupby(S.SPLIT, sort=False):
        images = pd.Index(sorted(pd.unique(df[S.IMAGE])))
        i = images.get_indexer(df[S.IMAGE])
        b = bodyparts.get_indexer(df[S.BODYPART].astype(str))
        vis = dlc_visible(df)
        gt = np.full((len(images), len(bodyparts), 3), np.nan)
        pred = np.full((len(images), len(bodyparts), 3), np.nan)
        gt[i, b] = np.column_stack([df[S.X], df[S.Y], np.where(vis, 2.0, 0.0)])
        pred[i, b] = df[[PRED_X, PRED_Y, S.LIKELIHOOD]].to_numpy(float)
        r = compute_metrics({im: gt[k][None] for k, im in enumerate(images)},
                            {im: pred[k][None] for k, im in enumerate(images)},
                            single_animal=True,
                            pcutoff=dlc_pcutoff_list(pcutoff, list(bodyparts), []),
                            compute_detection_rmse=False)
        out[str(split_name)] = {"mAP": float(r["mAP"]), "mAR": float(r["mAR"])}
    return out


def add_curve_headline(headline: dict[str, dict[str, float]], auc: Mapping[str, float],
                       visibility: pd.DataFrame) -> None:
    """Per split, into ``headline`` in place: ``pck_auc`` (:func:`pck_auc`),
    ``visibility_precision`` and ``visibility_recall`` (:func:`visibility_table`'s ``all``
    rows)."""
    pooled = visibility[visibility[S.BODYPART] == ALL].set_index(S.SPLIT)
    for split_name, d in headline.items():
        if split_name not in S.SPLITS:
            continue
        d["pck_auc"] = _num(auc.get(split_name))
        row = pooled.loc[split_name] if split_name in pooled.index else None
        d["visibility_precision"] = _num(None if row is None else row["precision"])
        d["visibility_recall"] = _num(None if row is None else row["recall"])
