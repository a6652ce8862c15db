"""`poseops report`: one self-contained HTML page per iteration (no external URL: CSS inline,
figures embedded as base64 PNG), also logged to the training's MLflow run.

Sections: composition of the labeled set, performance (headline per split, by bodypart, by
condition, by animal, condition-bias tests on per-video means), training details, diagnosis
(loss curves and evaluated errors) with the guide's actions, metric validation, figures (loss curves, error per bodypart and per condition,
PCK curve, example test frames with labeled vs predicted keypoints).

:func:`build_html` is pure (tables/dicts in, a string out); ``poseops.commands.report`` reads
the stage outputs into :class:`ReportInputs`, writes the page and logs it to MLflow.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate import diagnose as D
from poseops.evaluate import metrics as M
from poseops.evaluate.common import PRED_X, PRED_Y

log = logging.getLogger(__name__)


@dataclass
class ReportInputs:
    """What the page shows. Tables as in poseops.evaluate.metrics / poseops.evaluate.diagnose."""

    headline: dict[str, dict[str, float]]
    stratified: pd.DataFrame
    errors: pd.DataFrame
    curves: pd.DataFrame  # epoch, train_loss, val_loss
    diagnosis: dict[str, Any]  # poseops.evaluate.diagnose.Diagnosis.as_dict()
    pck: pd.DataFrame  # split, threshold_px, pck
    bias: pd.DataFrame = field(default_factory=pd.DataFrame)
    composition: pd.DataFrame = field(default_factory=pd.DataFrame)
    composition_metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # flat key -> value
    validation: dict[str, Any] | None = None  # poseops.quality.gx ValidationResult.to_json_dict()
    project_dir: Path | None = None  # images are project_dir / image
    title: str = "poseops iteration report"
    context: dict[str, Any] = field(default_factory=dict)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#1d2330;background:#fff;line-height:1.4}
h1{font-size:26px;border-bottom:3px solid #3b6fb6;padding-bottom:6px}
h2{font-size:20px;margin-top:34px;color:#23467a;border-bottom:1px solid #d6dce6}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #cfd6e2;padding:3px 8px;text-align:right}
th{background:#e8eef8}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f6f8fc}
.kind{display:inline-block;padding:4px 12px;border-radius:12px;color:#fff;font-weight:600}
.healthy{background:#2e8b57}.overfitting,.volatile_validation{background:#c0392b}
.underfitting,.plateau{background:#d68910}.insufficient{background:#7f8c8d}
.ok{color:#2e8b57;font-weight:600}.fail{color:#c0392b;font-weight:600}
figure{display:inline-block;margin:8px;vertical-align:top}
figcaption{font-size:12px;color:#555;text-align:center}
.note{font-size:12px;color:#555}.scroll{overflow-x:auto}
"""


# ------------------------------------------------------------------------------- helpers


COUNT_COLUMNS = {"n", "k", "n_pcutoff", "frames", "n_frames"}


def _fmt(v: Any) -> str:
    if v is None:  # JSON null: a number that could not be computed
        return "NaN"
    if isinstance(v, float | np.floating):
        return "NaN" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.3f}"
    return html.escape(str(v))


# errors over predictions with likelihood >= pcutoff: empty (NaN / JSON null) when none passes
PCUTOFF_ERROR_COLUMNS = {"mean_px_pcutoff", "rmse_px_pcutoff", "median_px_pcutoff"}
NO_PCUTOFF = "no prediction above pcutoff"


def _cell(v: Any, pcutoff_error: bool) -> str:
    if pcutoff_error and (v is None or (isinstance(v, float | np.floating) and np.isnan(v))):
        return NO_PCUTOFF
    return _fmt(v)


def table_html(df: pd.DataFrame, max_rows: int = 60, table_id: str | None = None) -> str:
    """A plain HTML table (escaped), at most ``max_rows`` rows."""
    if df is None or df.empty:
        return '<p class="note">(no data)</p>'
    shown = df.head(max_rows).copy()
    for c in shown.columns:  # counts read back from CSV/JSON as floats: show them as ints
        if c in COUNT_COLUMNS and pd.api.types.is_numeric_dtype(shown[c]):
            shown[c] = shown[c].map(lambda v: str(int(v)) if pd.notna(v) else "NaN")
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    pcut = [c in PCUTOFF_ERROR_COLUMNS for c in shown.columns]
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v, p)}</td>" for v, p in zip(row, pcut, strict=True))
        + "</tr>"
        for row in shown.itertuples(index=False)
    )
    more = f'<p class="note">{len(df) - max_rows} more rows in the CSV</p>' if len(df) > max_rows else ""
    return (f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}'
            f"</tbody></table></div>{more}")


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(b64: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


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


# ---------------------------------------------------------------------------------- page


def _headline_table(headline: dict[str, dict[str, float]]) -> pd.DataFrame:
    keys = ["n", "rmse_px", "mean_px", "median_px", "p95_px", "mean_px_pcutoff",
            "rmse_px_pcutoff", "pcutoff_coverage", "median_likelihood", "norm_mean"]
    rows = []
    for split in S.SPLITS:
        d = headline.get(split)
        if not d:
            continue
        pck = [k for k in d if k.startswith("pck_")]
        rows.append({"split": split, **{k: d.get(k, np.nan) for k in keys + pck}})
    df = pd.DataFrame(rows)
    return df.rename(columns={"rmse_px": "RMSE px (true)", "mean_px": "mean px (DLC 'rmse')"})


MA_HEADLINE = {"mAP": "mAP (DLC, OKS)", "mAR": "mAR (DLC, OKS)",
               "dlc_rmse_px": "DLC rmse px (after matching)", "n_animals": "animals labeled",
               "n_matched_animals": "matched", "n_missed_animals": "missed",
               "n_false_positives": "false positives", "identity_swaps": "identity swaps",
               "identity_swap_rate": "swap rate", "swapped_keypoints": "swapped keypoints"}


def _multianimal_table(headline: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Multi-animal headline (DLC's mAP/mAR/rmse after matching, identity counts) per split;
    empty for single-animal projects."""
    rows = [{"split": s, **{v: headline[s].get(k, np.nan) for k, v in MA_HEADLINE.items()}}
            for s in S.SPLITS if "mAP" in (headline.get(s) or {})]
    return pd.DataFrame(rows)


def _stratum(stratified: pd.DataFrame, stratum_type: str) -> pd.DataFrame:
    cols = [M.STRATUM, S.SPLIT, M.N, "n_labeled", "rmse_px", "mean_px", "median_px", "p95_px",
            "mean_px_pcutoff", "median_likelihood"]
    st = stratified[stratified[M.STRATUM_TYPE] == stratum_type]
    return st[[c for c in cols if c in st.columns]].rename(columns={M.STRATUM: stratum_type})


def _validation_html(v: dict[str, Any] | None) -> str:
    if not v:
        return '<p class="note">Metric validation has not run (poseops validate-report).</p>'
    ok = bool(v.get("success"))
    status = '<span class="ok">passed</span>' if ok else '<span class="fail">FAILED</span>'
    rows = pd.DataFrame([
        {"expectation": r.get("name"), "table": r.get("table"),
         "result": {True: "pass", False: "FAIL", None: "skipped"}.get(r.get("success")),
         "observed": r.get("observed")}
        for r in v.get("results", [])
    ])
    return f"<p>Great Expectations suite <b>{html.escape(str(v.get('suite')))}</b>: {status}</p>" + (
        table_html(rows, 100, "validation"))


def build_html(inp: ReportInputs, example_n: int = 6, max_rows: int = 60) -> str:
    """The whole page as one string (no external resource)."""
    parts = _head(inp)
    parts += _composition_section(inp, max_rows)
    parts += _performance_section(inp, max_rows)
    parts += _bias_section(inp.bias, max_rows)
    parts += ["<h2>Training</h2>",
              table_html(pd.DataFrame([{"setting": k, "value": v}
                                       for k, v in inp.training.items()]), 100, "training")]
    parts += _diagnosis_section(inp.diagnosis or {})
    parts += _validation_section(inp.validation)
    parts += _figures_section(inp, example_n)
    parts.append("</body></html>")
    return "\n".join(parts)


def _head(inp: ReportInputs) -> list[str]:
    """Doctype, title, inline CSS and the note on the error measures."""
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(inp.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(inp.title)}</h1>",
        f"<p class='note'>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        "Errors in pixels. <b>RMSE (true)</b> = sqrt(mean squared distance); "
        "<b>mean px</b> = mean distance, the number DeepLabCut calls “rmse”. "
        "pcutoff variants keep keypoints with likelihood ≥ pcutoff "
        f"({html.escape(str(inp.context.get('pcutoff', '')))}).</p>",
    ]


def _composition_section(inp: ReportInputs, max_rows: int) -> list[str]:
    parts = [
        "<h2>Composition of the labeled set</h2>",
        split_summary_html(inp.composition_metrics),
        table_html(inp.composition, max_rows, "composition"),
    ]
    if inp.composition_metrics:
        flat = pd.DataFrame([{"metric": k, "value": v} for k, v in _flatten(
            inp.composition_metrics).items()])
        parts.append("<details><summary>All composition metrics "
                     f"({len(flat)})</summary>{table_html(flat, 1000, 'composition-metrics')}"
                     "</details>")
    return parts


def _performance_section(inp: ReportInputs, max_rows: int) -> list[str]:
    """Headline per split, the train-test gap, the multi-animal table, the per-stratum tables."""
    parts = ["<h2>Performance</h2>", table_html(_headline_table(inp.headline), 10, "headline")]
    gap = (inp.headline.get("gap") or {})
    if gap:
        parts.append(f"<p>Train–test gap: <b>{_fmt(gap.get('train_test_gap_pct'))} %</b> "
                     f"(true RMSE), {_fmt(gap.get('train_test_gap_mean_pct'))} % (mean).</p>")
    ma = _multianimal_table(inp.headline)
    if len(ma):
        parts += ["<h3>Multi-animal</h3>",
                  "<p class='note'>Predicted animals are matched to labeled ones as DeepLabCut's "
                  "evaluate_network does (greedy OKS); pixel errors above are after matching. An "
                  "identity swap is a matched animal with a keypoint nearer another labeled "
                  "animal's same bodypart.</p>",
                  table_html(ma, 10, "headline-multianimal")]
    for st_type, caption in [(S.BODYPART, "By bodypart"), (S.CONDITION, "By condition"),
                             (S.ANIMAL, "By animal"), (S.SESSION, "By session"),
                             (S.INDIVIDUAL, "By individual"),
                             (S.ANIMALS_IN_FRAME, "By animals in frame")]:
        sub = _stratum(inp.stratified, st_type)
        if len(sub):
            parts += [f"<h3>{caption}</h3>", table_html(sub, max_rows, f"by-{st_type}")]
    return parts


def _bias_section(bias: pd.DataFrame | None, max_rows: int) -> list[str]:
    """The condition-bias tests with the caveat of their unit (empty without tests)."""
    if bias is None or not len(bias):
        return []
    units = sorted(set(bias["unit"].astype(str))) if "unit" in bias else ["image"]
    unit = ", ".join(units)
    caveat = ("every frame counted as an independent sample: optimistic p-values"
              if units == ["image"] else
              f"frames of one {unit} are not independent, so each {unit} counts once; "
              f"n = means tested, n_units = {unit}s, n_frames = frames behind them; a "
              f"group with fewer than 2 {unit}s gives no p-value (NaN, see note)")
    return [f"<h3>Condition bias (test error, per {html.escape(unit)})</h3>",
            "<p class='note'>One-way ANOVA (η²) and Kruskal–Wallis (ε²) across groups of "
            f"per-{html.escape(unit)} mean errors: {html.escape(caveat)}.</p>",
            table_html(bias, max_rows, "bias")]


def _diagnosis_section(d: dict[str, Any]) -> list[str]:
    kind = str(d.get("kind", "unknown"))
    return [
        "<h2>Diagnosis (loss curves and train/val/test errors)</h2>",
        f"<p><span class='kind {html.escape(kind)}'>{html.escape(kind)}</span> "
        f"{html.escape(str(d.get('reason', '')))}</p>",
        f"<p class='note'>{html.escape(str(d.get('pattern', '')))}</p>",
        "<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in d.get("actions", [])) + "</ul>",
    ]


def _validation_section(validation: dict[str, Any] | None) -> list[str]:
    return ["<h2>Metric validation</h2>", _validation_html(validation)]


def _figures_section(inp: ReportInputs, example_n: int) -> list[str]:
    """Loss curves, error per bodypart / condition, PCK, and the worst test frames drawn."""
    parts = ["<h2>Figures</h2>"]
    figs = [
        (fig_loss(inp.curves), "Loss curves (train vs validation)"),
        (fig_error_by(inp.stratified, S.BODYPART), "Mean error per bodypart"),
        (fig_error_by(inp.stratified, S.CONDITION), "Mean error per condition"),
        (fig_pck(inp.pck), "PCK curve"),
    ]
    parts += [_figure(b, c) for b, c in figs if b]
    if inp.project_dir is not None:
        frames = example_frames(inp.errors, example_n)
        if frames:
            parts.append("<h3>Example test frames (worst first): ○ labeled, × predicted</h3>")
        for image in frames:
            b = fig_frame(inp.errors, image, inp.project_dir)
            if b:
                err = inp.errors.loc[inp.errors[S.IMAGE] == image, S.ERROR_PX].mean()
                parts.append(_figure(b, f"{image} (mean error {err:.2f} px)"))
    return parts


def split_summary_html(composition_metrics: dict[str, Any]) -> str:
    """One line on the split (composition.json ``split``): mode (temporal-blocks: block and gap
    length), frames / groups (blocks) per split, frames left out, the smallest frame distance
    between splits within a video; the frame-level-groups leakage warning in red."""
    sp = (composition_metrics or {}).get("split")
    if not isinstance(sp, dict) or "frames" not in sp:
        return ""
    mode = sp.get("mode") or "unknown mode"
    if mode == "temporal-blocks":
        mode += f" (blocks of {sp.get('block_frames')} frames, gap {sp.get('gap_frames')})"
    unit = "blocks" if "blocks" in sp else "groups"
    per = sp.get("blocks") or sp.get("groups") or {}
    counts = ", ".join(f"{s} {sp['frames'].get(s, 0)} frames / {per.get(s, 0)} {unit}"
                       for s in ("train", "val", "test"))
    extra = []
    if sp.get("excluded_frames"):
        extra.append(f"{sp['excluded_frames']} labeled frames left out")
    dist = sp.get("min_frame_distance_between_splits")
    extra.append("no video in two splits" if dist is None
                 else f"closest frames of different splits: {dist} frames apart")
    line = (f"<p id='split-summary'><b>Split</b>: {html.escape(str(mode))}; "
            f"{html.escape(counts)}; {html.escape('; '.join(extra))}.</p>")
    if sp.get("leakage_warning"):
        line += f"<p class='fail'>Leakage: {html.escape(str(sp['leakage_warning']))}</p>"
    return line


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
