"""behaviour on multi-animal projects, per tracked individual (issue 23).

DLC's tracked output (``analyze_videos(auto_track=True)``: tracklets + stitching ->
``<video><scorer>_el.h5``, columns scorer/individuals/bodyparts/coords, written by DLC's
``TrackletStitcher.write_tracks`` under the key ``tracks``) is built here with the writer call DLC
makes, from paths of known geometry per individual (circles and straight lines); distance, time
in the centre, entries and jitter are computed in the test from that geometry. Untracked
assemblies and a manual scoring without individuals are refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops.cli import main
from poseops.config.behaviour import BehaviourParams

SCORER = "DLC_CspnextS_maJan1shuffle1_snapshot_002"
BPS = ["nose", "body", "tail"]
OFFSETS = {"nose": (5.0, 1.0), "body": (0.0, -2.0), "tail": (-5.0, 1.0)}  # mean (0, 0)
N, FPS, PX_PER_CM = 80, 10.0, 2.0
ARENA = (0.0, 0.0, 160.0, 120.0)  # centre zone (fraction 0.5): 40 <= x <= 120, 30 <= y <= 90
UNTRACKED = 10  # v1/mouse1 is not tracked in frames 0..9 (NaN, as DLC leaves them)
DELTA = 2 * np.pi / N  # the circles' angle per frame


def _circle(r: float) -> np.ndarray:
    a = DELTA * np.arange(N)
    return np.column_stack([80 + r * np.cos(a), 60 + r * np.sin(a)])


def _line(y: float, speed: float) -> np.ndarray:
    return np.column_stack([speed * np.arange(N), np.full(N, y)])


# the true centroid path of each individual, per video
PATHS = {"v1": {"mouse1": _circle(20.0), "mouse2": _line(60.0, 2.0)},
         "v2": {"mouse1": _line(10.0, 1.0), "mouse2": _circle(40.0)}}


def _write_tracked_h5(video: str, folder: Path) -> Path:
    """DLC's tracked file of ``video``: TrackletStitcher.format_df's layout (individuals x
    bodyparts x coords from a product, unique bodyparts joined under ``single``) written with
    write_tracks' call."""
    coords = ["x", "y", "likelihood"]
    names = ["scorer", "individuals", "bodyparts", "coords"]
    inds = list(PATHS[video])
    cols = pd.MultiIndex.from_product([[SCORER], inds, BPS, coords], names=names)
    data = np.empty((N, len(cols)))
    for i, ind in enumerate(inds):
        for j, bp in enumerate(BPS):
            k = (i * len(BPS) + j) * 3
            data[:, k:k + 2] = PATHS[video][ind] + OFFSETS[bp]
            data[:, k + 2] = 0.9
    df = pd.DataFrame(data, columns=cols, index=range(N))
    if video == "v1":  # mouse1 not tracked at first
        df.loc[:UNTRACKED - 1, (SCORER, "mouse1")] = np.nan
    single = pd.DataFrame(np.tile([150.0, 110.0, 0.95], (N, 1)), index=range(N),
                          columns=pd.MultiIndex.from_product([[SCORER], ["single"], ["marker"],
                                                              coords], names=names))
    df = df.join(single, how="outer")
    out = folder / f"{video}{SCORER}_el.h5"
    df.to_hdf(out, key="tracks", format="table", mode="w")
    return out


def _tidy(video: str) -> pd.DataFrame:
    """The same predictions as a tidy per-individual table (what ``analyze.track: true``
    writes), built from the paths directly."""
    rows = []
    for ind, xy in PATHS[video].items():
        for bp in BPS:
            for f in range(N):
                gone = video == "v1" and ind == "mouse1" and f < UNTRACKED
                x, y = (np.nan, np.nan) if gone else xy[f] + OFFSETS[bp]
                rows.append({"video": video, "frame": f, "individual": ind, "bodypart": bp,
                             "x": x, "y": y, "likelihood": np.nan if gone else 0.9})
    rows += [{"video": video, "frame": f, "individual": "single", "bodypart": "marker",
              "x": 150.0, "y": 110.0, "likelihood": 0.95} for f in range(N)]
    return pd.DataFrame(rows).assign(scorer=SCORER)


def _analyzed(folder: Path, tidy: bool) -> Path:
    """The analyze folder: DLC's tracked files + predictions.parquet, either untracked
    assemblies (``tidy`` False: behaviour finds the tracked files) or the tidy per-individual
    table."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for v in PATHS:
        _write_tracked_h5(v, folder)
        p = _tidy(v)
        if not tidy:  # what an untracked analysis gives: assemblies, no identity
            p = p.drop(columns="individual").assign(assembly=0)
        parts.append(p.assign(video_path=f"{v}.mp4"))
    pd.concat(parts, ignore_index=True).to_parquet(folder / "predictions.parquet")
    return folder


def _inputs(tmp: Path, with_individual: bool = True) -> dict[str, str]:
    meta = pd.DataFrame({"video": ["v1", "v2"], "animal": ["a1", "a2"], "session": ["s1", "s1"],
                         "condition": ["saline", "drug"], "dose": [0.0, 1.0],
                         "camera": ["c", "c"]})
    meta.to_csv(tmp / "meta.csv", index=False)
    x0, y0, x1, y1 = ARENA
    pd.DataFrame([{"video": "", "shape": "rectangle", "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                   "px_per_cm": PX_PER_CM, "fps": FPS}]).to_csv(tmp / "arena.csv", index=False)
    rows = [{"video": v, "individual": ind, "frame": f, "x": xy[f, 0], "y": xy[f, 1]}
            for v, inds in PATHS.items() for ind, xy in inds.items() for f in range(0, N, 10)]
    man = pd.DataFrame(rows)
    if not with_individual:
        man = man[man["individual"] == "mouse1"].drop(columns="individual")
    man.to_csv(tmp / "manual.csv", index=False)
    return {"meta": str(tmp / "meta.csv"), "arena": str(tmp / "arena.csv"),
            "manual": str(tmp / "manual.csv")}


def _params(tmp: Path, analyzed: Path, files: dict[str, str], **over) -> Path:
    beh = {"analyzed": str(analyzed), "filter": None, "arena": files["arena"],
           "manual": files["manual"], "out": str(tmp / "out"), "workdir": str(tmp / "work"),
           "log_mlflow": False, "n_boot": 200, "reference": BPS}
    beh.update(over)
    doc = {"project": {"metadata": files["meta"]},
           "analyze": {"train_workdir": str(tmp / "no_train")}, "behaviour": beh}
    f = tmp / "params.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


def _expected(video: str, ind: str) -> dict[str, float]:
    """Endpoints from the geometry: chords of a circle, a straight line's length, the samples
    inside the centre zone (each dwells 1 / fps)."""
    xy = PATHS[video][ind]
    first = UNTRACKED if (video, ind) == ("v1", "mouse1") else 0
    xy = xy[first:]
    n_steps = len(xy) - 1
    r = float(np.hypot(*(xy[0] - (80, 60))))
    if ind == ("mouse1" if video == "v1" else "mouse2"):  # a circle about (80, 60)
        dist_px = n_steps * 2 * r * np.sin(DELTA / 2)
    else:  # a straight line
        dist_px = float(np.hypot(*(xy[-1] - xy[0])))
    centre = (np.abs(xy[:, 0] - 80) <= 40) & (np.abs(xy[:, 1] - 60) <= 30)
    return {"distance_cm": dist_px / PX_PER_CM, "duration_s": n_steps / FPS,
            "centre_s": centre.sum() / FPS, "periphery_s": (~centre).sum() / FPS,
            "centre_entries": float(np.sum(~centre[:-1] & centre[1:]))}


@pytest.mark.parametrize("tidy", [False, True], ids=["dlc-tracked-h5", "tidy-individual-table"])
def test_endpoints_quality_and_agreement_per_tracked_individual(tmp_path: Path, tidy: bool) -> None:
    analyzed = _analyzed(tmp_path / "analyze", tidy)
    files = _inputs(tmp_path)
    assert main(["behaviour", "--params", str(_params(tmp_path, analyzed, files)),
                 "--no-mlflow"]) == 0
    out = tmp_path / "out"
    beh = pd.read_csv(out / "behaviour.csv")
    assert "individual" in beh.columns
    model = beh[beh["source"] == "model"].set_index(["video", "individual"])
    assert sorted(model.index) == [(v, i) for v in PATHS for i in PATHS[v]]  # no 'single' track
    for (v, ind), exp in ((k, _expected(*k)) for k in model.index):
        for e, val in exp.items():
            assert model.at[(v, ind), e] == pytest.approx(val, rel=1e-9, abs=1e-9), (v, ind, e)
    assert (model["condition"].to_dict() == {("v1", "mouse1"): "saline", ("v1", "mouse2"):
            "saline", ("v2", "mouse1"): "drug", ("v2", "mouse2"): "drug"})
    # quality per individual: a circle's |2nd difference| is the chord's turn 2r(1 - cos delta),
    # a line's is 0; v1/mouse1's untracked frames are low-likelihood frames
    q = pd.read_csv(out / "video_quality.csv")
    c = q[q["bodypart"] == "centroid"].set_index(["video", "individual"])
    assert c.at[("v1", "mouse1"), "jitter_px"] == pytest.approx(2 * 20 * (1 - np.cos(DELTA)))
    assert c.at[("v2", "mouse2"), "jitter_px"] == pytest.approx(2 * 40 * (1 - np.cos(DELTA)))
    assert c.at[("v1", "mouse2"), "jitter_px"] == pytest.approx(0, abs=1e-9)
    assert c.at[("v1", "mouse1"), "low_likelihood_share"] == pytest.approx(UNTRACKED / N)
    assert c.at[("v1", "mouse1"), "longest_low_run"] == UNTRACKED
    assert c.at[("v1", "mouse2"), "low_likelihood_share"] == 0
    assert ((q["individual"] == "single") & (q["bodypart"] == "marker")).sum() == 2
    # the manual scoring is aligned per individual: the model's points are exactly the scored
    # ones (a swap of the two animals would be tens of px off)
    pe = pd.read_csv(out / "position_error.csv")
    assert "individual" in pe.columns and len(pe) == 4 * N // 10
    missing = (pe["video"] == "v1") & (pe["individual"] == "mouse1") & (pe["frame"] == 0)
    assert pe.loc[missing, "error_px"].isna().all()
    assert pe.loc[~missing, "error_px"].abs().max() == pytest.approx(0, abs=1e-9)
    agr = pd.read_csv(out / "agreement.csv").set_index("endpoint")
    assert agr.at["distance_cm", "n_videos"] == 4  # 4 tracked animals are the targets
    assert agr.at["distance_cm", "icc2_1"] > 0.95  # v1/mouse1 misses its scored frame 0
    ms = beh[beh["source"] == "model_scored_frames"].set_index(["video", "individual"])
    mn = beh[beh["source"] == "manual"].set_index(["video", "individual"])
    for k in [("v1", "mouse2"), ("v2", "mouse1"), ("v2", "mouse2")]:
        assert ms.at[k, "distance_cm"] == pytest.approx(mn.at[k, "distance_cm"])
    eff = pd.read_csv(out / "effects.csv")
    assert (eff["n_control"] == 2).all() and (eff["n_condition"] == 2).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_videos"] == 2 and summary["n_tracks"] == 4
    # share of frames with both animals tracked (above pcutoff), counted by brute force
    preds = pd.concat([_tidy(v) for v in PATHS])
    pcutoff = BehaviourParams().pcutoff
    n_seen = (preds[(preds["individual"] != "single") & (preds["likelihood"] >= pcutoff)]
              .groupby(["video", "frame"])["individual"].nunique())
    want = {v: float((n_seen.reindex([(v, f) for f in range(N)], fill_value=0) == 2).mean())
            for v in PATHS}
    assert want["v1"] == pytest.approx((N - UNTRACKED) / N) and want["v2"] == 1.0
    ac = pd.read_csv(out / "animal_count.csv").set_index("video")
    assert (ac["expected_animals"] == 2).all()
    assert ac["expected_animals_share"].to_dict() == pytest.approx(want)
    assert summary["expected_animals_share"] == pytest.approx(np.mean(list(want.values())))


def test_tracked_predictions_need_a_manual_scoring_per_individual(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyzed = _analyzed(tmp_path / "analyze", tidy=True)
    files = _inputs(tmp_path, with_individual=False)
    rc = main(["behaviour", "--params", str(_params(tmp_path, analyzed, files)), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "needs an 'individual' column" in err and "manual.csv" in err
    # an individual the predictions do not have is named
    man = pd.read_csv(tmp_path / "manual.csv").assign(individual="mouse9")
    man.to_csv(tmp_path / "manual.csv", index=False)
    rc = main(["behaviour", "--params", str(_params(tmp_path, analyzed, files)), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "['mouse9']" in err


def test_untracked_assemblies_without_tracked_files_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyzed = _analyzed(tmp_path / "analyze", tidy=False)
    for h5 in analyzed.glob("*_el.h5"):
        if h5.name.startswith("v2"):
            h5.unlink()  # one video was never tracked
    rc = main(["behaviour", "--params", str(_params(tmp_path, analyzed, _inputs(tmp_path))),
               "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "untracked assemblies" in err
    assert "analyze.track: true" in err


def test_outliers_score_tracked_predictions_like_assemblies(tmp_path: Path) -> None:
    """``analyze.track: true`` predictions feed ``poseops outliers`` too: each tracked individual
    becomes the assembly of its position in DLC's (config) order, unique bodyparts -1, so the
    frame scores equal those of the same points given as untracked assemblies."""
    from poseops.refine import outliers as O

    tidy = pd.concat([_tidy(v) for v in PATHS], ignore_index=True)
    tidy.to_parquet(tmp_path / "tracked.parquet")
    got = O.read_predictions(tmp_path / "tracked.parquet", "missing")
    slots = {"mouse1": 0, "mouse2": 1, "single": -1}
    assert "individual" not in got.columns
    assert got["assembly"].tolist() == tidy["individual"].map(slots).tolist()
    untracked = tidy.assign(assembly=tidy.pop("individual").map(slots))
    pd.testing.assert_frame_equal(O.frame_scores(got), O.frame_scores(untracked))
