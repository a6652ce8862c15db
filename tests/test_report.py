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
from support.report import report_inputs

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
    return report_inputs(tmp_path)


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
    assert "test" in head and f"{inputs.headline['test']['rmse_px']:.2f}" in head  # px: 2 dp
    assert f"{inputs.headline['test']['mean_px']:.2f}" in head
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
    assert rows["train"]["mean_px_pcutoff"] == f"{inputs.headline['train']['mean_px_pcutoff']:.2f}"


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


# ------------------------------------------------- issue 25: the report opens on the answer


def _text(fragment: str) -> str:
    """Visible text of an HTML fragment (tags dropped, entities decoded, spaces collapsed)."""
    import html as H

    text = " ".join(H.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
    return re.sub(r" ([:;,.)])", r"\1", text)


class _Element(HTMLParser):
    """The source of the element with a given id, nested elements included."""

    VOID = {"img", "br", "meta", "hr", "input", "link", "wbr"}

    def __init__(self, ident: str) -> None:
        super().__init__(convert_charrefs=False)
        self.ident, self.depth, self.start, self.end = ident, 0, None, None

    def handle_starttag(self, tag, attrs):
        if self.end is not None or tag in self.VOID:
            return
        if self.start is None and dict(attrs).get("id") == self.ident:
            self.start, self.depth = self._offset(), 1
        elif self.start is not None:
            self.depth += 1

    def handle_endtag(self, tag):
        if self.start is not None and self.end is None and tag not in self.VOID:
            self.depth -= 1
            if self.depth == 0:
                self.end = self._offset()

    def _offset(self) -> int:
        line, col = self.getpos()
        return sum(len(x) for x in self.rawdata.splitlines(True)[:line - 1]) + col


def _section(page: str, ident: str) -> str:
    p = _Element(ident)
    p.feed(page)
    assert p.start is not None and p.end is not None, f"no element #{ident}"
    return page[p.start:p.end]


def _test_errors(errors: pd.DataFrame) -> pd.DataFrame:
    t = errors[errors[S.SPLIT] == S.TEST]
    return t[np.isfinite(t[S.ERROR_PX].to_numpy(float))]


def _rmse(e: pd.Series) -> float:
    return float(np.sqrt(np.mean(np.square(e.to_numpy(float)))))


def test_report_opens_on_the_answer(inputs):
    """Before any other section: test RMSE with its unit (recomputed from the errors table),
    the validation verdict, the diagnosis, the three worst test strata (recomputed: worst cell
    of each stratum type with >= 3 keypoints, the three worst of those) and next steps."""
    inputs.dataset_validation = {"suite": "expectations/dataset.json", "success": True,
                                 "results": [{"name": "nan_share", "success": True}]}
    page = build_html(inputs, example_n=0)
    summary = _section(page, "summary")
    assert page.index('id="summary"') < page.index("<h2")  # first, before any section
    t = _test_errors(inputs.errors)
    card = _text(_section(page, "summary-test-rmse"))
    assert f"test RMSE {_rmse(t[S.ERROR_PX]):.2f} px" in card
    assert f"mean error (DLC's 'rmse') {t[S.ERROR_PX].mean():.2f} px" in card
    pck5 = (t[S.ERROR_PX] <= 5).mean()
    assert f"{100 * pck5:.1f} %" in _text(_section(page, "summary-test-pck"))
    verdict = _text(_section(page, "summary-verdict"))
    assert "metric validation: FAILED (1 of 1 expectations failed: test_rmse_max)" in verdict
    assert "dataset validation: passed (1/1 expectations)" in verdict
    assert "overfitting" in _text(_section(page, "summary-diagnosis"))
    # the three worst strata, recomputed from the errors table
    worst = []
    for cols in ([S.BODYPART], [S.CONDITION], [S.ANIMAL], [S.SESSION], [S.VIDEO],
                 [S.BODYPART, S.CONDITION]):
        g = t.groupby(cols)[S.ERROR_PX].agg(["size", _rmse])
        g = g[g["size"] >= 3].sort_values("_rmse", ascending=False)
        key = g.index[0] if len(cols) > 1 else (g.index[0],)
        worst.append((float(g["_rmse"].iloc[0]), " × ".join(map(str, key)),
                      " × ".join(cols)))
    candidates = {f"{name} ({kind}): RMSE {rmse:.2f} px": rmse for rmse, name, kind in worst}
    items = re.findall(r"<li>(.*?)</li>", _section(page, "summary-worst"), re.S)
    shown = [_text(i).split(" (", 1)[0] + " (" + _text(i).split(" (", 1)[1].split(" px")[0]
             + " px" for i in items]
    assert all(s in candidates for s in shown), (shown, candidates)
    # the three largest (ties, e.g. the only high_dose test video and high_dose, in any order)
    assert [round(candidates[s], 6) for s in shown] == [
        round(r, 6) for r in sorted(candidates.values(), reverse=True)[:3]]
    steps = _text(_section(page, "summary-next"))
    assert "test_rmse_max" in steps and D.ACTIONS[D.OVERFITTING][0] in steps
    assert summary.count("<li>") <= 3 + 4


def test_numbers_are_read_not_dumped(inputs, tmp_path):
    """Pixels with 2 decimals, shares as %; composition.csv read back as the command reads it
    (a mixed column: numbers as text) shows no 16-digit floats."""
    from support.report import report_inputs

    inp = report_inputs(tmp_path / "p", composition_metrics=True)
    path = tmp_path / "composition.csv"
    inp.composition.to_csv(path, index=False)
    inp.composition = pd.read_csv(path)
    assert inp.composition["value"].astype(str).str.contains(r"\.\d{6,}").any()  # the raw CSV
    page = build_html(inp, example_n=0)
    parser = _Tables()
    parser.feed(page)
    for name, cells in parser.tables.items():
        long_floats = [c for c in cells if re.fullmatch(r"-?\d+\.\d{4,}", c.strip())]
        assert not long_floats, f"table {name}: {long_floats[:3]}"
    t = _test_errors(inp.errors)
    more = parser.tables["headline-more"]  # metric | one column per split
    splits = more[1:1 + sum(s in inp.headline for s in S.SPLITS)]
    assert more[0] == "metric" and splits == [S.TRAIN, S.VAL, S.TEST]
    i = more.index("pck_5px")
    assert more[i + 1 + splits.index(S.TEST)] == f"{100 * (t[S.ERROR_PX] <= 5).mean():.1f} %"
    cells = parser.tables["headline"]
    assert f"{_rmse(t[S.ERROR_PX]):.2f}" in cells


def test_composition_as_compact_pivots(tmp_path):
    """Frames per video x split and per condition x split (counted from the split table), and
    labeler agreement as a symmetric matrix (mean distance recomputed from the labelers'
    labels)."""
    from support.report import SCORERS, report_inputs, three_labelers
    from support.tables import synthetic_tables

    inp = report_inputs(tmp_path, composition_metrics=True)
    labels, _, split = synthetic_tables()
    parser = _Tables()
    parser.feed(build_html(inp, example_n=0))
    per_video = parser.tables["frames-per-video"]
    assert per_video[:5] == [S.VIDEO, S.TRAIN, S.VAL, S.TEST, "total"]
    rows = {r[0]: r[1:] for r in (per_video[i:i + 5] for i in range(5, len(per_video), 5))}
    counts = split.groupby([S.VIDEO, S.SPLIT]).size().unstack(fill_value=0)
    for video, c in counts.iterrows():
        assert rows[video] == [str(c.get(s, 0)) for s in (S.TRAIN, S.VAL, S.TEST)] + [
            str(c.sum())]
    assert rows["total"][-1] == str(len(split))
    per_cond = parser.tables["frames-per-condition"]
    cond = split.merge(labels[[S.IMAGE, S.CONDITION]].drop_duplicates(), on=S.IMAGE)
    n = cond.groupby([S.CONDITION, S.SPLIT]).size()
    for (c, s), k in n.items():
        row = per_cond[per_cond.index(c):per_cond.index(c) + 5]
        assert row[1 + [S.TRAIN, S.VAL, S.TEST].index(s)] == str(k)
    # labeler agreement: mean Euclidean distance between two scorers' same keypoints
    lab = three_labelers(labels).set_index([S.IMAGE, S.BODYPART, S.SCORER])[[S.X, S.Y]]
    matrix = parser.tables["labeler-agreement"]
    assert matrix[1:4] == list(SCORERS)
    for i, a in enumerate(SCORERS):
        for j, b in enumerate(SCORERS):
            cell = matrix[4 + 4 * i + 1 + j]
            if a == b:
                assert cell == "NaN"
                continue
            pa = lab.xs(a, level=S.SCORER)
            pb = lab.xs(b, level=S.SCORER)
            d = np.hypot(pa[S.X] - pb[S.X], pa[S.Y] - pb[S.Y]).dropna()
            assert cell == f"{d.mean():.2f}", (a, b)


def test_training_table_says_the_key_metric_is_validation(inputs):
    """DLC calls the frames it selects the snapshot on 'test': poseops gives it the val split."""
    inputs.training = {"net type": "cspnext_s", "key metric": "test.rmse"}
    parser = _Tables()
    parser.feed(build_html(inputs, example_n=0))
    cells = parser.tables["training"]
    value = cells[cells.index("key metric") + 1]
    assert value.startswith("test.rmse") and "validation frames" in value
    assert "val split chose the snapshot" in value


def _stage_outputs(inp: ReportInputs, root: Path, extra_headline: dict | None = None) -> Path:
    """What evaluate / composition / validate-report leave on disk for `poseops report`, and a
    params.yaml naming them (report.log_mlflow off); returns the params file."""
    import json

    import yaml

    ev = root / "eval"
    ev.mkdir(parents=True)
    headline = {**inp.headline, **(extra_headline or {})}
    (ev / "summary.json").write_text(json.dumps({"headline": headline, "pcutoff": 0.6}))
    inp.errors.to_parquet(ev / "errors.parquet")
    inp.stratified.to_csv(ev / "stratified.csv", index=False)
    (ev / "diagnosis.json").write_text(json.dumps(inp.diagnosis))
    reports = root / "reports"
    params = {
        "evaluate": {"out": str(ev), "plots": str(root / "plots")},
        "composition": {"metrics": str(root / "composition.json"),
                        "table": str(root / "composition.csv")},
        "validate_report": {"out": str(root / "report.json")},
        "validate": {"out": str(root / "dataset.json")},
        "train": {"workdir": str(root / "train")},
        "report": {"out": str(reports / "report.html"), "log_mlflow": False,
                   "iterations": str(reports / "iterations.csv"),
                   "behaviour": str(reports / "behaviour"),
                   "ablation": str(reports / "ablation")},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_optional_sections_render_when_their_inputs_exist(inputs, tmp_path, capsys):
    """Iterations (reports/iterations.csv), trajectories and behaviour (reports/behaviour/:
    summary.json, PNGs, CSVs), generalisation cohorts (``cohort:<name>`` headline entries): shown
    when present, through `poseops report`; absent, the page has none of them."""
    import json

    from PIL import Image

    from poseops import cli

    test_rmse = inputs.headline[S.TEST]["rmse_px"]
    params = _stage_outputs(inputs, tmp_path, {"cohort:new_animal": {
        "n": 40.0, "rmse_px": 4.0, "mean_px": 3.5, "pck_5px": 0.75}})
    reports = tmp_path / "reports"
    assert cli.main(["report", "--params", str(params)]) == 0
    page = (reports / "report.html").read_text()
    for heading in ("Iterations", "Trajectories and behaviour", "Ablation"):
        assert f"<h2>{heading}</h2>" not in page
    parser = _Tables()
    parser.feed(page)
    cohorts = parser.tables["cohorts"]
    row = cohorts[cohorts.index("new_animal"):]
    drop = 100 * (4.0 - test_rmse) / test_rmse
    assert row[1:4] == ["40", "4.00", "3.50"] and f"{drop:.1f} %" in row

    beh = reports / "behaviour"
    beh.mkdir(parents=True)
    (beh / "summary.json").write_text(json.dumps({"distance_px": {"m1-s1": 1234.56789},
                                                  "videos": 2}))
    Image.new("RGB", (40, 30), (200, 30, 30)).save(beh / "speed.png")
    pd.DataFrame({"video": ["m1-s1", "m2-s1"], "speed_px_s": [12.3456, 7.0]}).to_csv(
        beh / "behaviour.csv", index=False)
    pd.DataFrame({"iteration": [0, 1, 2], "test_rmse_px": [3.14159, 2.71828, 2.5],
                  "frames_added": [0, 20, 10]}).to_csv(reports / "iterations.csv", index=False)
    assert cli.main(["report", "--params", str(params)]) == 0
    page = (reports / "report.html").read_text()
    assert "<h2>Trajectories and behaviour</h2>" in page and "<h2>Iterations</h2>" in page
    png = base64.b64encode((beh / "speed.png").read_bytes()).decode()
    assert f"data:image/png;base64,{png}" in page  # the stage's figure, byte for byte
    parser = _Tables()
    parser.feed(page)
    summary = parser.tables["behaviour-summary"]
    assert summary[summary.index("distance_px.m1-s1") + 1] == "1234.57"
    assert "behaviour.csv (2 rows)" in page and "12.3456" not in page
    its = parser.tables["iterations"]
    assert its[:3] == ["iteration", "test_rmse_px", "frames_added"]
    assert its[3:6] == ["0", "3.14", "0"] and its[6:9] == ["1", "2.72", "20"]
    # error by bodypart / condition (no plots folder: no loss or PCK curve, no project: no
    # frames) + the iterations figure + the behaviour PNG
    assert page.count("data:image/png") == 2 + 1 + 1

    (beh / "summary.json").write_text("{not json")
    capsys.readouterr()
    assert cli.main(["report", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(beh / "summary.json") in err
