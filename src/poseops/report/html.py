"""`poseops report`: one self-contained HTML page per iteration (no external URL: CSS inline,
figures embedded as base64 PNG), also logged to the training's MLflow run.

The page opens on the answer (:mod:`poseops.report.summary`: headline numbers with units, the
validation verdicts, the diagnosis, the three worst test strata, what to do next), then the
evidence, figures beside their tables: performance (headline per split, PCK, multi-animal,
cohorts, by bodypart / condition / animal..., bodypart x condition, condition bias),
composition as compact pivots (frames per video x split, per condition x split, labeler
agreement as a matrix; the long tables behind disclosures), training with the loss curves, the
diagnosis, metric validation, and, when their inputs exist, the iteration history, trajectories
and behaviour, ablation results; then the worst test frames drawn. Numbers are rounded for
reading (:mod:`poseops.report.fmt`); the CSVs keep full precision.

Rendered with jinja2 from ``templates/`` (shipped as package data). :func:`build_html` is pure
(tables/dicts in, a string out); ``poseops.commands.report`` reads the stage outputs into
:class:`ReportInputs`, writes the page and logs it to MLflow.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.evaluate import metrics as M
from poseops.report import figures as F
from poseops.report import sections as X

# kept importable from here (tests and other modules use these names)
from poseops.report.figures import example_frames, fig_error_by, fig_frame, fig_loss, fig_pck
from poseops.report.fmt import (
    COUNT_COLUMNS,
    NO_PCUTOFF,
    PCUTOFF_ERROR_COLUMNS,
    Table,
    fmt,
    fmt_plain,
    table,
)
from poseops.report.sections import FolderSection
from poseops.report.spread import seed_spread_summary
from poseops.report.summary import build_summary
from poseops.report.trajectories import TrajectoriesSection

__all__ = ["COUNT_COLUMNS", "NO_PCUTOFF", "PCUTOFF_ERROR_COLUMNS", "ReportInputs", "build_html",
           "example_frames", "fig_error_by", "fig_frame", "fig_loss", "fig_pck", "split_summary_html",
           "table_html"]

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
KEY_METRIC_NOTE = ("DLC's name for the validation frames: poseops' val split chose the snapshot; "
                   "the test split did not")


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
    dataset_validation: dict[str, Any] | None = None  # the dataset suite (poseops validate)
    iterations: pd.DataFrame = field(default_factory=pd.DataFrame)  # reports/iterations.csv
    behaviour: FolderSection | None = None  # reports/behaviour/
    trajectories: TrajectoriesSection | None = None  # compare --trajectories (compare.out)
    ablation: FolderSection | None = None  # reports/ablation/
    visibility: pd.DataFrame = field(default_factory=pd.DataFrame)  # evaluate's visibility.csv


# ------------------------------------------------------------------------------- helpers


def _fmt(v: Any) -> str:
    """The generic number format, escaped (kept for callers of the string-built page)."""
    return html.escape(fmt_plain(v))


def table_html(df: pd.DataFrame, max_rows: int = 60, table_id: str | None = None) -> str:
    """A plain HTML table (escaped, numbers rounded by column name), at most ``max_rows``."""
    return str(_env().get_template("macros.j2").module.table(table(df, max_rows, table_id)))


def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# ------------------------------------------------------------------------------- tables

HEADLINE_KEYS = ["n", "rmse_px", "mean_px", "median_px", "p95_px", "mean_px_pcutoff",
                 "rmse_px_pcutoff", "pcutoff_coverage", "median_likelihood"]
HEADLINE_NAMES = {"rmse_px": "RMSE px (true)", "mean_px": "mean px (DLC 'rmse')"}
MA_HEADLINE = {"mAP": "mAP (DLC, OKS)", "mAR": "mAR (DLC, OKS)",
               "dlc_rmse_px": "DLC rmse px (after matching)", "n_animals": "animals labeled",
               "n_matched_animals": "matched", "n_missed_animals": "missed",
               "n_false_positives": "false positives", "identity_swaps": "identity swaps",
               "identity_swap_rate": "swap rate", "swapped_keypoints": "swapped keypoints"}
DUPLICATES = {"dlc_rmse_px", "dlc_rmse_pcutoff_px"}  # = mean_px, mean_px_pcutoff


def _headline_table(headline: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Errors per split (one row per split; the columns keep metrics.json's names)."""
    rows = [{"split": s, **{k: headline[s].get(k, np.nan) for k in HEADLINE_KEYS}}
            for s in S.SPLITS if headline.get(s)]
    return pd.DataFrame(rows).rename(columns=HEADLINE_NAMES)


def _is_multianimal(headline: dict[str, dict[str, float]]) -> bool:
    return any("n_animals" in (headline.get(s) or {}) for s in S.SPLITS)


def _headline_more(headline: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Every other scalar headline metric (PCK, PCK AUC, normalised error, visibility, OKS
    mAP...), one row per metric, one column per split: as narrow as the number of splits."""
    splits = [s for s in S.SPLITS if headline.get(s)]
    skip = set(HEADLINE_KEYS) | DUPLICATES | (set(MA_HEADLINE) if _is_multianimal(headline)
                                              else set())
    keys: list[str] = []
    for s in splits:
        keys += [k for k, v in headline[s].items() if k not in keys and k not in skip
                 and (v is None or isinstance(v, int | float))]
    rows = [{"metric": k, **{s: headline[s].get(k, np.nan) for s in splits}} for k in keys]
    return pd.DataFrame(rows)


def _multianimal_table(headline: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Multi-animal headline (DLC's mAP/mAR/rmse after matching, identity counts) per split;
    empty for single-animal projects."""
    if not _is_multianimal(headline):
        return pd.DataFrame()
    rows = [{"split": s, **{v: headline[s].get(k, np.nan) for k, v in MA_HEADLINE.items()}}
            for s in S.SPLITS if headline.get(s)]
    return pd.DataFrame(rows)


def _visibility(vis: pd.DataFrame) -> pd.DataFrame:
    """Visibility precision / recall per bodypart on the test split (all splits behind a
    disclosure)."""
    if vis is None or vis.empty or S.SPLIT not in vis.columns:
        return pd.DataFrame()
    return vis[vis[S.SPLIT] == S.TEST].drop(columns=[S.SPLIT])


def _stratum(stratified: pd.DataFrame, stratum_type: str) -> pd.DataFrame:
    cols = [M.STRATUM, S.SPLIT, M.N, "n_labeled", "rmse_px", "mean_px", "median_px", "p95_px",
            "mean_px_pcutoff", "median_likelihood"]
    st = stratified[stratified[M.STRATUM_TYPE] == stratum_type]
    return st[[c for c in cols if c in st.columns]].rename(columns={M.STRATUM: stratum_type})


STRATA = [(S.BODYPART, "By bodypart"), (S.CONDITION, "By condition"), (S.ANIMAL, "By animal"),
          (S.SESSION, "By session"), (S.VIDEO, "By video"), (S.INDIVIDUAL, "By individual"),
          (S.ANIMALS_IN_FRAME, "By animals in frame")]
FIGURED = (S.BODYPART, S.CONDITION)  # strata drawn beside their table
DETAILS_ROWS = 15  # a longer stratum table goes behind a disclosure


def _strata(inp: ReportInputs, max_rows: int) -> list[dict[str, Any]]:
    out = []
    for st_type, caption in STRATA:
        sub = _stratum(inp.stratified, st_type)
        if not len(sub):
            continue
        fig = F.fig_error_by(inp.stratified, st_type) if st_type in FIGURED else None
        long_ = st_type not in FIGURED and len(sub) > DETAILS_ROWS
        out.append({"caption": caption, "table": table(sub, max_rows, f"by-{st_type}"),
                    "fig": fig, "fig_caption": f"Mean error per {st_type}",
                    "details": f"{caption}: {len(sub)} rows" if long_ else ""})
    return out


def _crossed(stratified: pd.DataFrame) -> pd.DataFrame:
    """Test RMSE per bodypart (rows) x condition (columns)."""
    name = f"{S.BODYPART}_x_{S.CONDITION}"
    st = stratified[(stratified[M.STRATUM_TYPE] == name) & (stratified[S.SPLIT] == S.TEST)]
    if st.empty:
        return pd.DataFrame()
    cells = st[M.STRATUM].astype(str).str.split(M.CELL_SEP, n=1, expand=True)
    wide = pd.DataFrame({S.BODYPART: cells[0], S.CONDITION: cells[1],
                         "rmse_px": st["rmse_px"].to_numpy()}).pivot_table(
        index=S.BODYPART, columns=S.CONDITION, values="rmse_px", aggfunc="first")
    wide.columns = [f"{c} px" for c in wide.columns]
    return wide.reset_index()


def _bias(bias: pd.DataFrame | None, max_rows: int) -> dict[str, Any] | None:
    """The condition-bias tests with the caveat of their unit (None without tests)."""
    if bias is None or not len(bias):
        return None
    units = sorted(set(bias["unit"].astype(str))) if "unit" in bias else ["image"]
    unit = ", ".join(units)
    caveat = ("every frame counted as an independent sample: optimistic p-values"
              if units == ["image"] else
              f"frames of one {unit} are not independent, so each {unit} counts once; "
              f"n = means tested, n_units = {unit}s, n_frames = frames behind them; a "
              f"group with fewer than 2 {unit}s gives no p-value (NaN, see note)")
    return {"unit": unit, "caveat": caveat, "table": table(bias, max_rows, "bias")}


def _validation(v: dict[str, Any] | None, ident: str) -> dict[str, Any] | None:
    if not v:
        return None
    rows = pd.DataFrame([
        {"expectation": r.get("name"), "table": r.get("table"),
         "result": {True: "pass", False: "FAIL", None: "skipped"}.get(r.get("success")),
         "observed": r.get("observed")}
        for r in v.get("results", [])
    ])
    return {"suite": str(v.get("suite")), "ok": bool(v.get("success")),
            "table": table(rows, 200, ident)}


def _training(training: dict[str, Any]) -> Table:
    rows = []
    for k, v in training.items():
        if k == "key metric" and str(v).startswith("test."):
            v = f"{v} ({KEY_METRIC_NOTE})"
        rows.append({"setting": k, "value": v})
    return table(pd.DataFrame(rows), 100, "training")


def _composition(inp: ReportInputs, max_rows: int) -> dict[str, Any]:
    from markupsafe import Markup

    m = inp.composition_metrics or {}
    flat = X.flat_table(m)
    return {
        "facts": X.composition_facts(m),
        "split_line": Markup(split_summary_html(m)),
        "per_video": table(X.frames_per_video_split(inp.errors), 200, "frames-per-video"),
        "per_condition": table(X.frames_per_condition_split(m, inp.errors), 50,
                               "frames-per-condition"),
        "labelers": table(X.labeler_matrix(m), 50, "labeler-agreement", unit="px"),
        "long": table(inp.composition, max_rows, "composition"),
        "metrics": table(flat, 1000, "composition-metrics", row_formats=True),
        "n_metrics": len(flat),
    }


def _folder(sec: FolderSection | None, max_rows: int) -> dict[str, Any] | None:
    if sec is None:
        return None
    return {"path": str(sec.path),
            "summary_table": table(X.flat_table(sec.summary), 200, f"{sec.path.name}-summary",
                                   row_formats=True),
            "figures": sec.figures,
            "tables": [(name, table(df, max_rows)) for name, df in sec.tables]}


def _trajectories(sec: TrajectoriesSection | None, max_rows: int) -> dict[str, Any] | None:
    if sec is None:
        return None
    return {"path": str(sec.path), "tests": table(sec.tests, max_rows, "trajectories-tests"),
            "videos": table(sec.videos, max_rows, "trajectories-videos"), "fig": sec.figure}


def _frames(inp: ReportInputs, example_n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if inp.project_dir is None:
        return out
    for image in F.example_frames(inp.errors, example_n):
        b = F.fig_frame(inp.errors, image, inp.project_dir)
        if b:
            err = inp.errors.loc[inp.errors[S.IMAGE] == image, S.ERROR_PX].mean()
            out.append((b, f"{image} (mean error {err:.2f} px)"))
    return out


# ---------------------------------------------------------------------------------- page


def build_html(inp: ReportInputs, example_n: int = 6, max_rows: int = 60) -> str:
    """The whole page as one string (no external resource)."""
    gap = inp.headline.get("gap") or {}
    its = inp.iterations
    ctx = {
        "title": inp.title, "generated": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "pcutoff": str(inp.context.get("pcutoff", "")), "max_rows": max_rows,
        "summary": build_summary(inp.headline, inp.stratified, inp.diagnosis or {},
                                 inp.validation, inp.dataset_validation),
        "headline": table(_headline_table(inp.headline), 10, "headline"),
        "headline_more": table(_headline_more(inp.headline), 100, "headline-more",
                               row_formats=True),
        "gap": {"rmse": fmt("train_test_gap_pct", gap.get("train_test_gap_pct")),
                "mean": fmt("train_test_gap_mean_pct", gap.get("train_test_gap_mean_pct"))}
        if gap else None,
        "multianimal": table(_multianimal_table(inp.headline), 10, "headline-multianimal"),
        "visibility": table(_visibility(inp.visibility), max_rows, "visibility-test"),
        "visibility_all": table(inp.visibility, 500, "visibility"),
        "cohorts": table(X.cohort_table(inp.headline, inp.context.get("cohorts")), 50,
                         "cohorts"),
        "strata": _strata(inp, max_rows), "crossed": table(_crossed(inp.stratified), 50,
                                                           "bodypart-x-condition"),
        "bias": _bias(inp.bias, max_rows), "composition": _composition(inp, max_rows),
        "training": _training(inp.training),
        "figs": {"loss": F.fig_loss(inp.curves), "pck": F.fig_pck(inp.pck)},
        "diagnosis": {"kind": str((inp.diagnosis or {}).get("kind", "unknown")),
                      "reason": str((inp.diagnosis or {}).get("reason", "")),
                      "pattern": str((inp.diagnosis or {}).get("pattern", "")),
                      "actions": list((inp.diagnosis or {}).get("actions", []))},
        "validation": _validation(inp.validation, "validation"),
        "dataset_validation": _validation(inp.dataset_validation, "validation-dataset"),
        "iterations": {"table": table(its, max_rows, "iterations"),
                       "fig": F.fig_iterations(its)} if len(its) else None,
        "behaviour": _folder(inp.behaviour, max_rows),
        "trajectories": _trajectories(inp.trajectories, max_rows),
        "ablation": _folder(inp.ablation, max_rows),
        "seed_spread": seed_spread_summary(inp.ablation),
        "frames": _frames(inp, example_n),
    }
    return _env().get_template("report.html.j2").render(**ctx)


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
