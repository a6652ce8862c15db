"""`poseops compare BASELINE CANDIDATE`: did the refinement iteration help, on the same test set?

Paired per-frame errors (mean over bodyparts per frame) on the fixed test set; Wilcoxon
signed-rank test with rank-biserial effect size, seeded bootstrap CI of the median difference,
RMSE change %, before/after tables per bodypart and per condition (mean error, worst 5 % mean,
status improved/unchanged/worse), and error at several pcutoffs (stability).
Outputs CSV + JSON under ``reports/compare/``; logged to MLflow when enabled.

BASELINE / CANDIDATE: an errors table file (.parquet/.csv, from ``poseops evaluate``), an iteration
number (``compare.errors_pattern`` filled with it, else the latest MLflow run tagged with that
iteration), or an MLflow run id (its ``compare.errors_artifact``).
Differences are candidate - baseline: negative = the candidate is better.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from poseops import schema as S
from poseops.errors import PoseopsError

log = logging.getLogger(__name__)

BASE, CAND = "baseline", "candidate"


@dataclass
class CompareParams:
    split: str = S.TEST  # the fixed test set
    n_boot: int = 5000
    ci: float = 0.95
    seed: int = 0
    unchanged_tol_px: float = 0.5  # |delta mean| within this: "unchanged"
    worst_quantile: float = 0.95  # "worst 5 %" = errors at or above this quantile
    pcutoffs: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.6, 0.9])
    errors_pattern: str = "data/refine/iterations/iteration-{n}/errors.parquet"
    errors_artifact: str = "eval/errors.parquet"  # artifact of the training run (poseops evaluate)
    iteration_tag: str = "dlc_iteration"  # training-run tag holding the DLC iteration
    out: str = "reports/compare"
    log_mlflow: bool = True


# ---------------------------------------------------------------- statistics (pure)
def _wilcoxon_null_pmf(n: int) -> np.ndarray:
    """Exact null distribution of W+ for n untied non-zero differences: pmf over 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):  # add rank k to every subset
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts / counts.sum()


def wilcoxon_signed_rank(d: np.ndarray, method: str = "auto") -> dict:
    """Two-sided Wilcoxon signed-rank test on paired differences d (n,); zeros dropped (Wilcoxon).

    Returns statistic = min(W+, W-) (scipy's convention), w_plus, w_minus, p_value, n, method
    ('exact' for n <= 50 without ties; else 'asymptotic': normal, tie-corrected, no continuity
    correction), z (asymptotic), and the rank-biserial effect size r = (W+ - W-) / (W+ + W-)
    (-1: every difference negative, i.e. candidate always better).
    """
    from scipy.stats import norm, rankdata

    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    n = len(d)
    if n == 0:
        return {"n": 0, "statistic": np.nan, "w_plus": np.nan, "w_minus": np.nan,
                "p_value": np.nan, "z": np.nan, "rank_biserial": np.nan, "method": "none"}
    absd = np.abs(d)
    ranks = rankdata(absd)
    w_plus, w_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    _, tie_counts = np.unique(absd, return_counts=True)
    ties = bool((tie_counts > 1).any())
    if method == "auto":
        method = "exact" if n <= 50 and not ties else "asymptotic"
    mean = n * (n + 1) / 4
    var = (n * (n + 1) * (2 * n + 1) - ((tie_counts**3 - tie_counts).sum()) / 2) / 24
    z = (w_plus - mean) / np.sqrt(var) if var > 0 else 0.0
    if method == "exact":
        pmf = _wilcoxon_null_pmf(n)
        cdf = pmf[: int(np.ceil(w_plus)) + 1].sum()
        sf = pmf[int(np.floor(w_plus)):].sum()
        p = float(min(1.0, 2 * min(cdf, sf)))
    else:
        p = float(2 * norm.sf(abs(z)))
    return {"n": n, "statistic": min(w_plus, w_minus), "w_plus": w_plus, "w_minus": w_minus,
            "p_value": p, "z": float(z), "rank_biserial": (w_plus - w_minus) / (w_plus + w_minus),
            "method": method}


def bootstrap_median_ci(
    d: np.ndarray, n_boot: int, ci: float, seed: int, chunk: int = 1000
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the median of d (n,): (median, low, high).

    Resamples drawn as one (n_boot, n) index matrix from ``np.random.default_rng(seed)`` (medians
    computed chunk-wise to bound memory)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    meds = np.concatenate([np.median(d[idx[i : i + chunk]], axis=1) for i in range(0, n_boot, chunk)])
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(meds, [alpha, 1 - alpha])
    return float(np.median(d)), float(lo), float(hi)


def rmse(x: np.ndarray) -> float:
    """True root-mean-square of errors (NaN ignored); DLC's 'rmse' is the plain mean instead."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x**2))) if len(x) else np.nan


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

    Returns one row per (image, bodypart) with both errors finite: image, bodypart, video,
    metadata columns (from the baseline), error_baseline, error_candidate, likelihood_baseline,
    likelihood_candidate, diff (candidate - baseline).
    """
    cols = [S.IMAGE, S.BODYPART, S.ERROR_PX, S.LIKELIHOOD]
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
    left = b[[S.IMAGE, S.BODYPART, *meta, S.ERROR_PX, S.LIKELIHOOD]].rename(
        columns={S.ERROR_PX: f"error_{BASE}", S.LIKELIHOOD: f"likelihood_{BASE}"})
    right = c[[S.IMAGE, S.BODYPART, S.ERROR_PX, S.LIKELIHOOD]].rename(
        columns={S.ERROR_PX: f"error_{CAND}", S.LIKELIHOOD: f"likelihood_{CAND}"})
    p = left.merge(right, on=[S.IMAGE, S.BODYPART], how="inner", validate="one_to_one")
    p = p[np.isfinite(p[f"error_{BASE}"]) & np.isfinite(p[f"error_{CAND}"])].copy()
    p["diff"] = p[f"error_{CAND}"] - p[f"error_{BASE}"]
    return p.reset_index(drop=True)


def per_frame(paired: pd.DataFrame) -> pd.DataFrame:
    """Mean error over bodyparts per image (both models on the same keypoints): image,
    <metadata>, error_baseline, error_candidate, diff, n_bodyparts."""
    keys = [c for c in paired.columns if c not in
            {S.BODYPART, f"error_{BASE}", f"error_{CAND}", f"likelihood_{BASE}",
             f"likelihood_{CAND}", "diff"}]
    g = paired.groupby(keys, dropna=False)
    out = g.agg(**{f"error_{BASE}": (f"error_{BASE}", "mean"),
                   f"error_{CAND}": (f"error_{CAND}", "mean"),
                   "n_bodyparts": (S.BODYPART, "size")}).reset_index()
    out["diff"] = out[f"error_{CAND}"] - out[f"error_{BASE}"]
    return out


def before_after(paired: pd.DataFrame, by: str, tol: float, q: float) -> pd.DataFrame:
    """Per value of ``by`` (bodypart or condition): n, mean_baseline, mean_candidate, delta_px,
    change_pct, worst5_baseline, worst5_candidate, p_value (Wilcoxon on the paired keypoint
    errors), status (improved / unchanged / worse: delta beyond +-tol px)."""
    rows = []
    for value, part in paired.groupby(by, sort=True):
        eb, ec = part[f"error_{BASE}"].to_numpy(), part[f"error_{CAND}"].to_numpy()
        mb, mc = float(eb.mean()), float(ec.mean())
        delta = mc - mb
        status = "worse" if delta > tol else "improved" if delta < -tol else "unchanged"
        rows.append({
            "stratum_type": by, "stratum": value, "n": len(part),
            f"mean_{BASE}": mb, f"mean_{CAND}": mc, "delta_px": delta,
            "change_pct": 100 * delta / mb if mb else np.nan,
            f"worst5_{BASE}": worst_mean(eb, q), f"worst5_{CAND}": worst_mean(ec, q),
            "p_value": wilcoxon_signed_rank(ec - eb)["p_value"], "status": status,
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
    """All comparison outputs: {'summary': dict, 'per_frame', 'bodypart', 'condition',
    'pcutoff': DataFrames}."""
    paired = paired_errors(base, cand, params.split)
    frames = per_frame(paired)
    test = wilcoxon_signed_rank(frames["diff"].to_numpy())
    med, lo, hi = bootstrap_median_ci(frames["diff"].to_numpy(), params.n_boot, params.ci, params.seed)
    rb, rc = rmse(paired[f"error_{BASE}"]), rmse(paired[f"error_{CAND}"])
    bp = before_after(paired, S.BODYPART, params.unchanged_tol_px, params.worst_quantile)
    cond = (before_after(paired, S.CONDITION, params.unchanged_tol_px, params.worst_quantile)
            if S.CONDITION in paired.columns else pd.DataFrame())
    summary = {
        "split": params.split, "n_frames": len(frames), "n_keypoints": len(paired),
        f"mean_px_{BASE}": float(paired[f"error_{BASE}"].mean()),
        f"mean_px_{CAND}": float(paired[f"error_{CAND}"].mean()),
        f"rmse_px_{BASE}": rb, f"rmse_px_{CAND}": rc,
        "rmse_change_pct": 100 * (rc - rb) / rb if rb else np.nan,
        "median_diff_px": med, "ci_low_px": lo, "ci_high_px": hi, "ci": params.ci,
        "n_boot": params.n_boot, "seed": params.seed,
        "wilcoxon": test,
        "bodyparts_worse": bp.loc[bp["status"] == "worse", "stratum"].tolist(),
        "bodyparts_improved": bp.loc[bp["status"] == "improved", "stratum"].tolist(),
        "bodyparts_unchanged": bp.loc[bp["status"] == "unchanged", "stratum"].tolist(),
    }
    return {"summary": summary, "per_frame": frames, "bodypart": bp, "condition": cond,
            "pcutoff": pcutoff_table(paired, params.pcutoffs)}


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


def write_outputs(result: dict, out: str | Path) -> dict[str, Path]:
    from poseops.fileio import write_csv, write_json

    out = Path(out)
    paths = {k: write_csv(result[k], out / f"{k}.csv")
             for k in ("per_frame", "bodypart", "condition", "pcutoff")}
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


def run(params: CompareParams, baseline: str, candidate: str) -> dict:
    """Resolve both errors tables, compare, write reports/compare/*, log to MLflow."""
    b, binfo = resolve_errors(str(baseline), params)
    c, cinfo = resolve_errors(str(candidate), params)
    result = compare_tables(b, c, params)
    refs = {BASE: binfo, CAND: cinfo}
    result["summary"]["sources"] = refs
    paths = write_outputs(result, params.out)
    if params.log_mlflow:
        result["summary"]["mlflow_run_id"] = log_to_mlflow(result, paths, refs)
    s = result["summary"]
    log.info("compare: median diff %.2f px [%.2f, %.2f], RMSE %+.1f %%, Wilcoxon p=%.3g, r=%.2f",
             s["median_diff_px"], s["ci_low_px"], s["ci_high_px"], s["rmse_change_pct"],
             s["wilcoxon"]["p_value"], s["wilcoxon"]["rank_biserial"])
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired comparison of two models on the fixed test set")
    p.add_argument("baseline", help="errors file, iteration number or MLflow run id")
    p.add_argument("candidate", help="errors file, iteration number or MLflow run id")
    p.add_argument("--out", help="output folder (default: params compare.out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from poseops.params import section

    params = section("compare", CompareParams)
    if args.out:
        params.out = args.out
    if args.no_mlflow:
        params.log_mlflow = False
    run(params, args.baseline, args.candidate)
    return 0
