"""Agreement of the model's endpoints with a manual scoring, and condition effects.

- :func:`icc`: ICC(2,1) (two-way random, absolute agreement, single rater) and ICC(3,1) (two-way
  mixed, consistency) from the n targets x k raters matrix (Shrout & Fleiss 1979; 95 % CIs of
  McGraw & Wong 1996, as in R's psych and pingouin).
- :func:`bland_altman`: bias = mean(model - manual), 95 % limits of agreement bias +- 1.96 sd.
- :func:`agreement`: the above plus Pearson and Spearman r and the OLS line model = slope *
  manual + intercept, per endpoint.
- :func:`hedges_g` (Cohen's d with the small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9)) and
  :func:`effect_table`: the condition effect of each endpoint from the manual scoring and from
  the model, with bias-corrected bootstrap CIs over videos (the same resampled videos for both), and
  whether the model's g lies within the manual CI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from poseops.core import schema as S

AGREEMENT_COLUMNS = ["endpoint", "n_videos", "icc2_1", "icc2_1_lo", "icc2_1_hi", "icc3_1",
                     "icc3_1_lo", "icc3_1_hi", "ba_bias", "ba_sd", "ba_loa_lo", "ba_loa_hi",
                     "pearson_r", "spearman_r", "slope", "intercept", "manual_mean", "model_mean"]
EFFECT_COLUMNS = ["endpoint", "control", "condition", "n_control", "n_condition", "g_manual",
                  "g_manual_lo", "g_manual_hi", "g_model", "g_model_lo", "g_model_hi",
                  "same_sign", "model_within_manual_ci"]


def icc(ratings: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with (1 - alpha) CIs of an (n targets, k raters) matrix without NaN."""
    y = np.asarray(ratings, float)
    n, k = y.shape
    nan = float("nan")
    if n < 2 or k < 2:
        return dict.fromkeys(["icc2_1", "icc2_1_lo", "icc2_1_hi", "icc3_1", "icc3_1_lo",
                              "icc3_1_hi"], nan)
    grand = y.mean()
    ss_rows = k * np.sum((y.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((y.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((y - grand) ** 2) - ss_rows - ss_cols
    df_r, df_c, df_e = n - 1, k - 1, (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / df_r, ss_cols / df_c, ss_err / df_e
    with np.errstate(divide="ignore", invalid="ignore"):
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        q = 1 - alpha / 2
        f0 = msr / mse
        fl, fu = f0 / stats.f.ppf(q, df_r, df_e), f0 * stats.f.ppf(q, df_e, df_r)
        lo3, hi3 = (fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)
        fj = msc / mse
        a = k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2
        v = df_e * a ** 2 / (df_r * k ** 2 * icc2 ** 2 * fj ** 2
                             + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2)
        f2u, f2l = stats.f.ppf(q, df_r, v), stats.f.ppf(q, v, df_r)
        c = k * msc + (k * n - k - n) * mse
        lo2 = n * (msr - f2u * mse) / (f2u * c + n * msr)
        hi2 = n * (f2l * msr - mse) / (c + n * f2l * msr)
    return {"icc2_1": float(icc2), "icc2_1_lo": float(lo2), "icc2_1_hi": float(hi2),
            "icc3_1": float(icc3), "icc3_1_lo": float(lo3), "icc3_1_hi": float(hi3)}


def bland_altman(manual: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """Bias (mean of model - manual), its sd (ddof 1) and the 95 % limits of agreement."""
    d = np.asarray(model, float) - np.asarray(manual, float)
    bias = float(d.mean()) if len(d) else float("nan")
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    return {"ba_bias": bias, "ba_sd": sd, "ba_loa_lo": bias - 1.96 * sd,
            "ba_loa_hi": bias + 1.96 * sd}


def agreement(manual: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """Every agreement statistic of one endpoint over videos (pairs with a NaN dropped)."""
    a, b = np.asarray(manual, float), np.asarray(model, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out: dict[str, float] = {"n_videos": int(len(a))}
    out.update(icc(np.column_stack([a, b])))
    out.update(bland_altman(a, b))
    varied = len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    out["pearson_r"] = float(stats.pearsonr(a, b)[0]) if varied else float("nan")
    out["spearman_r"] = float(stats.spearmanr(a, b)[0]) if varied else float("nan")
    slope, intercept = np.polyfit(a, b, 1) if varied else (float("nan"), float("nan"))
    out.update(slope=float(slope), intercept=float(intercept),
               manual_mean=float(a.mean()) if len(a) else float("nan"),
               model_mean=float(b.mean()) if len(b) else float("nan"))
    return out


def agreement_table(manual: pd.DataFrame, model: pd.DataFrame,
                    endpoints: list[str]) -> pd.DataFrame:
    """Per endpoint, :func:`agreement` of two per-video endpoint tables (joined on video, and
    individual where both have one: each tracked animal is one target)."""
    keys = _keys(manual, model)
    m = manual.set_index(keys)[endpoints].join(model.set_index(keys)[endpoints],
                                                  how="inner", lsuffix="_manual",
                                                  rsuffix="_model")
    rows = [{"endpoint": e, **agreement(m[f"{e}_manual"].to_numpy(), m[f"{e}_model"].to_numpy())}
            for e in endpoints]
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def hedges_g(control: np.ndarray, treated: np.ndarray) -> float:
    """Hedges' g of treated vs control: (mean_t - mean_c) / pooled sd x J (NaN if undefined)."""
    c, t = np.asarray(control, float), np.asarray(treated, float)
    n1, n2 = len(c), len(t)
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled = np.sqrt(((n1 - 1) * c.var(ddof=1) + (n2 - 1) * t.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return float("nan")
    return float((t.mean() - c.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))


def _boot_g(manual: tuple[np.ndarray, np.ndarray], model: tuple[np.ndarray, np.ndarray],
            n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap g of manual and model with the same resampled videos (within each group)."""
    n1, n2 = len(manual[0]), len(manual[1])
    gm, gp = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        i, j = rng.integers(0, n1, n1), rng.integers(0, n2, n2)
        gm[b] = hedges_g(manual[0][i], manual[1][j])
        gp[b] = hedges_g(model[0][i], model[1][j])
    return gm, gp


def bc_interval(boot: np.ndarray, estimate: float, ci: float) -> tuple[float, float]:
    """Bias-corrected percentile bootstrap interval (Efron 1987, BCa without acceleration):
    the percentiles shifted by z0 = Phi^-1(share of bootstrap values below the estimate). With
    few videos per group the bootstrap g is biased upwards (resampled groups repeat videos, their
    sd shrinks); the plain percentile interval then often misses the estimate itself."""
    b = np.asarray(boot, float)
    b = b[np.isfinite(b)]
    if not len(b) or not np.isfinite(estimate):
        return float("nan"), float("nan")
    share = (np.sum(b < estimate) + 0.5 * np.sum(b == estimate)) / len(b)
    z0 = stats.norm.ppf(np.clip(share, 1 / (2 * len(b)), 1 - 1 / (2 * len(b))))
    z = stats.norm.ppf([(1 - ci) / 2, (1 + ci) / 2])
    lo, hi = np.percentile(b, 100 * stats.norm.cdf(2 * z0 + z))
    return float(lo), float(hi)


def effect_table(manual: pd.DataFrame, model: pd.DataFrame, endpoints: list[str],
                 control: str, n_boot: int = 2000, ci: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """Per endpoint and condition != ``control``: Hedges' g vs control from the manual scoring
    and from the model (per-video tables with a ``condition`` column, joined on video), bias-corrected
    bootstrap CIs over videos (:func:`bc_interval`), same sign, and whether the model's g is within the manual CI."""
    keys = _keys(manual, model)
    m = manual.set_index(keys)
    p = model.set_index(keys)
    p = p.loc[m.index.intersection(p.index)]
    m = m.loc[p.index]
    rows = []
    for e in endpoints:
        for cond in [c for c in pd.unique(m[S.CONDITION]) if c != control and pd.notna(c)]:
            sel = [(m[S.CONDITION] == control).to_numpy(), (m[S.CONDITION] == cond).to_numpy()]
            man = tuple(m[e].to_numpy(float)[s] for s in sel)
            mod = tuple(p[e].to_numpy(float)[s] for s in sel)
            g_man, g_mod = hedges_g(*man), hedges_g(*mod)
            rng = np.random.default_rng(seed)
            bm, bp = _boot_g(man, mod, n_boot, rng)  # type: ignore[arg-type]
            lo_m, hi_m = bc_interval(bm, g_man, ci)
            lo_p, hi_p = bc_interval(bp, g_mod, ci)
            rows.append({"endpoint": e, "control": control, "condition": cond,
                         "n_control": int(sel[0].sum()), "n_condition": int(sel[1].sum()),
                         "g_manual": g_man, "g_manual_lo": float(lo_m), "g_manual_hi": float(hi_m),
                         "g_model": g_mod, "g_model_lo": float(lo_p), "g_model_hi": float(hi_p),
                         "same_sign": bool(np.sign(g_man) == np.sign(g_mod)),
                         "model_within_manual_ci": bool(lo_m <= g_mod <= hi_m)})
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def position_errors(manual: pd.DataFrame, model: pd.DataFrame) -> pd.DataFrame:
    """Per-frame position error on the scored frames: manual and model reference points (video,
    frame, x, y) joined on (video, frame) -> video, frame, error_px (NaN where the model has no
    point; per individual where both tables have one)."""
    on = [*_keys(manual, model), S.FRAME]
    j = manual[[*on, S.X, S.Y]].merge(model[[*on, S.X, S.Y]], on=on, how="left",
                                      suffixes=("_manual", "_model"))
    err = np.hypot(j["x_model"] - j["x_manual"], j["y_model"] - j["y_manual"])
    return j[on].assign(error_px=err)


def _keys(manual: pd.DataFrame, model: pd.DataFrame) -> list[str]:
    """The unit both tables are joined on: video, and individual where both have one."""
    both = S.INDIVIDUAL in manual.columns and S.INDIVIDUAL in model.columns
    return [S.VIDEO, S.INDIVIDUAL] if both else [S.VIDEO]
