"""Validation of multi-animal label tables (expectations/dataset.json): NaN share per individual and
bodypart, animals per frame, expected individuals present; each failure names the individual (or
image), and single-animal results stay as they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from support.params import validate_params_file

from poseops import cli
from poseops.core import schema as S
from poseops.data import labels as L
from poseops.quality import dataset as V
from poseops.quality.gx import validate_tables

ANIMALS = ["mouse1", "mouse2", "mouse3"]
BODYPARTS = ["snout", "ear", "tail"]
UNIQUE = ["led"]
CONDITIONS = ["vehicle", "drug"]
W, H = 40, 30
MA_TABLES = ["individual_labels", "individual_bodypart_stats", "animals_per_frame", "individual_stats"]


def make_ma_project(root: Path, individuals: list[str] = ANIMALS, seed: int = 0):
    """A multi-animal DLC-like project on disk (config.yaml + PNGs) and its tidy labels table:
    2 conditions x 2 videos x 6 frames; mouse3 is out of view in every other frame (its rows NaN)."""
    rng = np.random.default_rng(seed)
    project = root / "proj"
    (project / "labeled-data").mkdir(parents=True)
    cfg = {
        "scorer": "alice", "multianimalproject": True, "bodyparts": "MULTI!",
        "individuals": list(individuals), "multianimalbodyparts": BODYPARTS,
        "uniquebodyparts": UNIQUE, "video_sets": {},
    }
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for ci, cond in enumerate(CONDITIONS):
        for v in range(2):
            video = f"g{v}s{ci}"
            (project / "labeled-data" / video).mkdir()
            for f in range(6):
                image = f"labeled-data/{video}/img{f:04d}.png"
                Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(project / image)
                keys = [(a, b) for a in ANIMALS for b in BODYPARTS] + [(S.SINGLE, b) for b in UNIQUE]
                for ind, bp in keys:
                    absent = ind == "mouse3" and f % 2 == 1
                    x, y = (np.nan, np.nan) if absent else rng.uniform([0, 0], [W - 1, H - 1])
                    rows.append({
                        "image": image, "video": video, "frame": f, "scorer": "alice",
                        "individual": ind, "bodypart": bp, "x": x, "y": y,
                        "width": W, "height": H, "animal": f"g{v}", "session": f"s{ci}",
                        "condition": cond, "dose": float(ci), "camera": "top",
                    })
    labels = pd.DataFrame(rows)
    labels["labeled"] = labels["x"].notna()
    return project, labels


PARAMS = {
    "validate": {
        "max_nan_share": 0.25, "min_frames_per_condition": 5, "max_condition_ratio": 3.0,
        "min_total_frames": 20, "check_images": True, "min_animals_per_frame": 1,
    },
}


def check(repo_root: Path, labels: pd.DataFrame, project: Path, **overrides) -> pd.DataFrame:
    params = {
        **PARAMS,
        "validate": {**PARAMS["validate"], **overrides},
        "config": V.config_params(project, labels),
    }
    tables = V.dataset_tables(labels, project, params["config"].get("individuals"))
    res = validate_tables(repo_root / "expectations" / "dataset.json", tables, params)
    return res.results.set_index("name")


def failed(results: pd.DataFrame) -> list[str]:
    return sorted(results.index[results["success"].eq(False)])


@pytest.fixture
def proj(tmp_path: Path):
    return make_ma_project(tmp_path)


def test_clean_multianimal_table_passes(repo_root: Path, proj) -> None:
    project, labels = proj
    r = check(repo_root, labels, project)
    assert failed(r) == []
    for name in ["unique_keypoints_per_individual", "nan_share_per_individual_bodypart",
                 "animals_per_frame", "expected_individuals_present", "individuals_in_config"]:
        assert r.loc[name, "success"] is True or r.loc[name, "success"] == True  # noqa: E712
    # the per-bodypart rules are checked per individual instead (not run, not failed)
    for name in ["unique_keypoints", "nan_share_per_bodypart"]:
        assert pd.isna(r.loc[name, "success"]) and "instead" in r.loc[name, "observed"]
    # mouse3 is absent in half the frames: per bodypart over all rows that would be a 1/6 NaN
    # share for every bodypart; per individual over the frames it is in, none is missing
    stats = V.individual_bodypart_stats(labels)
    assert (stats["nan_share"] == 0).all() and len(stats) == len(ANIMALS) * len(BODYPARTS) + 1
    assert stats.set_index([S.INDIVIDUAL, S.BODYPART]).loc[("mouse3", "snout"), "n"] == 12


def test_nan_share_per_individual_and_bodypart(repo_root: Path, proj) -> None:
    project, labels = proj
    rows = labels.index[(labels[S.INDIVIDUAL] == "mouse2") & (labels[S.BODYPART] == "ear")]
    labels.loc[rows[:4], ["x", "y"]] = np.nan  # 4 of 24 frames: 1/6 of mouse2's ears
    labels.loc[rows[4], "y"] = np.nan  # y alone missing also counts
    stats = V.individual_bodypart_stats(labels).set_index([S.INDIVIDUAL, S.BODYPART])
    # independent count: frames where mouse2 has some label, then the share of NaN ears there
    m2 = labels[labels[S.INDIVIDUAL] == "mouse2"]
    present = m2.groupby("image")["x"].apply(lambda s: s.notna().any())
    ears = m2[(m2[S.BODYPART] == "ear") & m2["image"].map(present)]
    expected = float((ears["x"].isna() | ears["y"].isna()).mean())
    assert stats.loc[("mouse2", "ear"), "nan_share"] == pytest.approx(expected) == 5 / 24
    r = check(repo_root, labels, project, max_nan_share=0.2)
    assert failed(r) == ["nan_share_per_individual_bodypart"]
    ex = r.loc["nan_share_per_individual_bodypart", "examples"]
    assert [(e["individual"], e["bodypart"]) for e in ex] == [("mouse2", "ear")]
    assert failed(check(repo_root, labels, project, max_nan_share=0.25)) == []


def test_animals_per_frame_between_one_and_config_individuals(repo_root: Path, proj) -> None:
    project, labels = proj
    img = "labeled-data/g1s0/img0002.png"
    # nothing labeled in that image, not even the unique 'led' (an image where only unique
    # bodyparts are labeled is a valid DLC frame: test_openfield_variants checks it passes)
    labels.loc[labels["image"] == img, ["x", "y"]] = np.nan
    apf = L.animals_per_frame(labels).set_index("image")["n_animals"]
    assert apf[img] == 0
    # independent count: distinct non-single individuals with a finite x per image
    lab = labels[labels["x"].notna() & (labels[S.INDIVIDUAL] != S.SINGLE)]
    assert apf.drop(img).to_dict() == lab.groupby("image")[S.INDIVIDUAL].nunique().to_dict()
    r = check(repo_root, labels, project)
    assert failed(r) == ["animals_per_frame"]
    ex = r.loc["animals_per_frame", "examples"]
    assert [e["image"] for e in ex] == [img] and ex[0]["n_animals"] == 0
    # at least 3 animals required: every frame without mouse3 fails too
    r = check(repo_root, labels, project, min_animals_per_frame=3)
    assert r.loc["animals_per_frame", "unexpected_count"] == 1 + 12


def test_more_animals_than_config_individuals(repo_root: Path, tmp_path: Path) -> None:
    # config lists 2 individuals, the labels hold 3 (e.g. a table from another project)
    project, labels = make_ma_project(tmp_path, individuals=["mouse1", "mouse2"])
    r = check(repo_root, labels, project)
    assert failed(r) == ["animals_per_frame", "individuals_in_config"]
    assert r.loc["animals_per_frame", "unexpected_count"] == 12  # frames where mouse3 is in view
    assert all(e["n_animals"] == 3 for e in r.loc["animals_per_frame", "examples"])
    assert r.loc["individuals_in_config", "examples"][0]["individual"] == "mouse3"


def test_expected_individual_never_labeled(repo_root: Path, tmp_path: Path) -> None:
    project, labels = make_ma_project(tmp_path, individuals=[*ANIMALS, "mouse4"])
    r = check(repo_root, labels, project)
    assert failed(r) == ["expected_individuals_present"]
    assert r.loc["expected_individuals_present", "examples"][0]["individual"] == "mouse4"
    # an individual with rows but no label at all fails the same way
    project, labels = make_ma_project(tmp_path / "b")
    labels.loc[labels[S.INDIVIDUAL] == "mouse2", ["x", "y"]] = np.nan
    r = check(repo_root, labels, project)
    assert "expected_individuals_present" in failed(r)
    assert r.loc["expected_individuals_present", "examples"][0]["individual"] == "mouse2"


def test_duplicate_keypoint_per_individual(repo_root: Path, proj) -> None:
    project, labels = proj
    labels = pd.concat([labels, labels.iloc[[7]]], ignore_index=True)
    r = check(repo_root, labels, project)
    assert failed(r) == ["unique_keypoints_per_individual"]
    ex = r.loc["unique_keypoints_per_individual", "examples"][0]
    assert (ex["image"], ex["bodypart"]) == (labels.loc[7, "image"], labels.loc[7, "bodypart"])


def test_single_animal_tables_skip_the_multianimal_rules(repo_root: Path) -> None:
    labels = pd.DataFrame({
        "image": ["labeled-data/v/img0.png"] * 2, "video": "v", "frame": 0, "scorer": "a",
        "bodypart": ["snout", "tail"], "x": [1.0, 2.0], "y": [1.0, 2.0], "width": W, "height": H,
    })
    tables = V.dataset_tables(labels)
    assert not set(MA_TABLES) & set(tables)
    res = validate_tables(
        repo_root / "expectations" / "dataset.json", tables,
        {**PARAMS, "config": {"bodyparts": ["snout", "tail"]}},
    )
    r = res.results.set_index("name")
    assert r.loc["unique_keypoints", "success"] == True  # noqa: E712
    assert r.loc["nan_share_per_bodypart", "success"] == True  # noqa: E712
    ma = r[r["table"].isin(MA_TABLES)]
    assert len(ma) == 5 and ma["success"].isna().all()
    assert ma["observed"].str.contains("not given").all()


def test_cli_validate_multianimal_project(tmp_path: Path, proj, capsys) -> None:
    project, labels = proj
    labels_path = tmp_path / "labels.parquet"
    labels.to_parquet(labels_path)
    path = validate_params_file(tmp_path, project, labels_path)
    assert cli.main(["validate", "--params", str(path)]) == 0
    out = json.loads((tmp_path / "out" / "dataset.json").read_text())
    ran = {r["name"] for r in out["results"] if r["success"] is not None}
    assert {"animals_per_frame", "expected_individuals_present", "individuals_in_config"} <= ran
    # config.yaml lists a 4th animal never labeled: the stage fails naming it
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["individuals"].append("mouse9")
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["validate", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected_individuals_present" in err and "mouse9" in err
