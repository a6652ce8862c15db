"""The report shows `poseops compare --trajectories` (issue 23): under "Trajectories and
behaviour", the reference point's jitter per video before (baseline model) and after (candidate)
with the video's condition, the paired test over videos and a before/after figure, read from
compare's output folder (``compare.out``) by `poseops report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.report import report_inputs

from poseops import cli

VIDEOS = [f"m{i}-s1" for i in range(1, 7)]
CONDITION = ["vehicle", "vehicle", "vehicle", "drug", "drug", "drug"]
BEFORE = np.array([3.104, 2.5, 4.0, 3.5, 2.0, 5.0])
AFTER = np.array([2.116, 2.1, 2.0, 2.6, 1.8, 2.5])


def _quality(jitter: np.ndarray) -> pd.DataFrame:
    """A behaviour video_quality.csv: video x bodypart x filtered (filtered: half the jitter)."""
    rows = [{"video": v, "bodypart": bp, "filtered": filt, "n_frames": 90,
             "jitter_px": jitter[i] / (2 if filt else 1) + (bp == "snout"), "jump_rate": 0.01 * i,
             "low_likelihood_share": 0.02 * i, "longest_low_run": i, "mean_likelihood": 0.9,
             "condition": CONDITION[i]}
            for i, v in enumerate(VIDEOS) for bp in ("snout", "centroid") for filt in (False, True)]
    return pd.DataFrame(rows)


def _stage_outputs(root: Path) -> Path:
    """evaluate's outputs for `poseops report` and a params.yaml naming them + compare.out."""
    inp = report_inputs(root)
    ev = root / "eval"
    ev.mkdir(parents=True)
    (ev / "summary.json").write_text(json.dumps({"headline": inp.headline, "pcutoff": 0.6}))
    inp.errors.to_parquet(ev / "errors.parquet")
    inp.stratified.to_csv(ev / "stratified.csv", index=False)
    (ev / "diagnosis.json").write_text(json.dumps(inp.diagnosis))
    reports = root / "reports"
    params = {"evaluate": {"out": str(ev), "plots": str(root / "plots")},
              "composition": {"metrics": str(root / "c.json"), "table": str(root / "c.csv")},
              "validate_report": {"out": str(root / "r.json")},
              "validate": {"out": str(root / "d.json")}, "train": {"workdir": str(root / "t")},
              "compare": {"out": str(reports / "compare"), "n_boot": 300, "log_mlflow": False,
                          "gate": False, "history": ""},
              "report": {"out": str(reports / "report.html"), "log_mlflow": False,
                         "iterations": str(reports / "iterations.csv"),
                         "behaviour": str(reports / "behaviour"),
                         "ablation": str(reports / "ablation")}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"


def _cells(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert body, table_id
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)
            for r in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def test_report_shows_compare_trajectories_per_video_and_the_paired_test(tmp_path: Path) -> None:
    from support.tables import compare_errors

    params = _stage_outputs(tmp_path)
    reports = tmp_path / "reports"
    assert cli.main(["report", "--params", str(params)]) == 0
    assert "Trajectories and behaviour" not in (reports / "report.html").read_text()
    # compare --trajectories on two behaviour outputs (baseline, candidate)
    e0 = compare_errors(0, {}, 40, 8)
    e0.to_parquet(tmp_path / "e0.parquet")
    e0.assign(error_px=e0.error_px * 0.8).to_parquet(tmp_path / "e1.parquet")
    _quality(BEFORE).to_csv(tmp_path / "base.csv", index=False)
    _quality(AFTER).to_csv(tmp_path / "cand.csv", index=False)
    assert cli.main(["compare", str(tmp_path / "e0.parquet"), str(tmp_path / "e1.parquet"),
                     "--params", str(params), "--no-mlflow", "--trajectories",
                     str(tmp_path / "base.csv"), str(tmp_path / "cand.csv")]) == 0
    assert cli.main(["report", "--params", str(params)]) == 0
    page = (reports / "report.html").read_text()
    assert "<h2>Trajectories and behaviour</h2>" in page
    assert "Did refinement make trajectories steadier?" in page
    # per video: condition, raw jitter before / after / difference as constructed above
    rows = _cells(page, "trajectories-videos")
    head, body = rows[0], rows[1:]
    assert head[:3] == ["video", "condition", "filtered"]
    raw = {r[0]: r for r in body if r[2] == "raw"}
    filt = {r[0]: r for r in body if r[2] == "filtered"}
    assert sorted(raw) == sorted(filt) == VIDEOS
    for i, v in enumerate(VIDEOS):
        assert raw[v][1] == CONDITION[i]
        assert raw[v][3:6] == [f"{BEFORE[i]:.2f}", f"{AFTER[i]:.2f}",
                               f"{AFTER[i] - BEFORE[i]:.2f}"]
        assert filt[v][3:5] == [f"{BEFORE[i] / 2:.2f}", f"{AFTER[i] / 2:.2f}"]
    # the paired test: the numbers of compare's trajectories.csv (centroid, raw jitter first)
    tests = pd.read_csv(reports / "compare" / "trajectories.csv")
    r = tests[(tests.bodypart == "centroid") & ~tests.filtered
              & (tests.metric == "jitter_px")].iloc[0]
    assert r.median_diff == pytest.approx(np.median(AFTER - BEFORE))
    trows = _cells(page, "trajectories-tests")
    assert trows[0][:3] == ["metric", "filtered", "n_videos"]
    got = next(t for t in trows[1:] if t[:2] == ["jitter_px", "raw"])
    assert got[2] == "6" and got[-1] == r.status == "steadier"
    assert got[3:8] == [f"{r.median_baseline:.3f}", f"{r.median_candidate:.3f}",
                        f"{r.median_diff:.3f}", f"{r.ci_low:.3f}", f"{r.ci_high:.3f}"]
    assert got[8] == f"{r.wilcoxon_p:.3f}" and got[9] == f"{r.rank_biserial:.3f}"
    assert len(trows) == 1 + 2 * 4  # the centroid's 4 metrics, raw and filtered
    # the before/after figure beside the table
    assert re.search(r'<img alt="Jitter per video, before -&gt; after" '
                     r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)
