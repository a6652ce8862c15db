"""The augmentation ablation's results (``poseops ablation results``): pure functions over the
arms' errors tables (one per arm x seed, ``poseops evaluate``'s columns, the same fixed test set).

- :func:`results_table`: test error per arm x condition x bodypart ("all" = pooled), the
  run-to-run spread over seeds, and the paired comparison with the baseline arm on the
  seed-averaged errors with compare's statistics (:mod:`poseops.refine.compare`: Wilcoxon
  signed-rank on per-``unit`` mean differences, cluster-bootstrap CI of the median per-frame
  difference). Differences are arm - baseline: negative = the arm is better.
- :func:`seed_spread`: mean, SD, min, max over seeds of every headline number of each arm.
- :func:`recommendation`: one line ("occlusion helps high_dose by -1.2 px [-2.0, -0.4] vs current,
  no harm elsewhere").
- :func:`disagreement_table`: seed-ensemble disagreement (:mod:`poseops.refine.ensemble`) per arm
  and condition, and how well it ranks the errors (Spearman).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.ablation import AblationParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine import compare as C
from poseops.refine.ensemble import ensemble_disagreement

ALL = "all"
Runs = Mapping[tuple[str, int], pd.DataFrame]
"""(arm, seed) -> that run's table (errors or predictions)."""


def _on_split(errors: pd.DataFrame, split: str) -> pd.DataFrame:
    return errors[errors[S.SPLIT] == split] if S.SPLIT in errors.columns else errors


def seed_mean_errors(tables: Mapping[int, pd.DataFrame], split: str) -> pd.DataFrame:
    """One arm's errors on ``split`` averaged per keypoint over its seeds (error_px, likelihood:
    NaN-skipping means; the other columns from the first seed). Every seed must hold the same
    keypoints (the same fixed test set)."""
    parts = {seed: _on_split(t, split) for seed, t in sorted(tables.items())}
    first = next(iter(parts.values()))
    keys = S.keypoint_keys(first)
    want = set(map(tuple, first[keys].to_numpy()))
    for seed, t in parts.items():
        if set(map(tuple, t[keys].to_numpy())) != want:
            raise PoseopsError(f"seed {seed}'s {split} keypoints differ from the other seeds': the "
                               "ablation needs one fixed test set")
    long = pd.concat([t[[*keys, S.ERROR_PX, S.LIKELIHOOD]] for t in parts.values()])
    mean = long.groupby(keys, sort=False)[[S.ERROR_PX, S.LIKELIHOOD]].mean()
    rest = first.drop(columns=[S.ERROR_PX, S.LIKELIHOOD]).set_index(keys)
    return rest.join(mean).reset_index().assign(n_seeds=len(parts))


def _cells(errors: pd.DataFrame) -> list[tuple[str, str]]:
    conds = sorted(errors[S.CONDITION].dropna().astype(str).unique()) if S.CONDITION in errors else []
    bps = list(dict.fromkeys(errors[S.BODYPART]))
    return [(c, b) for c in [ALL, *conds] for b in [ALL, *bps]]


def _select(errors: pd.DataFrame, condition: str, bodypart: str) -> pd.DataFrame:
    keep = np.ones(len(errors), bool)
    if condition != ALL:
        keep &= errors[S.CONDITION].astype(str).to_numpy() == condition
    if bodypart != ALL:
        keep &= errors[S.BODYPART].to_numpy() == bodypart
    return errors[keep]


def _seed_means(tables: Mapping[int, pd.DataFrame], split: str, condition: str,
                bodypart: str) -> np.ndarray:
    """Each seed's mean error over the cell's keypoints."""
    return np.array([np.nanmean(_select(_on_split(t, split), condition, bodypart)[S.ERROR_PX]
                                .to_numpy(float)) for _, t in sorted(tables.items())])


def paired_stats(base: pd.DataFrame, cand: pd.DataFrame, p: AblationParams,
                 split: str | None = None) -> dict:
    """compare's paired statistics of two errors tables on ``split`` (default ``p.split``; arm =
    compare's candidate)."""
    paired = C.paired_errors(base, cand, split or p.split)
    frames = C.per_frame(paired)
    units = C.unit_diffs(frames, p.unit)
    test = C.wilcoxon_signed_rank(units["diff"].to_numpy(), min_n=p.min_units)
    med, lo, hi = C.bootstrap_median_ci(frames["diff"].to_numpy(), p.n_boot, p.ci, p.stat_seed,
                                        units=frames[p.unit].to_numpy(), min_units=p.min_units)
    reason = test["reason"]
    if len(units) < max(2, p.min_units):
        reason = f"{len(units)} {p.unit}(s); need >= {max(2, p.min_units)} for a p-value and CI"
    return {"n_keypoints": len(paired), "n_frames": len(frames), "n_units": len(units),
            "delta_mean_px": float(paired[f"error_{C.CAND}"].mean() - paired[f"error_{C.BASE}"].mean()),
            "median_diff_px": med, "ci_low_px": lo, "ci_high_px": hi, "p_value": test["p_value"],
            "rank_biserial": test["rank_biserial"], "reason": reason}


RESULT_COLUMNS = ["arm", "split", "condition", "bodypart", "n_seeds", "mean_px", "seed_sd_px",
                  "baseline_mean_px", "n_keypoints", "n_frames", "n_units", "delta_mean_px",
                  "median_diff_px", "ci_low_px", "ci_high_px", "p_value", "rank_biserial", "reason"]


def evaluated_splits(runs: Runs, p: AblationParams) -> list[str]:
    """``p.split``, then (``p.cohorts``) every generalisation cohort (``cohort:<name>``) in the
    runs' errors tables, sorted."""
    found = {s for t in runs.values() if S.SPLIT in t.columns for s in t[S.SPLIT].unique()}
    return [p.split, *sorted(s for s in found if S.is_cohort(s))] if p.cohorts else [p.split]


def results_table(runs: Runs, p: AblationParams) -> pd.DataFrame:
    """Per arm x split (``p.split``, then each cohort) x condition x bodypart: ``mean_px`` (mean
    over seeds of each seed's mean error), ``seed_sd_px`` (SD over seeds, ddof 1), the baseline
    arm's mean, and compare's paired statistics of the seed-averaged errors vs the baseline (NaN
    for the baseline itself)."""
    by_arm: dict[str, dict[int, pd.DataFrame]] = {}
    for (arm, seed), t in runs.items():
        by_arm.setdefault(arm, {})[seed] = t
    if p.baseline not in by_arm:
        raise PoseopsError(f"no run of the baseline arm {p.baseline!r} (ablation.baseline)")
    rows = []
    for split in evaluated_splits(runs, p):
        rows += _split_rows(by_arm, split, p)
    return pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS)


def _split_rows(by_arm: Mapping[str, Mapping[int, pd.DataFrame]], split: str,
                p: AblationParams) -> list[dict]:
    means = {arm: seed_mean_errors(t, split) for arm, t in by_arm.items()}
    base = means[p.baseline]
    rows = []
    for arm in [a for a in p.arms if a in by_arm]:
        for cond, bp in _cells(base):
            per_seed = _seed_means(by_arm[arm], split, cond, bp)
            row = {"arm": arm, "split": split, "condition": cond, "bodypart": bp,
                   "n_seeds": len(per_seed), "mean_px": float(per_seed.mean()),
                   "seed_sd_px": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan,
                   "baseline_mean_px": float(_seed_means(by_arm[p.baseline], split, cond, bp).mean())}
            if arm == p.baseline:
                row["reason"] = "baseline"
            else:
                row.update(paired_stats(_select(base, cond, bp), _select(means[arm], cond, bp), p,
                                        split))
            rows.append(row)
    return rows


def seed_spread(headlines: Mapping[tuple[str, int], Mapping[str, float]]) -> pd.DataFrame:
    """Run-to-run spread of every numeric headline number per arm: arm, metric, n_seeds, mean,
    sd (ddof 1), min, max, range."""
    rows = [{"arm": arm, "seed": seed, "metric": k, "value": float(v)}
            for (arm, seed), h in headlines.items() for k, v in h.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return pd.DataFrame(columns=["arm", "metric", "n_seeds", "mean", "sd", "min", "max", "range"])
    g = pd.DataFrame(rows).groupby(["arm", "metric"], sort=False)["value"]
    out = g.agg(n_seeds="size", mean="mean", sd="std", min="min", max="max").reset_index()
    out["range"] = out["max"] - out["min"]
    return out


def _fmt(row: pd.Series) -> str:
    return (f"{row['median_diff_px']:+.2f} px [{row['ci_low_px']:+.2f}, {row['ci_high_px']:+.2f}]")


def cell_label(split: str, condition: str, p: AblationParams) -> str:
    """``high_dose`` on ``p.split``; ``high_dose (new_condition cohort)`` on a cohort."""
    if split == p.split:
        return condition
    return f"{condition} ({split[len(S.COHORT_PREFIX):] if S.is_cohort(split) else split} cohort)"


def recommendation(results: pd.DataFrame, p: AblationParams) -> str:
    """One line: the arm that lowers the error (CI of the median difference below 0) in the most
    conditions (of ``p.split`` and of each cohort) without raising it anywhere (CI above
    ``harm_tol_px``), or why none is chosen."""
    pooled = results[(results["bodypart"] == ALL) & (results["arm"] != p.baseline)]
    if pooled.empty:
        return f"only the baseline arm {p.baseline!r} ran: nothing to compare"
    if pooled["ci_high_px"].isna().all():
        best = pooled[pooled["condition"] == ALL].sort_values("delta_mean_px").iloc[0]
        return (f"undecided ({best['reason']}): by mean {p.split} error the best arm is "
                f"{best['arm']} ({best['delta_mean_px']:+.2f} px vs {p.baseline}), without a CI")
    scored = []
    for arm, part in pooled.groupby("arm", sort=False):
        conds = part[part["condition"] != ALL]
        helps = conds[conds["ci_high_px"] < 0]
        harms = conds[conds["ci_low_px"] > p.harm_tol_px]
        overall = part[(part["condition"] == ALL) & (part["split"] == p.split)].iloc[0]
        scored.append((len(harms) > 0, -len(helps), overall["median_diff_px"], arm, helps, harms,
                       overall))
    scored.sort(key=lambda s: (s[0], s[1], s[2]))
    harmful, _, _, arm, helps, harms, overall = scored[0]
    if harmful or (helps.empty and not overall["ci_high_px"] < 0):
        line = (f"keep {p.baseline}: no arm lowers the {p.split} error ({int(p.ci * 100)} % CI "
                "below 0) without raising it in some condition")
        if harmful and not helps.empty:  # a trade-off: say what the closest arm buys and costs
            line += (f"; {arm} helps {_cells_text(helps, p, ' and ')} but raises "
                     f"{_cells_text(harms, p, ' and ')}")
        return line
    where = _cells_text(helps, p) or f"overall by {_fmt(overall)}"
    return f"{arm} helps {where} vs {p.baseline}, no harm elsewhere"


def _cells_text(rows: pd.DataFrame, p: AblationParams, sep: str = "; ") -> str:
    return sep.join(f"{cell_label(r['split'], r['condition'], p)} by {_fmt(r)}"
                     for _, r in rows.iterrows())


def disagreement_table(predictions: Runs, errors: Runs, p: AblationParams) -> pd.DataFrame:
    """Per arm with >= 2 seeds and condition ("all" pooled): the mean and 95th percentile of the
    seed ensemble's disagreement (sd_px) on ``p.split`` keypoints, and its Spearman correlation
    with the seed-averaged error (is disagreement an outlier signal?)."""
    from scipy import stats

    rows = []
    arms = dict.fromkeys(a for a, _ in predictions)
    for arm in arms:
        seeds = sorted(s for a, s in predictions if a == arm)
        if len(seeds) < 2:
            continue
        test = {s: _on_split(errors[(arm, s)], p.split) for s in seeds}
        images = set(next(iter(test.values()))[S.IMAGE])
        dis = ensemble_disagreement({str(s): predictions[(arm, s)][
            predictions[(arm, s)][S.IMAGE].isin(images)] for s in seeds})
        err = seed_mean_errors(test, p.split)
        both = err.merge(dis, on=[S.IMAGE, S.BODYPART], how="inner")
        both = both[np.isfinite(both[S.ERROR_PX]) & np.isfinite(both["sd_px"])]
        conds = sorted(both[S.CONDITION].astype(str).unique()) if S.CONDITION in both else []
        for cond in [ALL, *conds]:
            part = _select(both, cond, ALL)
            varied = len(part) > 2 and part["sd_px"].nunique() > 1 and part[S.ERROR_PX].nunique() > 1
            rho = stats.spearmanr(part["sd_px"], part[S.ERROR_PX]).statistic if varied else np.nan
            rows.append({"arm": arm, "condition": cond, "n_seeds": len(seeds),
                         "n_keypoints": len(part), "mean_sd_px": float(part["sd_px"].mean()),
                         "p95_sd_px": float(part["sd_px"].quantile(0.95)) if len(part) else np.nan,
                         "spearman_sd_vs_error": float(rho)})
    return pd.DataFrame(rows)


def figure(results: pd.DataFrame, p: AblationParams, path: Path) -> Path:
    """Median per-frame difference vs the baseline (CI bars) per condition, one bar per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poseops.core.fileio import atomic_path

    d = results[(results["bodypart"] == ALL) & (results["arm"] != p.baseline)]
    # one bar group per condition of each evaluated split; a one-condition cohort's pooled
    # bars would repeat its condition's
    single = {s for s, part in d.groupby("split") if s != p.split
              and part.loc[part["condition"] != ALL, "condition"].nunique() == 1}
    d = d[~(d["split"].isin(single) & (d["condition"] == ALL))]
    d = d.assign(condition=[cell_label(s, c, p).replace(" (", "\n(").replace(" cohort)", ")")
                            for s, c in zip(d["split"], d["condition"], strict=True)])
    conds = list(dict.fromkeys(d["condition"]))
    arms = list(dict.fromkeys(d["arm"]))
    fig, ax = plt.subplots(figsize=(1.2 + 1.6 * max(1, len(conds)), 3.8))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        part = d[d["arm"] == arm].set_index("condition").reindex(conds)
        y = part["median_diff_px"].to_numpy(float)
        err = np.vstack([y - part["ci_low_px"].to_numpy(float), part["ci_high_px"].to_numpy(float) - y])
        x = np.arange(len(conds)) + (i - (len(arms) - 1) / 2) * width
        ax.bar(x, y, width, label=arm)
        ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor="k", capsize=2)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(conds)), conds)
    ax.set_ylabel(f"error vs {p.baseline} (px, median per frame)")
    if arms:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
