"""Refinement rounds end to end on the small demo, with real DeepLabCut training (issue 22, done
means): iteration 0 trains and is promoted to @champion; a harmful round (the merged training
labels with snout and tailbase swapped, as a reordered bodyparts list in config.yaml does: a harm
the model learns from the image, unlike an 8 px shift of one condition, which a tiny CPU model
cannot tell apart and averages away) fails compare's gate, which names the test set's condition,
and @champion stays on iteration 0; a good round (outliers on the model's predictions of the
unlabeled video -> relabeled from the demo's known truth -> `merge --skip-unrefined` with two
frames left out -> iteration 1 warm-started from iteration 0 with `train.init: previous`) reaches
a test error no worse than iteration 0, passes the gate, and @champion moves to iteration 1's
version.

Iteration 0 is the session's shared ``small_demo_model`` (the same recipe and split; also the
trained model of test_behaviour_model.py), used through a whole copy (``copy_model``: its train
workdir and MLflow store, paths rewritten), since the rounds merge labels, train in its workdir
and move its registry alias."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.refine import relabel_from_truth
from support.shared_model import copy_model, recipe

REPO = Path(__file__).resolve().parents[1]
MODEL = recipe().registered_model  # iteration 0 (the shared model) registered it as version 1
# iteration 0 must learn (well below the ~20 px snout-tailbase distance); each round is a short
# warm-started fine-tune with fewer epochs than iteration 0. Seed 42 (tiny()'s default; CPU
# training is deterministic: two runs gave the same errors to 3 decimals): test RMSE 6.32 px at
# iteration 0, 18.16 after the harmful round, 6.15 after the good one. With seed 7 the randomly
# initialised model did not learn in 24 epochs (train loss flat), hence the check on iteration 0.
EPOCHS0, FT_EPOCHS = 24, 6
# compare.unchanged_tol_px for this test: a bodypart's or condition's mean error over the 6 test
# frames must rise by more than this to count as "worse". Two equally good tiny models differ by
# up to ~3 px on one bodypart's 6-frame mean (measured: tailbase +2.7 px while the test RMSE fell
# 2.5 %); a snout/tailbase swap moves them by ~10-20 px (the two are ~20 px apart).
TOL_PX = 5.0


# a fixed split by video: the test video has the unlabeled video's condition (vehicle), so the
# round's relabeled frames concern the condition the gate must name
TEST_VIDEO, VAL_VIDEO = "m2-s3", "m2-s2"


def _labels(project: Path, meta: Path) -> pd.DataFrame:
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project

    return build_consensus(ingest_project(project, meta))


def _split(labels: pd.DataFrame) -> pd.DataFrame:
    img = labels.drop_duplicates("image")[["image", "video"]].sort_values("image")
    split = np.where(img.video == TEST_VIDEO, "test",
                     np.where(img.video == VAL_VIDEO, "val", "train"))
    return img.assign(group=img.video, split=split).reset_index(drop=True)


def _errors(tr, labels: pd.DataFrame, split: pd.DataFrame, path: Path) -> pd.DataFrame:
    from poseops.dlc.inference import predict
    from poseops.evaluate.metrics import compute_errors

    preds = predict(tr.pytorch_config_path, tr.snapshot, tr.config_path.parent,
                    sorted(split["image"]), device="cpu")
    e = compute_errors(labels, preds, split, ["snout", "tailbase"])
    e.to_parquet(path)
    return e


def _test_rmse(e: pd.DataFrame) -> float:
    t = e[(e["split"] == "test") & np.isfinite(e["error_px"])]
    return float(np.sqrt(np.mean(t["error_px"].to_numpy() ** 2)))


def _test_mean(e: pd.DataFrame) -> float:
    return float(e.loc[e["split"] == "test", "error_px"].mean())


def _compare(tmp_path: Path, base: Path, cand: Path, run_id: str, its: tuple[int, int]) -> int:
    from poseops.cli import main

    return main(["compare", str(base), str(cand), "--candidate-run", run_id,
                 "--iterations", *map(str, its), "--params", str(tmp_path / "params.yaml")])


def _champion(uri: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(
        MODEL, "champion").version)


@pytest.mark.slow
def test_two_refinement_rounds_gate_and_champion(demo_src, small_demo_model, tmp_path, monkeypatch,
                                                 mlflow_uri, capsys):
    from mlflow import MlflowClient
    from support.train import tiny

    from poseops.config.refine import AnalyzeParams, MergeParams, OutliersParams
    from poseops.refine import analyze, merge, outliers
    from poseops.tracking.registry import move_alias
    from poseops.train.trainer import train_model

    # mlflow_uri: MLflow's globals reset around the test; the store used is iteration 0's copy
    project = tmp_path / "demo"
    shutil.copytree(demo_src[0], project)
    meta = demo_src[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": {
        "n_boot": 200, "log_mlflow": False, "suite": str(REPO / "expectations/compare.json"),
        "out": str(tmp_path / "cmp"), "history": str(tmp_path / "iterations.csv"),
        "merge_report": str(tmp_path / "merge.json"), "unchanged_tol_px": TOL_PX}}))
    p0 = tiny(epochs=EPOCHS0, batch_size=4, save_epochs=EPOCHS0, net_type="cspnext_s",
              experiment="rounds", registered_model=MODEL, init="random", gaussian_noise=0.0,
              motion_blur=False)

    # iteration 0: trained (the shared model: this recipe, these labels, this split; a copy of its
    # workdir and MLflow store, which the rounds below write to), evaluated on its test set,
    # promoted by hand (the first champion)
    labels0 = _labels(project, meta)
    split0 = _split(labels0)
    m = small_demo_model
    assert m.params == dataclasses.replace(p0, experiment=m.params.experiment)
    pd.testing.assert_frame_equal(labels0, m.labels)
    pd.testing.assert_frame_equal(split0, m.split)
    Path("data/processed").mkdir(parents=True)
    split0.to_csv("data/processed/split.csv", index=False)
    tr0, uri = copy_model(m, tmp_path / "it0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # compare's store: the copy
    assert MlflowClient(uri).get_run(tr0.run_id).data.tags["dlc_iteration"] == "0"
    e0 = _errors(tr0, labels0, split0, tmp_path / "e0.parquet")
    # it must have learned (well below the ~20 px snout-tailbase distance), or no harm can show
    assert _test_rmse(e0) < 10.0, f"iteration 0 did not learn: test RMSE {_test_rmse(e0):.1f} px"
    v0 = str(tr0.model_version)
    move_alias(uri, MODEL, v0)

    # the round: outliers on the model's predictions of the unlabeled video, relabeled from the
    # generator's truth except two frames, merged with --skip-unrefined
    ap = AnalyzeParams(config=str(tr0.config_path), shuffle=tr0.shuffle, device="cpu",
                       out=str(tmp_path / "analyze"))
    analyze.analyze_videos(ap, [project / "videos" / "m1-s4.mp4"])
    op = OutliersParams(predictions=str(tmp_path / "analyze" / "predictions.parquet"),
                        uncertain_fraction=0.3, n_frames=6, pending=str(tmp_path / "pending.csv"))
    manifest = outliers.pick_outliers(op, project, meta)
    assert len(manifest) == 6
    left_out = manifest.image.iloc[:2].tolist()
    relabel_from_truth(project, manifest[~manifest.image.isin(left_out)], "alice")
    mp = MergeParams(skip_unrefined=True, dvc=False, git=False, report=str(tmp_path / "merge.json"),
                     pending=str(tmp_path / "pending.csv"))
    rep = merge.merge_iteration(mp, project)
    assert rep["frames_added"] == 4 and sorted(rep["skipped"]) == sorted(left_out)
    assert sorted(pd.read_csv(mp.pending).image) == sorted(left_out)
    fixed = pd.read_csv(mp.fixed_split)  # the test set stays; the 4 new frames go to train
    labels1 = _labels(project, meta)
    new = sorted(set(labels1.loc[labels1.labeled, "image"]) - set(labels0.image))
    assert new == sorted(set(manifest.image) - set(left_out))
    split1 = pd.concat([fixed, pd.DataFrame({"image": new, "video": "m1-s4", "group": "m1-s4",
                                             "split": "train"})], ignore_index=True)
    assert sorted(split1[split1.split == "test"].image) == sorted(
        split0[split0.split == "test"].image)

    # harmful round: the merged training labels with snout and tailbase swapped (the relabeled
    # frames included); warm-started from iteration 0's snapshot like the good round
    bad = str(e0.loc[e0.split == "test", "condition"].iloc[0])
    assert set(e0.loc[e0.split == "test", "condition"].astype(str)) == {bad}
    train_imgs = set(split1.loc[split1.split == "train", "image"])
    assert len(train_imgs) >= 20
    harm = labels1.copy()
    harm["bodypart"] = harm["bodypart"].replace({"snout": "tailbase", "tailbase": "snout"})
    ph = dataclasses.replace(p0, epochs=FT_EPOCHS, init=str(tr0.snapshot))
    trh = train_model(ph, harm, split1, project, tmp_path / "train-harm", tracking_uri=uri)
    eh = _errors(trh, labels1, split1, tmp_path / "eh.parquet")  # scored against the truth
    assert _compare(tmp_path, tmp_path / "e0.parquet", tmp_path / "eh.parquet", trh.run_id,
                    (0, 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("poseops compare: error:") and "compare gate failed" in err
    assert f"condition worse: {bad} (" in err
    gate = json.loads((tmp_path / "cmp" / "gate.json").read_text())
    assert not gate["passed"] and "no_condition_worse" in gate["failed"]
    assert gate["rmse_change_pct"] == pytest.approx(100 * (_test_rmse(eh) / _test_rmse(e0) - 1))
    assert _test_mean(eh) - _test_mean(e0) > TOL_PX  # the test set is all one condition
    assert _champion(uri) == v0

    # good round: iteration 1 fine-tunes iteration 0 (train.init: previous, same workdir)
    p1 = dataclasses.replace(p0, epochs=FT_EPOCHS, init="previous")
    tr1 = train_model(p1, labels1, split1, project, tr0.workdir, tracking_uri=uri)
    assert "iteration-1" in str(tr1.model_dir)
    e1 = _errors(tr1, labels1, split1, tmp_path / "e1.parquet")
    r0, r1 = _test_rmse(e0), _test_rmse(e1)
    assert r1 <= r0 * 1.05  # no worse than iteration 0 (the gate's tolerance)
    assert _compare(tmp_path, tmp_path / "e0.parquet", tmp_path / "e1.parquet", tr1.run_id,
                    (0, 1)) == 0
    gate = json.loads((tmp_path / "cmp" / "gate.json").read_text())
    assert gate["passed"] and gate["rmse_change_pct"] == pytest.approx(100 * (r1 / r0 - 1))
    assert _champion(uri) == str(tr1.model_version) != v0
    hist = pd.read_csv(tmp_path / "iterations.csv")
    assert hist.iteration.tolist() == [0, 1]
    assert hist.test_rmse_px.tolist() == pytest.approx([r0, r1])
    assert hist.loc[1, "frames_added"] == 4 and hist.loc[1, "outliers_found"] == 6
