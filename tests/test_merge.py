"""merge: relabeled frames become the next iteration, versioned by DVC + git tags; bad relabeled
files are refused by name and leave the previous iteration untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.refine import digest, git_identity, make_repo, relabel_from_truth, sh

from poseops.config.refine import MergeParams, OutliersParams
from poseops.core.errors import PoseopsError
from poseops.data.split import honour_fixed_split
from poseops.dlc import files as dlcio
from poseops.refine import merge as M
from poseops.refine import outliers as O


@pytest.fixture
def picked(demo_src, tmp_path, monkeypatch):
    """A git+DVC repo at iteration 0 with outlier frames of the unlabeled video m1-s4 extracted
    (predictions = truth with planted low likelihood). Returns (repo, project, manifest, params)."""
    git_identity(monkeypatch)
    repo, project, meta = make_repo(tmp_path, *demo_src)
    monkeypatch.chdir(repo)
    t = pd.read_csv(project / "ground_truth_tracks.csv")
    preds = t[t.video == "m1-s4"].assign(likelihood=0.95, scorer="DLC_x")
    preds.loc[preds.frame.isin([4, 9, 17]) & (preds.bodypart == "snout"), "likelihood"] = 0.1
    preds.to_parquet(tmp_path / "preds.parquet")
    op = OutliersParams(predictions=str(tmp_path / "preds.parquet"), uncertain_fraction=0.0,
                          n_frames=3, manifest="data/refine/outliers/manifest.csv")
    manifest = O.pick_outliers(op, project, meta)
    assert sorted(manifest.frame) == [4, 9, 17]
    split = pd.DataFrame({"image": ["labeled-data/m1-s1/img03.png", "labeled-data/m2-s1/img01.png"],
                          "video": ["m1-s1", "m2-s1"], "group": ["m1-s1", "m2-s1"],
                          "split": ["test", "train"]})
    Path("data/processed").mkdir(parents=True)
    split.to_csv("data/processed/split.csv", index=False)
    return repo, project, manifest, MergeParams()


def _state(repo: Path, project: Path) -> tuple[str, list[str], str]:
    files = [project / "config.yaml", repo / "data" / "raw" / "demo.dvc",
             repo / "data" / "processed" / "fixed_split.csv"]
    return digest(files), sh(["git", "tag", "--list"], repo).split(), sh(["git", "rev-parse", "HEAD"], repo)


def test_merge_makes_the_next_iteration_versioned(picked):
    repo, project, manifest, params = picked
    relabel_from_truth(project, manifest, "alice")
    dvc0 = (repo / "data/raw/demo.dvc").read_text()
    report = M.merge_iteration(params, project)
    assert report["iteration"] == 1 and report["frames_added"] == 3
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    assert cfg["iteration"] == 1
    assert any(Path(v).stem == "m1-s4" for v in cfg["video_sets"])  # DLC reads listed videos only
    # DVC + git: two tags, two different dataset hashes
    assert {"iteration-0", "iteration-1"} <= set(sh(["git", "tag", "--list"], repo).split())
    dvc0_tag = sh(["git", "show", "iteration-0:data/raw/demo.dvc"], repo)
    dvc1_tag = sh(["git", "show", "iteration-1:data/raw/demo.dvc"], repo)
    assert dvc0_tag.strip() == dvc0.strip() and dvc0_tag != dvc1_tag
    assert sh(["git", "status", "--porcelain", "data/raw"], repo) == ""
    fixed = pd.read_csv(repo / "data/processed/fixed_split.csv")
    assert fixed[fixed.split == "test"].image.tolist() == ["labeled-data/m1-s1/img03.png"]
    assert "data/processed/fixed_split.csv" in sh(["git", "show", "--stat", "iteration-1"], repo)
    # the labels table grew by exactly the relabeled frames (read back with DLC's format reader)
    h5 = project / "labeled-data/m1-s4/CollectedData_alice.h5"
    back = dlcio.wide_to_long(dlcio.read_collected_data(h5))
    assert sorted(back.image.unique()) == sorted(manifest.image)
    # either dataset can be restored from git + DVC
    sh(["git", "checkout", "-q", "iteration-0"], repo)
    sh(["dvc", "checkout", "-q", "--force"], repo)
    assert yaml.safe_load((project / "config.yaml").read_text())["iteration"] == 0
    assert not (project / "labeled-data/m1-s4").exists()
    sh(["git", "checkout", "-q", "iteration-1"], repo)
    sh(["dvc", "checkout", "-q", "--force"], repo)
    assert yaml.safe_load((project / "config.yaml").read_text())["iteration"] == 1
    assert h5.is_file()


def test_wrong_bodyparts_are_refused_and_nothing_changes(picked):
    repo, project, manifest, params = picked
    relabel_from_truth(project, manifest, "alice", rename={"snout": "nose"})
    before = _state(repo, project)
    with pytest.raises(PoseopsError, match=r"m1-s4/CollectedData_alice\.h5.*bodypart 'nose'"):
        M.merge_iteration(params, project)
    assert _state(repo, project) == before
    assert not Path(params.report).exists()


def test_unrelabeled_frames_are_refused(picked):
    repo, project, manifest, params = picked
    before = _state(repo, project)
    with pytest.raises(PoseopsError, match="relabeled file missing"):
        M.merge_iteration(params, project)
    relabel_from_truth(project, manifest[manifest.frame != 9], "alice")
    with pytest.raises(PoseopsError, match=r"row labeled-data/m1-s4/img09\.png.*not relabeled"):
        M.merge_iteration(params, project)
    assert _state(repo, project) == before


def test_failed_versioning_restores_config(picked, monkeypatch):
    repo, project, manifest, params = picked
    relabel_from_truth(project, manifest, "alice")
    cfg_before = (project / "config.yaml").read_text()

    def boom(*a, **k):
        raise PoseopsError("dvc exploded")

    monkeypatch.setattr(M, "_version", boom)
    with pytest.raises(PoseopsError, match="dvc exploded"):
        M.merge_iteration(params, project)
    assert (project / "config.yaml").read_text() == cfg_before


def test_honour_fixed_split_keeps_the_test_set():
    prev = pd.DataFrame({"image": ["a/1", "a/2", "b/1", "c/1"], "group": ["a", "a", "b", "c"],
                         "split": ["test", "test", "train", "val"]})
    fixed = M.fixed_split_table(prev)
    # a new split of the grown dataset moved groups around and added new frames: a/3 (test
    # group a), c/2 (val group c), d/1 and e/1 (new groups)
    new = pd.DataFrame({"image": ["a/1", "a/2", "a/3", "b/1", "c/1", "c/2", "d/1", "e/1"],
                        "group": ["a", "a", "a", "b", "c", "c", "d", "e"],
                        "split": ["val", "val", "val", "test", "train", "train", "test", "val"]})
    out = honour_fixed_split(new, fixed).set_index("image")["split"]
    assert out.to_dict() == {"a/1": "test", "a/2": "test", "b/1": "train", "c/1": "val",
                             "c/2": "val", "d/1": "train", "e/1": "val"}  # a/3 left out: leak
    with pytest.raises(PoseopsError, match="a/2"):
        honour_fixed_split(new[new.image != "a/2"], fixed)
    assert np.array_equal(fixed.image, ["a/1", "a/2", "b/1", "c/1"])


def _nan_row(project: Path, image: str, scorer: str = "alice") -> None:
    """DLC's labeling GUI saves an untouched frame as an all-NaN row."""
    h5 = project / "labeled-data/m1-s4" / f"CollectedData_{scorer}.h5"
    wide = dlcio.read_collected_data(h5)
    long = dlcio.wide_to_long(wide)
    cfg = dlcio.read_config(project)
    nan = long[long.image == long.image.iloc[0]].assign(image=image, x=np.nan, y=np.nan)
    new = pd.concat([long, nan], ignore_index=True)[["image", "scorer", "bodypart", "x", "y"]]
    dlcio.write_collected_data(dlcio.labels_to_wide(new, scorer, list(cfg["bodyparts"])), h5)


def test_skip_unrefined_merges_the_relabeled_and_keeps_the_rest(picked):
    """Frames 4 and 17 relabeled, 9 saved untouched (all NaN): 4 and 17 join iteration 1, 9 is
    recorded as skipped and kept in merge.pending; the next round merges it once relabeled."""
    repo, project, manifest, params = picked
    relabel_from_truth(project, manifest[manifest.frame != 9], "alice")
    img9 = manifest.loc[manifest.frame == 9, "image"].item()
    _nan_row(project, img9)
    params.skip_unrefined = True
    report = M.merge_iteration(params, project)
    assert report["iteration"] == 1 and report["frames_added"] == 2
    assert report["frames_skipped"] == 1 and report["skipped"] == [img9]
    pending = pd.read_csv(params.pending)
    assert pending.image.tolist() == [img9] and pending.iteration.tolist() == [0]
    # the dataset of iteration 1: the labels DLC reads (ingest) hold 4 and 17, not 9
    from poseops.data.ingest import ingest_project

    labels = ingest_project(project, repo / "data/metadata/videos.csv")
    m14 = labels[labels.video == "m1-s4"]
    assert sorted(m14.loc[m14.labeled, "image"].unique()) == sorted(
        manifest.loc[manifest.frame != 9, "image"])
    assert "data/refine/outliers/pending.csv" in sh(["git", "show", "--stat", "iteration-1"], repo)
    # next round: outliers lists the pending frame again; relabeled, a plain merge takes it
    man2 = O.with_pending(manifest.iloc[:0], Path(params.pending))
    assert man2.image.tolist() == [img9] and man2.rule.tolist() == ["pending"]
    man2.to_csv(params.manifest, index=False)
    relabel_from_truth(project, man2, "alice")
    params.skip_unrefined = False
    report2 = M.merge_iteration(params, project)
    assert report2["iteration"] == 2 and report2["frames_added"] == 1
    assert pd.read_csv(params.pending).empty


def test_skip_unrefined_with_nothing_relabeled_is_refused(picked):
    repo, project, manifest, params = picked
    before = _state(repo, project)
    params.skip_unrefined = True
    with pytest.raises(PoseopsError, match="none of the 3 manifest frames is relabeled yet"):
        M.merge_iteration(params, project)
    assert _state(repo, project) == before and not Path(params.pending).exists()


def test_skip_unrefined_from_the_command_line(picked, capsys):
    from poseops.cli import main

    repo, project, manifest, params = picked
    relabel_from_truth(project, manifest[manifest.frame == 4], "alice")
    (repo / "params.yaml").write_text("project:\n  path: data/raw/demo\n")
    assert main(["merge", "--no-git"]) == 2  # default: a frame not relabeled is refused
    assert "not relabeled" in capsys.readouterr().err
    assert main(["merge", "--no-git", "--skip-unrefined"]) == 0
    rep = __import__("json").loads(Path(params.report).read_text())
    assert rep["frames_added"] == 1 and rep["frames_skipped"] == 2
