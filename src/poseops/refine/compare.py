"""`poseops compare BASELINE CANDIDATE`: did the refinement iteration help, on the same test set?

Paired per-frame errors (mean over bodyparts per frame) on the fixed test set. Frames are nested
in a few videos, so the statistics work at ``compare.unit`` (default ``video``): Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``) with rank-biserial effect size on the per-video mean
differences (n = videos), and a seeded cluster-bootstrap CI (``scipy.stats.bootstrap``, percentile)
of the median per-frame difference that resamples whole videos. With fewer than
``compare.min_units`` units the p-value and CI are NaN, with the reason (``unit: image`` treats
every frame as independent: the optimistic old numbers). Also RMSE change %, before/after tables
per bodypart and per condition (mean error, worst 5 % mean, Wilcoxon p over units,
status improved/unchanged/worse), and error at several pcutoffs (stability).
Outputs CSV + JSON under ``reports/compare/``; logged to MLflow when enabled.

BASELINE / CANDIDATE: an errors table file (.parquet/.csv, from ``poseops evaluate``), an iteration
number (``compare.errors_pattern`` filled with it, else the latest MLflow run tagged with that
iteration), or an MLflow run id (its ``compare.errors_artifact``).
Differences are candidate - baseline: negative = the candidate is better.

Seed spread (``compare.seed_spread`` / ``--seed-spread``): the baseline config's seed-to-seed SD
of its test RMSE (an ablation's ``reports/ablation``, a per-seed CSV or a glob of per-seed errors
tables); the candidate's gain (baseline RMSE - candidate RMSE) / SD and a verdict ("within" /
"beyond" seed-to-seed noise, ``compare.seed_noise_sd`` SDs) go to the summary, ``seed_spread.csv``
and the MLflow run (metric ``gain_seed_sd``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.refine import CompareParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine.common import rmse
from poseops.refine.ensemble import read_seed_spread, seed_noise

log = logging.getLogger(__name__)

BASE, CAND = "baseline", "candidate"


# ---------------------------------------------------------------- statistics (pure)
def wilcoxon_signed_rank(d: np.ndarray, method: str = "auto", min_n: int = 1) -> dict:
    """Two-sided Wilcoxon signed-rank test on paired differences d (n,); zeros dropped (Wilcoxon),
    p-value from ``scipy.stats.wilcoxon``.

    Returns statistic = min(W+, W-) (scipy's), w_plus, w_minus, p_value, n (non-zero
    differences), method (scipy's "auto": 'exact' for n <= 50 without ties, 'permutation'
    (exhaustive) for n <= 13 with ties, else 'asymptotic': normal, tie-corrected, no continuity
    correction), z (signed: > 0 when W+ > W-), the rank-biserial
    effect size r = (W+ - W-) / (W+ + W-) (-1: every difference negative, i.e. candidate always
    better) and reason ('' or why p_value is NaN: fewer than ``min_n`` non-zero differences).
    """
    from scipy import stats

    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    n = len(d)
    out = {"n": n, "statistic": np.nan, "w_plus": np.nan, "w_minus": np.nan, "p_value": np.nan,
           "z": np.nan, "rank_biserial": np.nan, "method": "none", "reason": ""}
    if n == 0:
        out["reason"] = "no non-zero difference"
        return out
    absd = np.abs(d)
    ranks = stats.rankdata(absd)
    w_plus, w_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    out.update(w_plus=w_plus, w_minus=w_minus, statistic=min(w_plus, w_minus),
               rank_biserial=(w_plus - w_minus) / (w_plus + w_minus))
    if n < min_n:
        out["reason"] = f"{n} non-zero paired difference(s); need >= {min_n} for a p-value"
        return out
    ties = len(np.unique(absd)) < n
    if method == "auto":  # scipy's "auto", resolved as scipy documents it (to name it)
        method = ("exact" if n <= 50 and not ties else "permutation" if ties and n <= 13
                  else "asymptotic")
    res = stats.wilcoxon(d, method="auto" if method == "permutation" else method)
    p = float(res.pvalue)
    if method == "asymptotic":
        z = float(np.sign(w_plus - w_minus) * abs(res.zstatistic))
    else:  # the normal quantile of the exact two-sided p, signed
        z = float(np.sign(w_plus - w_minus) * stats.norm.isf(p / 2)) if p < 1 else 0.0
    out.update(statistic=float(res.statistic), p_value=p, z=z, method=method)
    return out


def _pooled_median(order_units: np.ndarray, sorted_d: np.ndarray, n_units: int):
    """Vectorised statistic for scipy's bootstrap: the median of the frame-level differences of
    the resampled units (each resample: unit indices, a unit drawn twice counts twice)."""

    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        flat = idx.reshape(-1, idx.shape[-1])
        b = len(flat)
        counts = np.bincount((flat + n_units * np.arange(b)[:, None]).ravel(),
                             minlength=b * n_units).reshape(b, n_units)
        cum = np.cumsum(counts[:, order_units], axis=1)  # weights along the sorted frames
        total = cum[:, -1]
        lo = np.sum(cum <= ((total - 1) // 2)[:, None], axis=1)
        hi = np.sum(cum <= (total // 2)[:, None], axis=1)
        med = (sorted_d[lo] + sorted_d[hi]) / 2
        return med.reshape(idx.shape[:-1])

    return stat


def bootstrap_median_ci(
    d: np.ndarray, n_boot: int, ci: float, seed: int, chunk: int = 1000,
    units: np.ndarray | None = None, min_units: int = 2,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the median of d (n,): (median, low, high), with
    ``scipy.stats.bootstrap``.

    ``units`` (n,): a cluster bootstrap. Whole units (videos) are resampled with replacement and
    the statistic is the median of the pooled frame-level differences of the drawn units, so the
    CI reflects that frames of a video are not independent. Without ``units`` every element is
    its own unit (the plain bootstrap). Resample draws come from ``np.random.default_rng(seed)``
    (scipy draws one (n_boot, n_units) index matrix, in chunks of ``chunk`` resamples). Fewer than
    ``min_units`` units (at least 2): NaN bounds."""
    from scipy import stats

    d = np.asarray(d, float)
    keep = np.isfinite(d)
    d = d[keep]
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    if units is None:
        codes = np.arange(len(d))
    else:
        codes = pd.factorize(pd.Series(np.asarray(units)[keep]), sort=True,
                             use_na_sentinel=False)[0]  # a missing unit is one unit too
    n_units = int(codes.max()) + 1
    if n_units < max(2, min_units):
        return float(np.median(d)), np.nan, np.nan
    order = np.argsort(d, kind="stable")
    res = stats.bootstrap(
        (np.arange(n_units),), _pooled_median(codes[order], d[order], n_units),
        n_resamples=n_boot, batch=chunk, vectorized=True, confidence_level=ci,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return (float(np.median(d)), float(res.confidence_interval.low),
            float(res.confidence_interval.high))


def worst_mean(x: np.ndarray, q: float) -> float:
    """Mean of the errors at or above their q-quantile (the worst 1-q share)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return np.nan
    return float(x[x >= np.quantile(x, q)].mean())


# ---------------------------------------------------------------- tables (pure)
def paired_errors(base: pd.DataFrame, cand: pd.DataFrame, split: str = S.TEST) -> pd.DataFrame:
    """Join two errors tables on (image, bodypart) within ``split``; both test sets must be equal.
    Multi-animal tables (an ``individual`` column: the labeled animal a prediction was matched
    to) join on (image, individual, bodypart).

    Returns one row per (image, bodypart) with both errors finite: image, bodypart, video,
    metadata columns (from the baseline), error_baseline, error_candidate, likelihood_baseline,
    likelihood_candidate, diff (candidate - baseline).
    """
    keys = S.keypoint_keys(base)
    cols = [*keys, S.ERROR_PX, S.LIKELIHOOD]
    for name, t in ((BASE, base), (CAND, cand)):
        S.require_columns(t, cols, f"{name} errors")
    b = base[base[S.SPLIT] == split] if S.SPLIT in base.columns else base
    c = cand[cand[S.SPLIT] == split] if S.SPLIT in cand.columns else cand
    only_b = sorted(set(b[S.IMAGE]) - set(c[S.IMAGE]))
    only_c = sorted(set(c[S.IMAGE]) - set(b[S.IMAGE]))
    if only_b or only_c:
        raise PoseopsError(
            f"baseline and candidate {split} sets differ ({len(only_b)} images only in the baseline,"
            f" e.g. {only_b[:2]}; {len(only_c)} only in the candidate, e.g. {only_c[:2]}): compare"
            " needs the same fixed test set"
        )
    if b.empty:
        raise PoseopsError(f"no {split!r} rows in the errors tables")
    skip = {S.ERROR_PX, S.LIKELIHOOD, "pred_x", "pred_y", S.X, S.Y, S.LABELED, S.SPLIT}
    meta = [m for m in dict.fromkeys([S.VIDEO, *S.metadata_columns(b)])
            if m in b.columns and m not in skip]
    if S.INDIVIDUAL in keys:
        # multi-animal: only a frame's properties (constant per image) are frame metadata;
        # per-animal columns (oks, assembly, swapped...) would split a frame in per_frame
        if S.ANIMALS_IN_FRAME in b.columns:
            meta.append(S.ANIMALS_IN_FRAME)
        per_image = b.groupby(S.IMAGE)[meta].nunique(dropna=False).max()
        meta = [m for m in meta if per_image.get(m, 0) <= 1]
    left = b[[*keys, *meta, S.ERROR_PX, S.LIKELIHOOD]].rename(
        columns={S.ERROR_PX: f"error_{BASE}", S.LIKELIHOOD: f"likelihood_{BASE}"})
    right = c[[*keys, S.ERROR_PX, S.LIKELIHOOD]].rename(
        columns={S.ERROR_PX: f"error_{CAND}", S.LIKELIHOOD: f"likelihood_{CAND}"})
    p = left.merge(right, on=keys, how="inner", validate="one_to_one")
    p = p[np.isfinite(p[f"error_{BASE}"]) & np.isfinite(p[f"error_{CAND}"])].copy()
    p["diff"] = p[f"error_{CAND}"] - p[f"error_{BASE}"]
    return p.reset_index(drop=True)


def per_frame(paired: pd.DataFrame) -> pd.DataFrame:
    """Mean error over bodyparts per image (both models on the same keypoints; multi-animal:
    over every animal's keypoints): image, <metadata>, error_baseline, error_candidate, diff,
    n_bodyparts (keypoints)."""
    keys = [c for c in paired.columns if c not in
            {S.BODYPART, S.INDIVIDUAL, f"error_{BASE}", f"error_{CAND}", f"likelihood_{BASE}",
             f"likelihood_{CAND}", "diff"}]
    g = paired.groupby(keys, dropna=False)
    out = g.agg(**{f"error_{BASE}": (f"error_{BASE}", "mean"),
                   f"error_{CAND}": (f"error_{CAND}", "mean"),
                   "n_bodyparts": (S.BODYPART, "size")}).reset_index()
    out["diff"] = out[f"error_{CAND}"] - out[f"error_{BASE}"]
    return out


def unit_diffs(frames: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Per ``unit`` (video, animal...; ``image``: each frame): the mean of its frames' errors and
    differences: unit, n_frames, error_baseline, error_candidate, diff."""
    if unit not in frames.columns:
        raise PoseopsError(
            f"compare.unit {unit!r} is not a column of the errors tables (have "
            f"{sorted(frames.columns)}); use one of them, or 'image'"
        )
    g = frames.groupby(unit, sort=True, dropna=False)
    out = g.agg(n_frames=("diff", "size"), **{f"error_{BASE}": (f"error_{BASE}", "mean"),
                                              f"error_{CAND}": (f"error_{CAND}", "mean")})
    out["diff"] = g["diff"].mean()
    return out.reset_index()


def before_after(paired: pd.DataFrame, by: str, tol: float, q: float,
                 unit: str = S.IMAGE, min_units: int = 1) -> pd.DataFrame:
    """Per value of ``by`` (bodypart or condition): n (keypoints), n_units, mean_baseline,
    mean_candidate, delta_px, change_pct, worst5_baseline, worst5_candidate, p_value (Wilcoxon on
    the per-``unit`` mean differences of those keypoints; NaN with fewer than ``min_units``
    units, the reason in p_reason), status (improved / unchanged / worse: delta beyond +-tol px)."""
    rows = []
    for value, part in paired.groupby(by, sort=True):
        eb, ec = part[f"error_{BASE}"].to_numpy(), part[f"error_{CAND}"].to_numpy()
        mb, mc = float(eb.mean()), float(ec.mean())
        delta = mc - mb
        status = "worse" if delta > tol else "improved" if delta < -tol else "unchanged"
        per_unit = part.groupby(unit, sort=True, dropna=False)["diff"].mean()
        test = wilcoxon_signed_rank(per_unit.to_numpy(), min_n=min_units)
        rows.append({
            "stratum_type": by, "stratum": value, "n": len(part), "n_units": len(per_unit),
            f"mean_{BASE}": mb, f"mean_{CAND}": mc, "delta_px": delta,
            "change_pct": 100 * delta / mb if mb else np.nan,
            f"worst5_{BASE}": worst_mean(eb, q), f"worst5_{CAND}": worst_mean(ec, q),
            "p_value": test["p_value"], "p_reason": test["reason"], "status": status,
        })
    return pd.DataFrame(rows)


def pcutoff_table(paired: pd.DataFrame, pcutoffs: list[float]) -> pd.DataFrame:
    """Error at several pcutoffs: per pcutoff and model, the share of keypoints kept (likelihood
    >= pcutoff) and the mean and RMSE error over them (wide: *_baseline / *_candidate)."""
    rows = []
    for pc in pcutoffs:
        row: dict = {"pcutoff": pc}
        for m in (BASE, CAND):
            e = paired[f"error_{m}"].to_numpy()
            keep = paired[f"likelihood_{m}"].to_numpy() >= pc
            row[f"share_kept_{m}"] = float(keep.mean()) if len(keep) else np.nan
            row[f"mean_{m}"] = float(e[keep].mean()) if keep.any() else np.nan
            row[f"rmse_{m}"] = rmse(e[keep])
        row["delta_mean_px"] = row[f"mean_{CAND}"] - row[f"mean_{BASE}"]
        rows.append(row)
    return pd.DataFrame(rows)


def compare_tables(base: pd.DataFrame, cand: pd.DataFrame, params: CompareParams) -> dict:
    """All comparison outputs: {'summary': dict, 'per_frame', 'per_unit', 'bodypart',
    'condition', 'pcutoff': DataFrames}.

    Frames of one video are not independent, so the statistics work at ``params.unit``
    (default video): the Wilcoxon test on the per-unit mean differences (n = units), and the CI
    of the median per-frame difference from a cluster bootstrap that resamples whole units.
    ``unit: image`` treats every frame as independent (optimistic: too-small p-values, too-narrow
    CIs). Fewer than ``params.min_units`` units: NaN p-value / CI, with the reason."""
    paired = paired_errors(base, cand, params.split)
    frames = per_frame(paired)
    unit = params.unit
    units = unit_diffs(frames, unit)
    test = wilcoxon_signed_rank(units["diff"].to_numpy(), min_n=params.min_units)
    med, lo, hi = bootstrap_median_ci(frames["diff"].to_numpy(), params.n_boot, params.ci,
                                      params.seed, units=frames[unit].to_numpy(),
                                      min_units=params.min_units)
    n_units = len(units)
    ci_reason = (f"{n_units} {unit}(s); need >= {max(2, params.min_units)} for a cluster "
                 "bootstrap" if n_units < max(2, params.min_units) else "")
    rb, rc = rmse(paired[f"error_{BASE}"]), rmse(paired[f"error_{CAND}"])
    ba = dict(tol=params.unchanged_tol_px, q=params.worst_quantile, unit=unit,
              min_units=params.min_units)
    bp = before_after(paired, S.BODYPART, **ba)
    cond = (before_after(paired, S.CONDITION, **ba)
            if S.CONDITION in paired.columns else pd.DataFrame())
    # multi-animal: per labeled animal (unique bodyparts under 'single') and per animals in frame
    extra = {k: before_after(paired, k, **ba) for k in (S.INDIVIDUAL, S.ANIMALS_IN_FRAME)
             if k in paired.columns}
    summary = {
        "split": params.split, "unit": unit, "n_units": n_units, "n_frames": len(frames),
        "n_keypoints": len(paired),
        f"mean_px_{BASE}": float(paired[f"error_{BASE}"].mean()),
        f"mean_px_{CAND}": float(paired[f"error_{CAND}"].mean()),
        f"rmse_px_{BASE}": rb, f"rmse_px_{CAND}": rc,
        "rmse_change_pct": 100 * (rc - rb) / rb if rb else np.nan,
        "median_diff_px": med, "ci_low_px": lo, "ci_high_px": hi, "ci": params.ci,
        "ci_method": (f"cluster bootstrap over {unit}s (percentile)" if unit != S.IMAGE
                      else "bootstrap over frames (percentile; frames taken as independent)"),
        "ci_reason": ci_reason,
        "mean_unit_diff_px": float(units["diff"].mean()),
        "n_boot": params.n_boot, "seed": params.seed,
        "wilcoxon": {**test, "unit": unit},
        "bodyparts_worse": bp.loc[bp["status"] == "worse", "stratum"].tolist(),
        "bodyparts_improved": bp.loc[bp["status"] == "improved", "stratum"].tolist(),
        "bodyparts_unchanged": bp.loc[bp["status"] == "unchanged", "stratum"].tolist(),
    }
    return {"summary": summary, "per_frame": frames, "per_unit": units, "bodypart": bp,
            "condition": cond, "pcutoff": pcutoff_table(paired, params.pcutoffs), **extra}


# ---------------------------------------------------------------- edges
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def read_errors(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a user-facing bad file
        raise PoseopsError(f"cannot read errors table: {e}", file=path) from e


def resolve_errors(ref: str, params: CompareParams) -> tuple[pd.DataFrame, dict]:
    """Errors table for a file path, an iteration number or an MLflow run id (+ provenance)."""
    p = Path(ref)
    if p.is_file():
        return read_errors(p), {"source": str(p)}
    if ref.isdigit():
        f = Path(params.errors_pattern.format(n=int(ref)))
        if f.is_file():
            return read_errors(f), {"source": str(f), "iteration": int(ref)}
        run_id = _run_for_iteration(int(ref), params)
        df, info = _errors_from_run(run_id, params)
        return df, {**info, "iteration": int(ref)}
    if _RUN_ID.match(ref):
        return _errors_from_run(ref, params)
    raise PoseopsError(f"{ref!r} is neither an errors file, an iteration number nor an MLflow run id")


def _run_for_iteration(n: int, params: CompareParams) -> str:
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{params.iteration_tag}` = '{n}'",
        order_by=["attributes.start_time DESC"],
    )
    if runs.empty:
        raise PoseopsError(
            f"no errors for iteration {n}: neither {params.errors_pattern.format(n=n)} nor an"
            f" MLflow run tagged {params.iteration_tag}={n}"
        )
    return str(runs["run_id"].iloc[0])


def _errors_from_run(run_id: str, params: CompareParams) -> tuple[pd.DataFrame, dict]:
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=params.errors_artifact)
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise PoseopsError(f"MLflow run {run_id} has no artifact {params.errors_artifact!r}: {e}") from e
    return read_errors(Path(local)), {"source": f"runs:/{run_id}/{params.errors_artifact}",
                                      "run_id": run_id}


def add_seed_spread(result: dict, spread: dict, k: float) -> None:
    """The candidate's gain in test RMSE against the baseline's seed-to-seed SD
    (:func:`poseops.refine.ensemble.seed_noise`): into the summary (``gain_px``, ``seed_sd_px``,
    ``seed_n``, ``gain_seed_sd``, ``seed_noise``, ``seed_verdict``; ``seed_spread``: where the SD
    came from, per seed) and a one-row table ``seed_spread``."""
    s = result["summary"]
    noise = seed_noise(s[f"rmse_px_{BASE}"] - s[f"rmse_px_{CAND}"], spread, k)
    s.update(noise)
    s["seed_spread"] = {key: spread.get(key) for key in
                        ("source", "arm", "metric", "n_seeds", "mean_px", "sd_px", "per_seed")}
    result["seed_spread"] = pd.DataFrame([{
        "source": spread["source"], "arm": spread.get("arm"), "metric": spread["metric"],
        "n_seeds": spread["n_seeds"], "seed_mean_px": spread["mean_px"],
        "seed_sd_px": spread["sd_px"], f"rmse_px_{BASE}": s[f"rmse_px_{BASE}"],
        f"rmse_px_{CAND}": s[f"rmse_px_{CAND}"], "gain_px": noise["gain_px"],
        "gain_seed_sd": noise["gain_seed_sd"], "noise_sd": k, "seed_noise": noise["seed_noise"],
        "verdict": noise["seed_verdict"]}])
    log.info("compare: %s", noise["seed_verdict"])


def write_outputs(result: dict, out: str | Path) -> dict[str, Path]:
    from poseops.core.fileio import write_csv, write_json

    out = Path(out)
    paths = {k: write_csv(result[k], out / f"{k}.csv")
             for k in ("per_frame", "per_unit", "bodypart", "condition", "pcutoff",
                       S.INDIVIDUAL, S.ANIMALS_IN_FRAME, "seed_spread") if k in result}
    paths["summary"] = write_json(result["summary"], out / "summary.json")
    return paths


def log_to_mlflow(result: dict, paths: dict[str, Path], refs: dict) -> str | None:
    """Log the summary as metrics/params of a 'compare' run (nested if a run is active)."""
    import mlflow

    s = result["summary"]
    metrics = {k: v for k, v in s.items() if isinstance(v, float | int) and np.isfinite(v)}
    metrics.update({f"wilcoxon_{k}": v for k, v in s["wilcoxon"].items()
                    if isinstance(v, float | int) and np.isfinite(v)})
    with mlflow.start_run(run_name="compare", nested=mlflow.active_run() is not None) as run:
        mlflow.set_tag("poseops.stage", "compare")
        mlflow.log_params({f"{k}_source": v.get("source") for k, v in refs.items()})
        mlflow.log_metrics(metrics)
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="compare")
        return run.info.run_id


def iteration_numbers(binfo: dict, cinfo: dict, given: tuple[int | None, int | None],
                      merge_report: str | Path | None) -> tuple[int, int] | None:
    """(baseline, candidate) iteration numbers: given, else from the references (iteration
    numbers), else from merge's report (the iteration it made and the one before); None when
    unknown."""
    import json

    b, c = given
    b = b if b is not None else binfo.get("iteration")
    c = c if c is not None else cinfo.get("iteration")
    if (b is None or c is None) and merge_report and Path(merge_report).is_file():
        rep = json.loads(Path(merge_report).read_text())
        b = rep.get("iteration_before") if b is None else b
        c = rep.get("iteration") if c is None else c
    return (int(b), int(c)) if b is not None and c is not None else None


def compare_models(params: CompareParams, baseline: str, candidate: str,
                   iterations: tuple[int | None, int | None] = (None, None),
                   write_history: bool = False) -> dict:
    """Resolve both errors tables, compare, write reports/compare/*, log to MLflow;
    ``write_history``: add both iterations to ``params.history`` (when their numbers are known:
    ``iterations``, the references, merge's report)."""
    spread = read_seed_spread(params.seed_spread, params.split, params.seed_spread_arm
                              ) if params.seed_spread else None
    b, binfo = resolve_errors(str(baseline), params)
    c, cinfo = resolve_errors(str(candidate), params)
    result = compare_tables(b, c, params)
    if spread is not None:
        add_seed_spread(result, spread, params.seed_noise_sd)
    refs = {BASE: binfo, CAND: cinfo}
    result["summary"]["sources"] = refs
    from poseops.refine.gate import stop_rule
    from poseops.refine.history import update_history

    result["summary"].update(stop_rule(result["summary"], params.stop_change_pct))
    its = iteration_numbers(binfo, cinfo, iterations, params.merge_report)
    result["summary"]["iterations"] = list(its) if its else None
    if write_history and params.history and its:
        update_history(params.history, paired_errors(b, c, params.split), its,
                       params.stop_change_pct, params.merge_report)
    elif write_history and params.history:
        log.info("compare: iteration numbers unknown (give iterations, or --iterations B C): "
                 "%s not updated", params.history)
    paths = write_outputs(result, params.out)
    if params.log_mlflow:
        result["summary"]["mlflow_run_id"] = log_to_mlflow(result, paths, refs)
    s = result["summary"]
    log.info("compare: median diff %.2f px [%.2f, %.2f], RMSE %+.1f %%, Wilcoxon over %d %ss "
             "p=%.3g, r=%.2f%s", s["median_diff_px"], s["ci_low_px"], s["ci_high_px"],
             s["rmse_change_pct"], s["n_units"], s["unit"], s["wilcoxon"]["p_value"],
             s["wilcoxon"]["rank_biserial"],
             f" ({s['wilcoxon']['reason']})" if s["wilcoxon"]["reason"] else "")
    log.info("compare: %s", s["advice"])
    return result
