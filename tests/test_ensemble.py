"""Issue 24 item 3: seed-ensemble disagreement, on constructed predictions whose variance is
known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poseops.core.errors import PoseopsError
from poseops.refine.ensemble import ensemble_disagreement, frame_disagreement


def _members(offsets: dict[str, list[tuple[float, float]]]) -> dict[str, pd.DataFrame]:
    """Members predicting two images x two bodyparts at a base position + their offset."""
    keys = [("labeled-data/v1/img001.png", "snout"), ("labeled-data/v1/img001.png", "tailbase"),
            ("labeled-data/v2/img007.png", "snout"), ("labeled-data/v2/img007.png", "tailbase")]
    out = {}
    for name, offs in offsets.items():
        out[name] = pd.DataFrame([{"image": i, "bodypart": b, "x": 50.0 + k + dx, "y": 20.0 + dy,
                                   "likelihood": 0.9} for k, ((i, b), (dx, dy))
                                  in enumerate(zip(keys, offs, strict=True))])
    return out


def test_disagreement_is_the_variance_of_positions_across_members() -> None:
    # keypoint 0: x at -2, 0, +2 -> var_x = 8/3, var_y = 0; keypoint 1: all agree -> 0;
    # keypoint 2: a 3-4-5 triangle around the mean; keypoint 3: one member far off in y
    offs = {"s0": [(-2, 0), (1, 1), (3, 4), (0, 0)],
            "s1": [(0, 0), (1, 1), (-3, -4), (0, 0)],
            "s2": [(2, 0), (1, 1), (0, 0), (0, 30)]}
    got = ensemble_disagreement(_members(offs)).set_index(["image", "bodypart"])
    stacked = np.array(list(offs.values()), float)  # (members, keypoints, xy)
    want = stacked.var(axis=0, ddof=0).sum(axis=1)  # mean squared distance to the mean position
    np.testing.assert_allclose(got["variance_px2"].to_numpy(), want)
    np.testing.assert_allclose(got["variance_px2"].iloc[0], 8 / 3)
    np.testing.assert_allclose(got["variance_px2"].iloc[2], 50 / 3)
    np.testing.assert_allclose(got["sd_px"].to_numpy(), np.sqrt(want))
    assert (got["n_members"] == 3).all()
    frames = frame_disagreement(got.reset_index()).set_index("image")
    assert frames.loc["labeled-data/v1/img001.png", "max_sd_px"] == pytest.approx(np.sqrt(8 / 3))
    assert frames.loc["labeled-data/v2/img007.png", "max_sd_px"] == pytest.approx(np.sqrt(want[3]))


def test_missing_predictions_and_bad_inputs() -> None:
    m = _members({"a": [(0, 0)] * 4, "b": [(4, 0)] * 4})
    m["b"].loc[0, "x"] = np.nan  # one member lost keypoint 0: no variance from one member
    got = ensemble_disagreement(m)
    assert got.loc[0, "n_members"] == 1 and np.isnan(got.loc[0, "variance_px2"])
    np.testing.assert_allclose(got.loc[1:, "variance_px2"], 4.0)  # (+-2)^2
    with pytest.raises(PoseopsError, match="2 members"):
        ensemble_disagreement({"a": m["a"]})
    with pytest.raises(PoseopsError, match="unordered"):
        ensemble_disagreement({k: v.assign(assembly=0) for k, v in m.items()})
    with pytest.raises(PoseopsError, match="twice"):
        ensemble_disagreement({"a": pd.concat([m["a"], m["a"]]), "b": m["b"]})


# ------------------------------------------- analyzing with a chosen member's model (item 2)
def test_analyze_model_dir_uses_that_trainings_run_json(demo_src, tmp_path, capsys) -> None:
    """`poseops analyze --model-dir DIR`: the model named by DIR/run.json (config + shuffle), not
    params.yaml's analyze.train_workdir / config: a member without snapshots is named in one line."""
    import json

    from poseops.cli import main

    project, _ = demo_src
    member = tmp_path / "runs" / "current-1"
    member.mkdir(parents=True)
    (member / "run.json").write_text(json.dumps({"config_path": str(project / "config.yaml"),
                                                 "shuffle": 7}))
    params = tmp_path / "params.yaml"
    params.write_text(f"analyze:\n  train_workdir: {tmp_path / 'nowhere'}\n"
                      f"  config: {tmp_path / 'other' / 'config.yaml'}\n  shuffle: 1\n")
    before = params.read_bytes()
    video = str(project / "videos" / "m1-s4.mp4")
    assert main(["analyze", video, "--model-dir", str(member), "--out", str(tmp_path / "o"),
                 "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no snapshot-*.pt for shuffle 7" in err
    assert str(project / "dlc-models-pytorch") in err
    assert main(["analyze", video, "--model-dir", str(tmp_path / "gone"), "--params",
                 str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trained model" in err and str(tmp_path / "gone" / "run.json") in err
    assert params.read_bytes() == before


@pytest.mark.slow
def test_members_analyzed_into_their_own_folders_feed_outliers_ensemble(
        trained_demo, demo_root, tmp_path) -> None:
    """Two members analyzed by `poseops analyze --model-dir W --out D` (params.yaml untouched,
    its analyze.out never written), then `poseops outliers --ensemble D2/predictions.parquet`:
    DLC's own .h5 lies in each folder, and the same model twice disagrees by exactly 0 px
    (p_bound above 1 makes every frame a candidate by likelihood, so outliers has frames to
    score)."""
    from poseops.cli import main

    project = demo_root / "raw" / "demo"
    video = project / "videos" / "m1-s4.mp4"
    params = tmp_path / "params.yaml"
    params.write_text(
        f"analyze:\n  train_workdir: {tmp_path / 'nowhere'}\n  out: {tmp_path / 'default'}\n"
        f"outliers:\n  write_frames: false\n  p_bound: 1.01\n  epsilon: 1.0e9\n"
        f"  uncertain_fraction: 0.0\n  manifest: {tmp_path / 'out' / 'manifest.csv'}\n"
        f"merge:\n  pending: {tmp_path / 'pending.csv'}\n")
    before = params.read_bytes()
    outs = [tmp_path / "seed0", tmp_path / "seed1"]
    for out in outs:
        assert main(["analyze", str(video), "--model-dir", str(trained_demo.workdir), "--out",
                     str(out), "--params", str(params)]) == 0
    assert params.read_bytes() == before and not (tmp_path / "default").exists()
    preds = [pd.read_parquet(o / "predictions.parquet") for o in outs]
    h5 = list(outs[0].glob("m1-s4DLC*.h5"))
    assert len(h5) == 1
    raw = pd.read_hdf(h5[0], "df_with_missing")
    assert preds[0]["frame"].nunique() == len(raw)  # every frame of the video, from DLC's file
    snout = raw.xs(("snout", "x"), axis=1, level=("bodyparts", "coords")).iloc[:, 0].to_numpy()
    got = preds[0][preds[0]["bodypart"] == "snout"].sort_values("frame")["x"].to_numpy()
    np.testing.assert_allclose(got, snout)
    assert main(["outliers", "--project", str(project), "--metadata",
                 str(demo_root / "metadata" / "videos.csv"), "--predictions",
                 str(outs[0] / "predictions.parquet"), "--ensemble",
                 str(outs[1] / "predictions.parquet"), "--params", str(params)]) == 0
    scores = pd.read_csv(tmp_path / "out" / "frame_scores.csv")
    assert len(scores) == len(raw) and (scores["ensemble_sd_px"] == 0).all()
    assert not scores["disagreement"].any()  # every frame is a candidate by likelihood only
    assert set(pd.read_csv(tmp_path / "out" / "manifest.csv")["rule"]) == {"low_likelihood"}


# ------------------------------------------------ the report's run-to-run spread (item 3)
def test_report_summary_shows_mean_and_sd_over_seeds(tmp_path) -> None:
    """With reports/ablation present, the report's first screen shows every headline number of
    the baseline arm as mean ± SD over its seeds (numpy, ddof 1) and the number of seeds; other
    arms and counts stay out of it; without the folder the line is absent."""
    import json

    from support.report import report_inputs

    from poseops.refine.ablation import seed_spread
    from poseops.report.html import build_html
    from poseops.report.sections import load_folder

    current = {"rmse_px": [3.1, 3.6, 2.9], "mean_px": [2.5, 2.9, 2.2], "pck_5px": [0.80, 0.74, 0.83],
               "n": [120, 120, 120]}
    heads = {("current", s): {k: v[s] for k, v in current.items()} for s in range(3)}
    heads |= {("occlusion", s): {"rmse_px": 9.0 + s, "mean_px": 8.0, "n": 120} for s in range(3)}
    folder = tmp_path / "reports" / "ablation"
    folder.mkdir(parents=True)
    seed_spread(heads).to_csv(folder / "spread.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"baseline": "current", "split": "test"}))

    inputs = report_inputs(tmp_path)
    assert "summary-seed-spread" not in build_html(inputs, example_n=0)
    inputs.ablation = load_folder(folder)
    page = build_html(inputs, example_n=0)
    start = page.index('id="summary-seed-spread"')
    assert start < page.index("<h2>Performance</h2>")
    line = page[start:page.index("</p>", start)]
    m = {k: (np.mean(v), np.std(v, ddof=1)) for k, v in current.items()}
    assert "over 3 seeds" in line and "current" in line
    assert f"test RMSE <b>{m['rmse_px'][0]:.2f} ± {m['rmse_px'][1]:.2f} px</b>" in line
    assert f"<b>{m['mean_px'][0]:.2f} ± {m['mean_px'][1]:.2f} px</b>" in line
    assert f"test pck 5px <b>{100 * m['pck_5px'][0]:.1f} % ± {100 * m['pck_5px'][1]:.1f} %</b>" in line
    assert "9.00" not in line and "10.00" not in line and "120" not in line
