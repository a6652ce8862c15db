"""Report inputs built from the synthetic tables (tests/support/tables.py) through poseops' own
evaluate and composition functions: what `poseops report` reads, without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.data import composition as C
from poseops.evaluate import diagnose as D
from poseops.evaluate import metrics as M
from poseops.report.html import ReportInputs
from support.curves import overfitting
from support.tables import synthetic_tables

SCORERS = ("alice", "bob", "carol")


def draw_frames(errors: pd.DataFrame, root: Path) -> None:
    """Textured frames with a bright animal blob under ``root`` (the project folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    for image in errors[S.IMAGE].unique():
        img = rng.uniform(0.1, 0.3, (100, 100, 3))
        img[40:60, 15:65] = 0.9
        path = root / image
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, img)


def three_labelers(labels: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The consensus labels as three scorers' labels, each with its own noise (labeler
    agreement then has three pairs)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, name in enumerate(SCORERS):
        d = labels.copy()
        d[S.SCORER] = name
        d[S.X] = d[S.X] + rng.normal(0, 0.5 + i, len(d))
        d[S.Y] = d[S.Y] + rng.normal(0, 0.5 + i, len(d))
        out.append(d)
    return pd.concat(out, ignore_index=True)


def report_inputs(root: Path, composition_metrics: bool = False) -> ReportInputs:
    """Inputs of an overfitting iteration whose metric validation failed; with
    ``composition_metrics``, composition.json as the composition stage computes it (three
    labelers, the split's frames per condition)."""
    labels, preds, split = synthetic_tables()
    errors = M.compute_errors(labels, preds, split, ("snout", "tailbase"))
    stratified = M.stratified_table(errors, M.MetricSpec(pcutoff=0.6))
    draw_frames(errors, root)
    curves = overfitting(0)
    composition = labels.groupby(S.CONDITION).agg(frames=(S.IMAGE, "nunique")).reset_index()
    comp = {"frames": {"total": 60}}
    if composition_metrics:
        comp = C.composition_metrics(three_labelers(labels), split)
        composition = C.composition_table(comp)
    return ReportInputs(
        headline=M.headline_metrics(stratified), stratified=stratified, errors=errors,
        curves=curves, diagnosis=D.diagnose(curves).as_dict(), pck=M.pck_curve(errors, range(11)),
        bias=M.condition_bias(errors), composition=composition,
        composition_metrics=comp, training={"net type": "cspnext_s"},
        validation={"suite": "expectations/report.json", "success": False, "results": [
            {"name": "test_rmse_max", "table": "metrics", "success": False, "observed": "3.1"}]},
        project_dir=root, title="iteration 0 report", context={"pcutoff": 0.6},
    )
