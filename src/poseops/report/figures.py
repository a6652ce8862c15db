"""The report's figures: matplotlib (Agg) drawn to PNG and embedded as base64 (no file, no
URL). Each function returns the base64 text, or None when its input is empty."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate import diagnose as D
from poseops.evaluate import metrics as M
from poseops.evaluate.common import PRED_X, PRED_Y


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------- figures


def fig_loss(curves: pd.DataFrame) -> str | None:
    if curves is None or curves.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(curves[D.EPOCH], curves[D.TRAIN_LOSS], "o-", label="train loss")
    v = curves.dropna(subset=[D.VAL_LOSS])
    ax.plot(v[D.EPOCH], v[D.VAL_LOSS], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def fig_error_by(stratified: pd.DataFrame, stratum_type: str) -> str | None:
    st = stratified[stratified[M.STRATUM_TYPE] == stratum_type]
    if st.empty:
        return None
    plt = _plt()
    wide = st.pivot_table(index=M.STRATUM, columns=S.SPLIT, values="mean_px", sort=True)
    wide = wide[[s for s in S.SPLITS if s in wide.columns]]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(wide) + 2), 3.5))
    wide.plot.bar(ax=ax, rot=30)
    ax.set_ylabel("mean error (px) = DLC 'rmse'")
    ax.set_xlabel(stratum_type)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def fig_pck(pck: pd.DataFrame) -> str | None:
    if pck is None or pck.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for split, g in pck.groupby(S.SPLIT, sort=False):
        ax.plot(g["threshold_px"], g["pck"], label=str(split))
    ax.set_xlabel("threshold (px)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def example_frames(errors: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` test frames (else any split) with the largest mean error, worst first."""
    if n <= 0 or errors.empty:
        return []
    e = errors[errors[S.SPLIT] == S.TEST]
    e = e if len(e) else errors
    per = e.groupby(S.IMAGE)[S.ERROR_PX].mean().sort_values(ascending=False, na_position="last")
    return list(per.index[:n])


def fig_frame(errors: pd.DataFrame, image: str, project_dir: Path) -> str | None:
    path = Path(project_dir) / image
    if not path.is_file():
        return None
    plt = _plt()
    img = plt.imread(str(path))
    rows = errors[errors[S.IMAGE] == image]
    h, w = img.shape[:2]
    fig, ax = plt.subplots(figsize=(3.6, 3.6 * h / max(w, 1)))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(rows.itertuples(index=False)):
        c = colors(i % 10)
        lx, ly = getattr(r, S.X), getattr(r, S.Y)
        px, py = getattr(r, PRED_X), getattr(r, PRED_Y)
        if np.isfinite(lx):
            ax.plot(lx, ly, "o", mfc="none", mec=c, ms=8, mew=1.5)
            ax.plot([lx, px], [ly, py], "-", color=c, lw=0.8)
        ax.plot(px, py, "x", color=c, ms=7, mew=1.5)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    return _png(fig)


def fig_iterations(iterations: pd.DataFrame) -> str | None:
    """Every pixel-error column (``px`` or ``rmse`` in its name) of ``reports/iterations.csv``
    (test RMSE overall, per condition...) against the iteration: did refining help?"""
    if iterations is None or iterations.empty or "iteration" not in iterations.columns:
        return None
    cols = [c for c in iterations.columns if c != "iteration"
            and any(w in str(c).lower() for w in ("px", "rmse"))
            and pd.api.types.is_numeric_dtype(iterations[c])]
    if not cols:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    it = iterations.sort_values("iteration")
    for c in cols:
        ax.plot(it["iteration"], it[c], "o-", label=str(c))
    ax.set_xlabel("iteration")
    ax.set_ylabel("error (px)")
    ax.set_xticks(sorted(set(int(i) for i in it["iteration"].dropna())))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def png_file_b64(path: Path) -> str:
    """A PNG file as base64 text (a figure another stage drew)."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")
