"""The behaviour stage's figures (matplotlib, Agg) written as PNG files: trajectory quality raw vs
filtered, Bland-Altman plots per endpoint, condition effects (manual CI vs model), trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.fileio import atomic_path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return path


def _track_label(df: pd.DataFrame) -> pd.Series:
    """One label per trajectory: the video, or ``video/individual`` (tracked multi-animal)."""
    if S.INDIVIDUAL in df.columns:
        return df[S.VIDEO].astype(str) + "/" + df[S.INDIVIDUAL].astype(str)
    return df[S.VIDEO].astype(str)


def fig_quality(quality: pd.DataFrame, reference: str, path: Path) -> Path:
    """Per video (and individual): the reference point's jitter and low-likelihood share, raw
    vs filtered."""
    plt = _plt()
    q = quality[quality[S.BODYPART] == reference]
    q = q.assign(**{S.VIDEO: _track_label(q)})
    videos = sorted(q[S.VIDEO].unique())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    x = np.arange(len(videos))
    for k, (flag, label) in enumerate(((False, "raw"), (True, "filtered"))):
        qq = q[q["filtered"] == flag].set_index(S.VIDEO).reindex(videos)
        if qq["jitter_px"].notna().any():
            axes[0].bar(x + 0.4 * k, qq["jitter_px"], 0.4, label=label)
            axes[1].bar(x + 0.4 * k, qq["low_likelihood_share"], 0.4, label=label)
    for ax, title in zip(axes, ("jitter (px, median |2nd difference|)", "low-likelihood share"),
                         strict=True):
        ax.set_xticks(x + 0.2, videos, rotation=60, fontsize=7)
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def fig_bland_altman(behaviour: pd.DataFrame, agreement: pd.DataFrame, path: Path) -> Path:
    """One Bland-Altman plot per endpoint: mean of (manual, model) vs model - manual."""
    plt = _plt()
    ends = list(agreement["endpoint"])
    fig, axes = plt.subplots(1, len(ends), figsize=(3.2 * len(ends), 3), squeeze=False)
    b = behaviour.assign(_track=_track_label(behaviour))
    man = b[b["source"] == "manual"].set_index("_track")
    mod = b[b["source"] == "model_scored_frames"].set_index("_track")
    for ax, (_, r) in zip(axes[0], agreement.iterrows(), strict=True):
        e = r["endpoint"]
        a, b = man[e].align(mod[e], join="inner")
        ax.scatter((a + b) / 2, b - a, s=12)
        for y, style in ((r["ba_bias"], "-"), (r["ba_loa_lo"], "--"), (r["ba_loa_hi"], "--")):
            if np.isfinite(y):
                ax.axhline(y, color="grey", ls=style, lw=1)
        ax.set_title(f"{e}\nICC(2,1) {r['icc2_1']:.2f}", fontsize=8)
        ax.set_xlabel("mean of manual and model", fontsize=7)
    axes[0][0].set_ylabel("model - manual", fontsize=7)
    return _save(fig, path)


def fig_effects(effects: pd.DataFrame, path: Path) -> Path:
    """Hedges' g per endpoint x condition: the manual CI (bar) and the model's g (dot)."""
    plt = _plt()
    e = effects[effects["model_frames"] == "scored"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(e) + 1))
    y = np.arange(len(e))
    ax.hlines(y, e["g_manual_lo"], e["g_manual_hi"], color="grey", lw=3, label="manual 95 % CI")
    ax.scatter(e["g_manual"], y, color="black", s=14, label="manual g")
    ax.scatter(e["g_model"], y, color="tab:red", marker="x", s=20, label="model g")
    ax.axvline(0, color="k", lw=0.5)
    ax.set_yticks(y, [f"{r.endpoint} {r.condition}" for r in e.itertuples()], fontsize=7)
    ax.set_xlabel(f"Hedges' g vs {e['control'].iloc[0] if len(e) else ''}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def fig_trajectories(reference: pd.DataFrame, manual: pd.DataFrame | None, path: Path,
                     n_videos: int = 4) -> Path:
    """The model's reference track of the first videos, with the manual points."""
    plt = _plt()
    videos = sorted(reference[S.VIDEO].unique())[:n_videos]
    fig, axes = plt.subplots(1, len(videos), figsize=(3 * len(videos), 2.6), squeeze=False)
    for ax, v in zip(axes[0], videos, strict=True):
        t = reference[reference[S.VIDEO] == v]
        inds = t.groupby(S.INDIVIDUAL, sort=True) if S.INDIVIDUAL in t.columns else [("", t)]
        for ind, ti in inds:  # one line per tracked individual
            ax.plot(ti[S.X], ti[S.Y], lw=0.8, label=f"model {ind}".strip())
        if manual is not None:
            m = manual[manual[S.VIDEO] == v]
            ax.scatter(m[S.X], m[S.Y], s=8, color="tab:red", label="manual")
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_title(v, fontsize=8)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)
