"""Real projects, not the demo, through every stage of `dvc repro`, as a new user runs them:
`poseops init PATH`, fill in the metadata template, `dvc repro`. No code edits; the only params
edit is `train.epochs` (a 1-epoch model keeps CI fast; what is checked does not need a good one).

- the real openfield project as shipped (one labeled video, 640x480, placeholder video_sets key);
- a project with two frame sizes (320x240 and 256x192: a camera change);
- a Lightning Pose data folder (CollectedData.csv, labeled-data/, videos/, no config.yaml).

Slow: real DeepLabCut training and inference on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.e2e import (
    OPENFIELD,
    STAGES,
    brute_force_min_gap,
    clone_repo,
    dlc_variant,
    fill_metadata,
    lightning_pose_variant,
    sh,
    user_env,
)

from poseops.config.loader import update_params


def strict_json(path: Path) -> dict:
    """Parse as RFC 8259 JSON: a literal NaN / Infinity is an error."""
    def refuse(const: str) -> None:
        raise ValueError(f"{path}: {const} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def metadata_row(video: str) -> dict[str, str]:
    """The metadata a lab fills in: one animal per video, one session, one condition."""
    return {"animal": video.split("-")[0][:2], "session": "s1", "condition": "baseline",
            "dose": "0.0", "camera": "top"}


def run_user_project(tmp: Path, project: Path, fmt: str = "dlc") -> tuple[Path, dict, str]:
    """Clone, `poseops init`, fill metadata, `dvc repro`; returns (repo, params, repro log)."""
    env = user_env()
    repo = clone_repo(tmp / "work", env)
    init_log = sh(["poseops", "init", str(project), "--format", fmt], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    fill_metadata(repo / params["project"]["metadata"], metadata_row)
    update_params({"train": {"epochs": 1, "save_epochs": 1}}, repo / "params.yaml")
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "init"], repo, env)
    log = sh(["dvc", "repro"], repo, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log, stage
    return repo, yaml.safe_load((repo / "params.yaml").read_text()), init_log + log


def check_evaluation(repo: Path, params: dict) -> tuple[pd.DataFrame, dict]:
    """Every split image predicted, and the headline mean error equal to one computed here
    from the predictions and the consensus labels."""
    split = pd.read_csv(repo / params["split"]["out"])
    labels = pd.read_parquet(repo / params["consensus"]["out"])
    preds = pd.read_parquet(repo / params["evaluate"]["out"] / "predictions.parquet")
    n_bp = labels["bodypart"].nunique()
    assert len(preds) == len(split) * n_bp
    assert set(preds["image"]) == set(split["image"])
    metrics = strict_json(repo / params["evaluate"]["metrics"])
    both = labels.merge(preds, on=["image", "bodypart"], suffixes=("_gt", "_pred")).merge(
        split[["image", "split"]], on="image")
    both = both[both["x_gt"].notna()]
    dist = np.hypot(both["x_gt"] - both["x_pred"], both["y_gt"] - both["y_pred"])
    for name in ("train", "val", "test"):
        d = dist[both["split"] == name]
        assert metrics[name]["n"] == len(d)
        assert metrics[name]["mean_px"] == pytest.approx(d.mean(), rel=1e-9)
        assert metrics[name]["rmse_px"] == pytest.approx(np.sqrt((d ** 2).mean()), rel=1e-9)
    return split, metrics


def check_report(repo: Path, params: dict, metrics: dict) -> str:
    html = (repo / params["report"]["out"]).read_text()
    for name in ("train", "val", "test"):
        if metrics[name]["mean_px_pcutoff"] is None:  # no prediction reached pcutoff
            assert "no prediction above pcutoff" in html
    for f in (params["evaluate"]["out"] + "/summary.json", params["composition"]["metrics"],
              params["train"]["metrics"], params["validate_report"]["out"]):
        strict_json(repo / f)
    return html


@pytest.mark.slow
def test_openfield_as_shipped_runs_every_stage(tmp_path: Path) -> None:
    repo, params, log = run_user_project(tmp_path, OPENFIELD)
    # init fitted the params to this project, and said so
    assert params["project"]["path"] == "data/raw/dlc-openfield"
    meta = pd.read_csv(repo / params["project"]["metadata"])
    assert sorted(meta["video"]) == ["m3v1mp4", "m4s1"]  # its own videos, not the placeholder
    assert "WILL BE AUTOMATICALLY UPDATED" in log  # the placeholder video_sets key, warned
    demo_meta = pd.read_csv(repo / "data" / "metadata" / "videos.csv")
    assert "m4s1" not in set(demo_meta["video"])  # the demo's file is left alone
    assert (params["train"]["crop_width"], params["train"]["crop_height"]) == (448, 448)
    assert params["evaluate"]["reference_bodyparts"] == ["snout", "tailbase"]
    assert params["split"]["mode"] == "temporal-blocks"
    assert "split.mode = 'temporal-blocks'" in log
    # the split: blocks of consecutive frames, no frame within gap_frames of another split's
    split, metrics = check_evaluation(repo, params)
    sp = params["split"]
    assert set(split["split"]) == {"train", "val", "test"}
    assert brute_force_min_gap(split) > sp["gap_frames"]
    assert (split["frame"] // sp["block_frames"] * sp["block_frames"] == split["block_start"]).all()
    blocks = split.groupby("group")["split"].nunique()
    assert (blocks == 1).all()  # a block is never cut between splits
    excluded = 116 - len(split)
    assert excluded > 0 and f"{excluded} labeled image(s) are not in the split" in log
    comp = strict_json(repo / params["composition"]["metrics"])["split"]
    assert comp["mode"] == "temporal-blocks" and comp["gap_frames"] == sp["gap_frames"]
    assert comp["min_frame_distance_between_splits"] == brute_force_min_gap(split)
    assert comp["excluded_frames"] == excluded
    assert comp["groups_crossing_splits"] == 0
    check_report(repo, params, metrics)


@pytest.mark.slow
def test_two_frame_sizes_in_one_project(tmp_path: Path) -> None:
    """Two cameras (320x240 and 256x192): DLC's inference runner cannot stack images of two
    sizes in one batch; evaluation (batch 8) and the MLflow pyfunc model must still work."""
    project = dlc_variant(tmp_path / "two-cams", {"m4-camA": (slice(0, 58), 0.5),
                                                   "m4-camB": (slice(58, 116), 0.4)})
    repo, params, log = run_user_project(tmp_path, project)
    assert params["evaluate"]["batch_size"] > 1
    assert "image sizes 256x192 (58 images), 320x240 (58 images)" in log  # init's report
    assert (params["train"]["crop_width"], params["train"]["crop_height"]) == (320, 240)
    labels = pd.read_parquet(repo / params["ingest"]["out"])
    assert set(zip(labels["width"], labels["height"], strict=True)) == {(320, 240), (256, 192)}
    split, metrics = check_evaluation(repo, params)
    check_report(repo, params, metrics)
    # the logged pyfunc model predicts a mixed-size list as evaluate did (same snapshot)
    import mlflow

    run = json.loads((repo / params["train"]["workdir"] / "run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(run["model_uri"])
    images = [split["image"].iloc[0], split["image"].iloc[-1]]
    out = model.predict([str(repo / params["project"]["path"] / i) for i in images])
    preds = pd.read_parquet(repo / params["evaluate"]["out"] / "predictions.parquet")
    for img in images:
        mine = out[out["image"].str.endswith(img)].sort_values("bodypart")
        ref = preds[preds["image"] == img].sort_values("bodypart")
        np.testing.assert_allclose(mine[["x", "y"]].to_numpy(), ref[["x", "y"]].to_numpy(),
                                   atol=1e-3)


@pytest.mark.slow
def test_lightning_pose_folder_runs_every_stage(tmp_path: Path) -> None:
    project = lightning_pose_variant(tmp_path / "lp-openfield", scale=0.5)
    assert not (project / "config.yaml").exists()
    repo, params, log = run_user_project(tmp_path, project, fmt="lightning-pose")
    assert params["project"]["format"] == "lightning-pose"
    ready = next(line for line in log.splitlines() if "ready:" in line)
    assert "config.yaml" not in ready and "CollectedData.csv" in ready  # what exists, to commit
    labels = pd.read_parquet(repo / params["ingest"]["out"])
    assert list(dict.fromkeys(labels["bodypart"])) == ["snout", "leftear", "rightear", "tailbase"]
    assert labels["image"].nunique() == 116
    split, metrics = check_evaluation(repo, params)
    assert brute_force_min_gap(split) > params["split"]["gap_frames"]
    check_report(repo, params, metrics)


@pytest.mark.slow
def test_lightning_pose_flat_layout_runs_every_stage_in_the_csv_bodypart_order(
    tmp_path: Path,
) -> None:
    """Lightning Pose's own example layout: images directly in labeled-data/ (no video folder).
    After `poseops init` and filling the metadata template (nothing else), `dvc repro` runs every
    stage; the bodyparts keep the CSV header's order (not alphabetical) in DLC's working config
    and in the MLflow pyfunc model's output."""
    project = lightning_pose_variant(tmp_path / "lp-flat", scale=0.25, flat=True)
    assert not (project / "labeled-data" / "m4s1").exists()
    header = list(dict.fromkeys(
        pd.read_csv(project / "CollectedData.csv", header=[0, 1, 2], index_col=0)
        .columns.get_level_values(1)))
    assert header == ["snout", "leftear", "rightear", "tailbase"] != sorted(header)
    repo, params, log = run_user_project(tmp_path, project, fmt="lightning-pose")
    meta = pd.read_csv(repo / params["project"]["metadata"])
    assert "lp-flat" in set(meta["video"])  # the key ingest gives the flat images
    labels = pd.read_parquet(repo / params["ingest"]["out"])
    assert set(labels["video"]) == {"lp-flat"} and labels["animal"].notna().all()
    assert labels["image"].str.fullmatch(r"labeled-data/img\d+\.png").all()
    split, metrics = check_evaluation(repo, params)
    check_report(repo, params, metrics)
    work = yaml.safe_load((repo / params["train"]["workdir"] / "project" / "config.yaml")
                          .read_text())
    assert work["bodyparts"] == header
    import mlflow

    run = json.loads((repo / params["train"]["workdir"] / "run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(run["model_uri"])
    out = model.predict([str(repo / params["project"]["path"] / split["image"].iloc[0])])
    assert list(dict.fromkeys(out["bodypart"])) == header
