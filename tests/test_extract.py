"""extract: condition-balanced, appearance-diverse frame selection; DLC-named frames; coverage."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseops.config.refine import ExtractParams
from poseops.core.errors import PoseopsError
from poseops.refine import common as R
from poseops.refine import frames as E


@pytest.fixture
def demo(demo_src, tmp_path) -> tuple[Path, Path]:
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    return proj, demo_src[1]


def test_quotas_water_fill_by_hand():
    # 12 frames, 3 conditions: shares of 4; "c" has only 3, its spare frame goes to "a" (first)
    assert R.allocate_quotas({"b": 10, "a": 50, "c": 3}, 12) == {"a": 5, "b": 4, "c": 3}
    assert R.allocate_quotas({"a": 2, "b": 2}, 10) == {"a": 2, "b": 2}  # capped by availability
    assert R.allocate_quotas({"a": 7, "b": 7, "c": 7}, 9) == {"a": 3, "b": 3, "c": 3}


def test_kmeans_picks_one_frame_per_appearance_cluster():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (4, 20))
    blob = np.repeat(np.arange(4), [30, 5, 12, 8])  # unbalanced blobs: diversity, not frequency
    feats = centres[blob] + rng.normal(0, 0.01, (len(blob), 20))
    cand = pd.DataFrame({"video": "v", "frame": np.arange(len(blob)), "condition": "a"})
    sel = E.select_frames(cand, feats, 4, seed=1, balance_by="condition")
    assert sorted(blob[sel["frame"]]) == [0, 1, 2, 3]


def test_quotas_per_condition_hold():
    rng = np.random.default_rng(2)
    cond = np.repeat(["vehicle", "low", "high"], [60, 25, 4])
    cand = pd.DataFrame({"video": cond, "frame": np.arange(len(cond)), "condition": cond})
    sel = E.select_frames(cand, rng.normal(size=(len(cond), 8)), 15, seed=0, balance_by="condition")
    counts = sel["condition"].value_counts().to_dict()
    assert counts == {"high": 4, "low": 6, "vehicle": 5}  # 5 each; high capped at 4 -> +1 to low
    assert len(sel) == 15 and not sel.duplicated(["video", "frame"]).any()


def test_extract_on_demo_writes_dlc_frames_manifest_and_coverage(demo, tmp_path):
    proj, meta = demo
    params = ExtractParams(
        n_frames=9, manifest=str(tmp_path / "m.csv"), coverage=str(tmp_path / "cov.csv")
    )
    before = _labeled(proj)
    man = E.extract_frames(params, proj, meta)
    assert len(man) == 9
    assert man["condition"].value_counts().tolist() == [3, 3, 3]  # condition-balanced
    assert not set(zip(man["video"], man["frame"], strict=True)) & before
    cov = pd.read_csv(tmp_path / "cov.csv")
    by_cond = cov[cov.stratum_type == "condition"].set_index("stratum")["n_frames"]
    assert by_cond.to_dict() == man.groupby("condition").size().to_dict()
    by_animal = cov[cov.stratum_type == "animal"].set_index("stratum")["n_frames"]
    assert by_animal.to_dict() == man.groupby("animal").size().to_dict()
    # PNGs are named as DLC does (30-frame videos: 2 digits) and hold the decoded video frame
    for _, r in man.iterrows():
        png = proj / r["image"]
        assert png.name == f"img{r['frame']:02d}.png" and png.is_file()
        cap = cv2.VideoCapture(str(proj / "videos" / f"{r['video']}.mp4"))
        for _ in range(r["frame"] + 1):
            ok, img = cap.read()
        cap.release()
        assert ok and np.array_equal(cv2.imread(str(png)), img)


def _labeled(proj: Path) -> set[tuple[str, int]]:
    return {(v.name, f) for v in (proj / "labeled-data").iterdir()
            for f in R.labeled_frames(proj, v.name)}


def test_extract_skips_frames_already_labeled(demo, tmp_path):
    proj, meta = demo
    before = _labeled(proj)
    params = ExtractParams(n_frames=200, step=1, manifest=str(tmp_path / "m.csv"),
                             coverage=str(tmp_path / "c.csv"), write_frames=False)
    man = E.extract_frames(params, proj, meta)
    picked = set(zip(man["video"], man["frame"], strict=True))
    assert before and not (picked & before)
    assert len(picked) == 6 * 30 - len(before)  # every other frame of the 6 config videos


def test_undecodable_video_is_named(demo, tmp_path):
    proj, meta = demo
    bad = proj / "videos" / "m1-s1.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    params = ExtractParams(manifest=str(tmp_path / "m.csv"), coverage=str(tmp_path / "c.csv"))
    with pytest.raises(PoseopsError, match=r"m1-s1\.mp4.*cannot be decoded"):
        E.extract_frames(params, proj, meta)
    assert not (tmp_path / "m.csv").exists()


def test_video_missing_from_metadata_is_named(demo, tmp_path):
    proj, meta = demo
    m = pd.read_csv(meta)
    m[m.video != "m1-s4"].to_csv(tmp_path / "meta.csv", index=False)
    params = ExtractParams(manifest=str(tmp_path / "m.csv"), coverage=str(tmp_path / "c.csv"))
    with pytest.raises(PoseopsError, match="m1-s4.*not in the metadata"):
        E.extract_frames(params, proj, tmp_path / "meta.csv", [str(proj / "videos" / "m1-s4.mp4")])
