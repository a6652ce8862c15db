"""behaviour (issue 23): the `poseops behaviour` command on the demo's truth (no DLC: the
"analyzed" predictions are the demo's true tracks, so every number has an independent reference),
the demo's manual scoring and arena, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops.cli import main
from poseops.config.demo import BODYPARTS, DemoParams
from poseops.demo.scoring import write_behaviour_inputs


@pytest.fixture(scope="module")
def inputs(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo's manual scoring + arena (written by the demo's code) in a private folder."""
    d = tmp_path_factory.mktemp("behaviour_inputs")
    write_behaviour_inputs(demo_root / "raw" / "demo", DemoParams(), d)
    return d


def _truth(demo_root: Path) -> pd.DataFrame:
    return pd.read_csv(demo_root / "raw" / "demo" / "ground_truth_tracks.csv")


def _analyzed(tracks: pd.DataFrame, folder: Path, noise_px: float = 0.0, seed: int = 0) -> Path:
    """predictions.parquet as the analyze stage writes it, from the true tracks (+ noise)."""
    rng = np.random.default_rng(seed)
    p = tracks.assign(likelihood=0.95, scorer="DLC_test", video_path="unused.mp4")
    p["x"] = p["x"] + rng.normal(0, noise_px, len(p))
    p["y"] = p["y"] + rng.normal(0, noise_px, len(p))
    folder.mkdir(parents=True, exist_ok=True)
    p.to_parquet(folder / "predictions.parquet")
    return folder


def _params(tmp: Path, demo_root: Path, inputs: Path, analyzed: Path, **over) -> Path:
    beh = {"analyzed": str(analyzed), "filter": None, "arena": str(inputs / "arena.csv"),
           "manual": str(inputs / "manual_scoring.csv"), "out": str(tmp / "out"),
           "workdir": str(tmp / "work"), "log_mlflow": False, "n_boot": 300}
    beh.update(over)
    doc = {"project": {"metadata": str(demo_root / "metadata" / "videos.csv")},
           "analyze": {"train_workdir": str(tmp / "no_train")}, "behaviour": beh}
    f = tmp / "params.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


def test_demo_manual_scoring_is_truth_centroid_plus_scorer_noise(demo_root: Path,
                                                                 inputs: Path) -> None:
    man = pd.read_csv(inputs / "manual_scoring.csv")
    assert list(man.columns) == ["video", "frame", "x", "y"]
    assert (man["frame"] % 10 == 0).all()
    t = _truth(demo_root)
    c = t.groupby(["video", "frame"])[["x", "y"]].mean()
    assert len(man) == len(c.loc[c.index.get_level_values("frame") % 10 == 0])
    res = man.set_index(["video", "frame"]) - c.reindex(man.set_index(["video", "frame"]).index)
    sd = float(np.sqrt((res.to_numpy() ** 2).mean()))
    assert 0.8 < sd < 1.2  # 1 px per coordinate, 2 x 117 draws
    # the scorer's own random stream: regenerating gives the same file
    again = write_behaviour_inputs(demo_root / "raw" / "demo", DemoParams(),
                                   inputs.parent / "again")
    assert again[0].read_bytes() == (inputs / "manual_scoring.csv").read_bytes()


def test_demo_arena_is_the_floor_inside_the_rendered_walls(demo_root: Path, inputs: Path) -> None:
    import cv2

    arena = pd.read_csv(inputs / "arena.csv")
    meta = pd.read_csv(demo_root / "metadata" / "videos.csv")
    assert sorted(arena["video"]) == sorted(meta["video"])
    r = arena.iloc[0]
    cap = cv2.VideoCapture(str(demo_root / "raw" / "demo" / "videos" / f"{r['video']}.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(r["fps"])
    ok, frame = cap.read()
    cap.release()
    assert ok
    grey = frame.mean(axis=2)
    x0, x1, y_mid = int(r["x0"]), int(r["x1"]), int((r["y0"] + r["y1"]) / 2)
    wall, floor = grey[y_mid - 5:y_mid + 5, x0 - 3], grey[y_mid - 5:y_mid + 5, x0 + 6]
    assert wall.mean() < 0.7 * floor.mean()  # dark wall just outside x0, floor inside
    assert grey[y_mid - 5:y_mid + 5, x1 + 2].mean() < 0.7 * grey[y_mid - 5:y_mid + 5, x1 - 7].mean()
    assert r["px_per_cm"] == pytest.approx((r["x1"] - r["x0"]) / 40.0)


def test_behaviour_command_on_true_tracks(demo_root: Path, inputs: Path, tmp_path: Path) -> None:
    """Predictions = truth: distance equals the true centroid path (computed here), the effect of
    the dose on speed is positive, agreement with the manual scoring is high, position error
    ~ the scorer's noise; every output file is there."""
    truth = _truth(demo_root)
    analyzed = _analyzed(truth, tmp_path / "analyze")
    assert main(["behaviour", "--params", str(_params(tmp_path, demo_root, inputs, analyzed)),
                 "--no-mlflow"]) == 0
    out = tmp_path / "out"
    for name in ("video_quality.csv", "behaviour.csv", "agreement.csv", "effects.csv",
                 "position_error.csv", "quality.png", "trajectories.png", "bland_altman.png",
                 "effects.png", "summary.json"):
        assert (out / name).is_file(), name
    beh = pd.read_csv(out / "behaviour.csv")
    arena = pd.read_csv(inputs / "arena.csv").set_index("video")
    model = beh[beh["source"] == "model"].set_index("video")
    for video, t in truth[truth["bodypart"].isin(BODYPARTS)].groupby("video"):
        c = t.groupby("frame")[["x", "y"]].mean().to_numpy()
        path_px = np.sum(np.sqrt(np.sum(np.diff(c, axis=0) ** 2, axis=1)))
        assert model.at[video, "distance_cm"] == pytest.approx(
            path_px / arena.at[video, "px_per_cm"], rel=1e-6)
        fps = arena.at[video, "fps"]
        assert model.at[video, "duration_s"] == pytest.approx((len(c) - 1) / fps)
    assert {"condition", "dose", "animal"} <= set(beh.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agreement"]["distance_cm"]["icc2_1"] > 0.8
    assert summary["position_error_px"]["median"] < 2.5
    # a perfect model is validated for distance; immobility never happens in the demo (no verdict)
    assert summary["verdict"]["distance_cm"] == {"icc_ok": True, "effect_ok": True, "valid": True}
    assert summary["verdict"]["immobile_s"]["valid"] is None
    eff = pd.read_csv(out / "effects.csv")
    speed = eff[(eff["endpoint"] == "mean_speed_cm_s") & (eff["condition"] == "high_dose")]
    assert (speed["g_manual"] > 0).all() and (speed["g_model"] > 0).all()
    q = pd.read_csv(out / "video_quality.csv")
    assert (q["low_likelihood_share"] == 0).all()
    assert (q.loc[q["bodypart"] == "centroid", "jump_rate"] == 0).all()


def test_jitter_in_predictions_shows_in_quality_and_distance(demo_root: Path, inputs: Path,
                                                            tmp_path: Path) -> None:
    """Noisy predictions (sd 2 px): the quality table shows the jitter (sqrt(12 ln 2) x noise sd
    for a keypoint) and the distance travelled is inflated against the true tracks."""
    truth = _truth(demo_root)
    exact, noisy = tmp_path / "exact", tmp_path / "noisy"
    for name, noise in ((exact, 0.0), (noisy, 2.0)):
        a = _analyzed(truth, name / "analyze", noise_px=noise)
        assert main(["behaviour", "--params", str(_params(name, demo_root, inputs, a)),
                     "--no-mlflow"]) == 0
    q = pd.read_csv(noisy / "out" / "video_quality.csv")
    snout = q[q["bodypart"] == "snout"]["jitter_px"]
    assert snout.median() == pytest.approx(2.0 * np.sqrt(12 * np.log(2)), rel=0.2)
    d = {n: pd.read_csv(n / "out" / "behaviour.csv").query("source == 'model'")["distance_cm"]
         for n in (exact, noisy)}
    assert (d[noisy].to_numpy() > d[exact].to_numpy()).all()


def test_a_poor_model_fails_the_verdict(demo_root: Path, inputs: Path, tmp_path: Path) -> None:
    """Predictions 8 px off (sd per coordinate, a model after one epoch is ~14 px off): the
    distance no longer agrees with the manual scoring, and the verdict says so."""
    a = _analyzed(_truth(demo_root), tmp_path / "analyze", noise_px=8.0)
    assert main(["behaviour", "--params", str(_params(tmp_path, demo_root, inputs, a)),
                 "--no-mlflow"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["agreement"]["distance_cm"]["icc2_1_lo"] < 0.75
    assert summary["verdict"]["distance_cm"]["valid"] is False
    assert summary["position_error_px"]["median"] > 3.0


def _run_cli(params: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["behaviour", "--params", str(params), "--no-mlflow"])
    return rc, capsys.readouterr().err.strip()


def test_bad_manual_scoring_is_one_line_naming_file_and_row(
        demo_root: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyzed = _analyzed(_truth(demo_root), tmp_path / "analyze")
    bad = tmp_path / "boris.csv"
    bad.write_text("video,frame,x,y\nm1-s1.mp4,0,10.0,20.0\nm1-s1.mp4,10,ten,20.0\n")
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, manual=str(bad)), capsys)
    assert rc == 2 and "\n" not in err
    assert f"{bad}, row 3" in err and "'x'" in err
    bad.write_text("video,frame,X,Y\nm1-s1,0,10.0,20.0\n")
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, manual=str(bad)), capsys)
    assert rc == 2 and "missing column(s) ['x', 'y']" in err


def test_missing_units_and_bad_filter_are_one_line_errors(
        demo_root: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyzed = _analyzed(_truth(demo_root), tmp_path / "analyze")
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, arena=None), capsys)
    assert rc == 2 and "no fps for video" in err and "behaviour.fps" in err
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, arena=None, fps=30,
                               px_per_cm=3.5, manual=None), capsys)
    assert rc == 0  # units from params, no arena: zone endpoints empty, no agreement files
    beh = pd.read_csv(tmp_path / "out" / "behaviour.csv")
    assert beh["centre_s"].isna().all() and not (tmp_path / "out" / "agreement.csv").exists()
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, filter="kalman"), capsys)
    assert rc == 2 and "behaviour.filter must be one of ['median', 'arima', 'spline']" in err
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed, control="placebo"), capsys)
    assert rc == 2 and "behaviour.control 'placebo' is not a condition" in err


def test_untracked_multi_animal_predictions_are_refused(
        demo_root: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyzed = _analyzed(_truth(demo_root).assign(assembly=0), tmp_path / "analyze")
    rc, err = _run_cli(_params(tmp_path, demo_root, inputs, analyzed), capsys)
    assert rc == 2 and "\n" not in err and "untracked assemblies" in err


def test_tables_figures_and_metrics_land_on_the_models_mlflow_run(
        demo_root: Path, inputs: Path, tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("tests").experiment_id
    run_id = client.create_run(exp, run_name="train").info.run_id
    train = tmp_path / "train"
    train.mkdir()
    (train / "run.json").write_text(json.dumps({"run_id": run_id}))
    analyzed = _analyzed(_truth(demo_root), tmp_path / "analyze")
    params = _params(tmp_path, demo_root, inputs, analyzed, log_mlflow=True)
    doc = yaml.safe_load(params.read_text())
    doc["analyze"]["train_workdir"] = str(train)
    params.write_text(yaml.safe_dump(doc))
    assert main(["behaviour", "--params", str(params)]) == 0
    arts = {a.path for a in client.list_artifacts(run_id, "behaviour")}
    assert {"behaviour/summary.json", "behaviour/agreement.csv", "behaviour/effects.csv",
            "behaviour/bland_altman.png", "behaviour/video_quality.csv"} <= arts
    run = client.get_run(run_id)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert run.data.metrics["behaviour.distance_cm.icc2_1"] == pytest.approx(
        summary["agreement"]["distance_cm"]["icc2_1"])
    assert run.data.tags["behaviour.filter"] == "None"
