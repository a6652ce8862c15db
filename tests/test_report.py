"""report: a self-contained HTML page that renders (headless Chromium) and holds the tables."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.curves import overfitting
from support.tables import synthetic_tables

from poseops.core import schema as S
from poseops.evaluate import diagnose as D
from poseops.evaluate import metrics as M
from poseops.report.html import ReportInputs, build_html, example_frames

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Tables(HTMLParser):
    """Collects table ids, the cells of each table and every src/href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[str]] = {}
        self.links: list[str] = []
        self._current: str | None = None
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self._current = a.get("id", f"table{len(self.tables)}")
            self.tables[self._current] = []
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        if tag == "table":
            self._current = None
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._current and self._in_cell:
            self.tables[self._current].append(data)


@pytest.fixture
def inputs(tmp_path: Path) -> ReportInputs:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, preds, split = synthetic_tables()
    errors = M.compute_errors(labels, preds, split, ("snout", "tailbase"))
    spec = M.MetricSpec(pcutoff=0.6)
    stratified = M.stratified_table(errors, spec)
    rng = np.random.default_rng(0)
    for image in errors[S.IMAGE].unique():  # textured frames with a bright animal blob
        img = rng.uniform(0.1, 0.3, (100, 100, 3))
        img[40:60, 15:65] = 0.9
        path = tmp_path / image
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, img)
    curves = overfitting(0)
    composition = labels.groupby(S.CONDITION).agg(frames=(S.IMAGE, "nunique")).reset_index()
    return ReportInputs(
        headline=M.headline_metrics(stratified), stratified=stratified, errors=errors,
        curves=curves, diagnosis=D.diagnose(curves).as_dict(), pck=M.pck_curve(errors, range(11)),
        bias=M.condition_bias(errors), composition=composition,
        composition_metrics={"frames": {"total": 60}}, training={"net type": "cspnext_s"},
        validation={"suite": "expectations/report.json", "success": False, "results": [
            {"name": "test_rmse_max", "table": "metrics", "success": False, "observed": "3.1"}]},
        project_dir=tmp_path, title="iteration 0 report", context={"pcutoff": 0.6},
    )


def test_html_is_self_contained_and_has_the_tables(inputs):
    page = build_html(inputs, example_n=4)
    parser = _Tables()
    parser.feed(page)
    assert all(link.startswith("data:image/png;base64,") for link in parser.links)
    assert not re.search(r"https?://", page), "external URL in the report"
    assert len(parser.links) == 4 + 4  # loss, bodypart, condition, PCK + 4 example frames
    for link in parser.links:  # every embedded figure is a real PNG
        assert base64.b64decode(link.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"composition", "headline", "by-bodypart", "by-condition", "bias", "training",
            "validation"} <= set(parser.tables)
    head = parser.tables["headline"]
    assert "test" in head and f"{inputs.headline['test']['rmse_px']:.3f}" in head
    assert f"{inputs.headline['test']['mean_px']:.3f}" in head
    assert "overfitting" in page and D.ACTIONS[D.OVERFITTING][0] in page.replace("&#x27;", "'")
    assert "test_rmse_max" in parser.tables["validation"]
    bps = set(inputs.errors[S.BODYPART])
    assert bps <= set(parser.tables["by-bodypart"])


def test_example_frames_are_the_worst_test_frames(inputs):
    frames = example_frames(inputs.errors, 3)
    test = inputs.errors[inputs.errors[S.SPLIT] == S.TEST]
    worst = test.groupby(S.IMAGE)[S.ERROR_PX].mean().nlargest(3).index.tolist()
    assert frames == worst


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_renders_in_headless_chromium(inputs, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(build_html(inputs, example_n=4))
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", "--disable-component-update",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
           f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    assert img.std() > 10, "screenshot is blank"
    # not a page of text only: the figures put dark and mid-grey pixels on many rows
    dark_rows = (img < 128).any(axis=1).mean()
    assert dark_rows > 0.2


def test_figures_tolerate_missing_inputs(inputs):
    inputs.curves = pd.DataFrame(columns=[D.EPOCH, D.TRAIN_LOSS, D.VAL_LOSS])
    inputs.project_dir = None
    inputs.composition = pd.DataFrame()
    page = build_html(inputs)
    assert "(no data)" in page and page.count("data:image/png") == 3


def test_no_prediction_above_pcutoff_is_said_not_shown_as_nan(inputs, tmp_path):
    """A headline read back from summary.json (null where no prediction passed pcutoff)."""
    import json

    from poseops.core.fileio import write_json

    headline = {s: dict(d) for s, d in inputs.headline.items()}
    headline["test"]["mean_px_pcutoff"] = float("nan")  # what metrics computes then
    path = write_json({"headline": headline}, tmp_path / "summary.json")
    inputs.headline = json.loads(path.read_text())["headline"]
    assert inputs.headline["test"]["mean_px_pcutoff"] is None
    parser = _Tables()
    parser.feed(build_html(inputs, example_n=0))
    cells = parser.tables["headline"]
    cols = cells[:cells.index(next(s for s in S.SPLITS if s in inputs.headline))]
    rows = {r[0]: dict(zip(cols, r, strict=True)) for r in
            (cells[i:i + len(cols)] for i in range(len(cols), len(cells), len(cols)))}
    assert rows["test"]["mean_px_pcutoff"] == "no prediction above pcutoff"
    assert rows["train"]["mean_px_pcutoff"] == f"{inputs.headline['train']['mean_px_pcutoff']:.3f}"


def test_condition_bias_section_says_what_was_tested(inputs):
    """Per-video tests: the heading and note say so, and a NaN p-value comes with its reason
    (the synthetic test split has one or two videos per condition)."""
    page = build_html(inputs, example_n=0)
    assert "Condition bias (test error, per video)" in page
    assert "frames of one video are not independent" in page
    parser = _Tables()
    parser.feed(page)
    bias = parser.tables["bias"]
    assert "n_units" in bias and "fewer than 2 videos per group (high_dose 1, vehicle 1)" in bias
    inputs.bias = M.condition_bias(inputs.errors, unit=S.IMAGE)
    page = build_html(inputs, example_n=0)
    assert "Condition bias (test error, per image)" in page and "optimistic p-values" in page
