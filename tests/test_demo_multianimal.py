"""The multi-animal demo project (maDLC): DLC-readable, animals cross and hide each other, labels
match the ground truth within the noise model, identity swaps are where the swap list says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.cli import main
from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.demo.project import generate_demo

MARKER = "marker"


@pytest.fixture(scope="module")
def ma_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-size demo with two animals per video and one unique bodypart."""
    out = tmp_path_factory.mktemp("ma") / "demo"
    return generate_demo(out, DemoParams(animals_per_video=2, unique_bodyparts=[MARKER]),
                         metadata=out.parent / "videos.csv")


@pytest.fixture(scope="module")
def ma3_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo with three animals per video, no unique bodypart."""
    out = tmp_path_factory.mktemp("ma3") / "demo"
    return generate_demo(out, DemoParams.small_multi(animals_per_video=3))


# --------------------------------------------------------------------------- helpers (plain pandas)
def _read_long(h5: Path) -> pd.DataFrame:
    """A CollectedData .h5 -> one row per (image, individual, bodypart), with pandas only."""
    df = pd.read_hdf(h5)
    scorer = df.columns.get_level_values(0)[0]
    df.columns = df.columns.droplevel(0)
    long = df.stack(level=[0, 1], future_stack=True).reset_index()
    long.columns = ["a", "b", "c", S.INDIVIDUAL, S.BODYPART, S.X, S.Y]
    long[S.IMAGE] = long["a"] + "/" + long["b"] + "/" + long["c"]
    long[S.SCORER] = scorer
    return long[[S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y]]


def _labels(project: Path, scorer: str) -> pd.DataFrame:
    files = sorted((project / "labeled-data").glob(f"*/CollectedData_{scorer}.h5"))
    return pd.concat([_read_long(f) for f in files], ignore_index=True)


def _with_truth(project: Path, scorer: str) -> pd.DataFrame:
    gt = pd.read_csv(project / "ground_truth.csv")
    return _labels(project, scorer).merge(
        gt, on=[S.IMAGE, S.INDIVIDUAL, S.BODYPART], suffixes=("", "_true"), validate="one_to_one")


def _centroids(tracks: pd.DataFrame) -> pd.DataFrame:
    """Per (video, frame): each animal's keypoint centroid, columns (x|y, individual)."""
    an = tracks[tracks[S.INDIVIDUAL] != S.SINGLE]
    return an.groupby([S.VIDEO, S.FRAME, S.INDIVIDUAL])[[S.X, S.Y]].mean().unstack(S.INDIVIDUAL)


def _pair_distances(cent: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    inds = sorted(cent[S.X].columns)
    return {
        (a, b): np.hypot(cent[S.X][a] - cent[S.X][b], cent[S.Y][a] - cent[S.Y][b])
        for i, a in enumerate(inds) for b in inds[i + 1:]
    }


def _to_segment(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(q - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0, 1)
    return float(np.hypot(*(q - (a + t * (b - a)))))


def _hashes(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.suffix in (".csv", ".png")}


# --------------------------------------------------------------------------- DLC compatibility
def test_config_is_what_deeplabcut_expects(ma_project: Path):
    from deeplabcut.core.config.project_config import ProjectConfig
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(str(ma_project / "config.yaml"))
    assert cfg["multianimalproject"] is True and cfg["identity"] is False
    assert cfg["bodyparts"] == "MULTI!"
    assert list(cfg["individuals"]) == ["animal1", "animal2"]
    assert list(cfg["multianimalbodyparts"]) == BODYPARTS
    assert list(cfg["uniquebodyparts"]) == [MARKER]
    assert cfg["scorer"] == "alice"
    # every skeleton edge joins multi-animal bodyparts; video_sets = the labeled videos
    assert {b for edge in cfg["skeleton"] for b in edge} <= set(BODYPARTS)
    labeled = sorted(d.name for d in (ma_project / "labeled-data").iterdir())
    assert sorted(Path(v).stem for v in cfg["video_sets"]) == labeled
    assert all((ma_project / "videos" / f"{v}.mp4").is_file() for v in labeled)
    # the keys are DLC's own, in the order DLC's ProjectConfig writes them
    import yaml

    ours = list(yaml.safe_load((ma_project / "config.yaml").read_text()))
    dlc = list(ProjectConfig(multianimalproject=True, bodyparts="MULTI!").to_dict())
    assert set(ours) <= set(dlc)
    assert ours == [k for k in dlc if k in ours]


def test_deeplabcut_reads_the_labels(ma_project: Path, tmp_path: Path):
    """DLC's merge (what create_training_dataset reads) sees every labeled frame with the 4-level
    header in DLC's column order; the .csv twin holds the same numbers."""
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(str(ma_project / "config.yaml"))
    merged = merge_annotateddatasets(cfg, tmp_path)
    p = DemoParams()
    assert merged.shape == (p.animals * p.sessions * p.labeled_per_video, (2 * 4 + 1) * 2)
    assert list(merged.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    expected = [("alice", i, b, c) for i in ("animal1", "animal2") for b in BODYPARTS
                for c in "xy"] + [("alice", S.SINGLE, MARKER, c) for c in "xy"]
    assert list(merged.columns) == expected
    for h5 in sorted((ma_project / "labeled-data").glob("*/CollectedData_*.h5")):
        csv = pd.read_csv(h5.with_suffix(".csv"), header=[0, 1, 2, 3], index_col=[0, 1, 2])
        pd.testing.assert_frame_equal(csv, pd.read_hdf(h5), check_names=False)
    alice = _labels(ma_project, "alice")
    gt = pd.read_csv(ma_project / "ground_truth.csv")
    assert set(alice[S.IMAGE]) == set(gt[S.IMAGE]) == {"/".join(i) for i in merged.index}


def test_three_animals_read_by_deeplabcut(ma3_project: Path, tmp_path: Path):
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(str(ma3_project / "config.yaml"))
    assert list(cfg["individuals"]) == ["animal1", "animal2", "animal3"]
    assert list(cfg["uniquebodyparts"]) == []
    merged = merge_annotateddatasets(cfg, tmp_path)
    assert merged.shape == (2 * 3 * 6, 3 * 4 * 2)
    assert S.SINGLE not in merged.columns.get_level_values("individuals")


def test_ingest_reads_every_labeler(ma_project: Path):
    """`poseops ingest` gives one row per (image, scorer, individual, bodypart) with the numbers
    of the files (read here with plain pandas) and the group's metadata."""
    from poseops.data.ingest import ingest_project

    tidy = ingest_project(ma_project, metadata=ma_project.parent / "videos.csv")
    assert not tidy.duplicated([S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART]).any()
    files = pd.concat([_labels(ma_project, s) for s in DemoParams().labelers], ignore_index=True)
    both = tidy.merge(files, on=[S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART],
                      suffixes=("", "_file"), validate="one_to_one")
    assert len(both) == len(tidy) == len(files)
    np.testing.assert_array_equal(both[S.X], both["x_file"])
    np.testing.assert_array_equal(both[S.Y], both["y_file"])
    assert (both[S.ANIMAL] == both[S.VIDEO].str.split("-").str[0]).all()


# --------------------------------------------------------------------------- labels vs truth
def test_labels_within_noise_of_truth(ma_project: Path):
    p = DemoParams()
    swaps = pd.read_csv(ma_project / "label_swaps.csv")
    for scorer in p.labelers:
        d = _with_truth(ma_project, scorer).dropna(subset=[S.X])
        swapped = set(swaps.loc[swaps[S.SCORER] == scorer, S.IMAGE])
        d = d[~d[S.IMAGE].isin(swapped)]
        if scorer == p.biased_labeler:  # carol's snout: offset by bias_px (every animal)
            snout = d[d[S.BODYPART] == p.biased_bodypart]
            assert len(snout) >= 30
            assert (snout[S.X] - snout["x_true"]).mean() == pytest.approx(p.bias_px[0], abs=0.5)
            assert (snout[S.Y] - snout["y_true"]).mean() == pytest.approx(p.bias_px[1], abs=0.5)
            d = d[d[S.BODYPART] != p.biased_bodypart]
        err = np.concatenate([d[S.X] - d["x_true"], d[S.Y] - d["y_true"]])
        assert len(err) >= 200, scorer
        assert abs(err.mean()) < 0.3, scorer
        assert 0.75 * p.labeler_noise_px < err.std() < 1.25 * p.labeler_noise_px, scorer
        assert np.abs(err).max() < 5 * p.labeler_noise_px, scorer
    # the unique bodypart sits under DLC's "single" individual and is labeled too
    alice = _with_truth(ma_project, "alice")
    marker = alice[alice[S.BODYPART] == MARKER]
    assert (marker[S.INDIVIDUAL] == S.SINGLE).all() and marker[S.X].notna().mean() > 0.7


def test_occluded_keypoints_are_nan_for_everyone(ma_project: Path):
    p = DemoParams()
    gt = pd.read_csv(ma_project / "ground_truth.csv", keep_default_na=False)
    n_frames = p.animals * p.sessions * p.labeled_per_video
    assert len(gt) == n_frames * (2 * len(BODYPARTS) + 1)
    for scorer in p.labelers:
        d = _with_truth(ma_project, scorer)
        # a swapped frame moves labels (with their NaNs) to the other animal's name
        swaps = pd.read_csv(ma_project / "label_swaps.csv")
        d = d[~d[S.IMAGE].isin(swaps.loc[swaps[S.SCORER] == scorer, S.IMAGE])]
        occl = d["occluded"].astype(str) == "True"
        assert (d[S.X].isna() == occl).all() and (d[S.Y].isna() == occl).all(), scorer
    by = gt["occluded_by"]
    assert ((by != "") == (gt["occluded"].astype(str) == "True")).all()
    manifest = json.loads((ma_project / "demo_manifest.json").read_text())
    assert manifest["animal_occlusions"] == int(by.str.startswith("animal").sum()) > 0
    assert manifest["bedding_occlusions"] == int((by == "bedding").sum())
    assert manifest["bedding_occlusions"] == round(p.occlusion_rate * len(gt))
    # a keypoint hidden by an animal lies under that animal's body (within 7 px of its midline
    # tail base - between the ears - snout; the body is ~12 px wide), and the hiding animal is
    # drawn above the hidden one (the video's depth order)
    hidden = gt[by.str.startswith("animal")]
    kp = gt.set_index([S.IMAGE, S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]]
    for _, r in hidden.iterrows():
        o = kp.loc[(r[S.IMAGE], r["occluded_by"])]
        ears = (o.loc["leftear"] + o.loc["rightear"]) / 2
        line = [o.loc["tailbase"].to_numpy(), ears.to_numpy(), o.loc["snout"].to_numpy()]
        q = np.array([r[S.X], r[S.Y]])
        assert min(_to_segment(q, a, b) for a, b in zip(line, line[1:], strict=False)) < 7.0, r.to_dict()
    order = {v[S.VIDEO]: v["depth_order"] for v in manifest["videos"]}
    for _, r in hidden.iterrows():
        if r[S.INDIVIDUAL] != S.SINGLE:
            levels = order[r[S.VIDEO]]
            assert levels.index(r["occluded_by"]) > levels.index(r[S.INDIVIDUAL])


def test_animals_cross_and_hide_each_other_in_every_video(ma_project: Path, ma3_project: Path):
    for project, n_animals in ((ma_project, 2), (ma3_project, 3)):
        tracks = pd.read_csv(project / "ground_truth_tracks.csv")
        manifest = json.loads((project / "demo_manifest.json").read_text())
        assert sorted(set(tracks[S.INDIVIDUAL]) - {S.SINGLE}) == manifest["individuals"]
        assert len(manifest["individuals"]) == n_animals
        dist = _pair_distances(_centroids(tracks))
        for video in tracks[S.VIDEO].unique():
            per_pair = {k: v.loc[video] for k, v in dist.items()}
            # crossing: two animals' bodies on top of each other (centroids < 10 px apart) ...
            assert min(d.min() for d in per_pair.values()) < 10.0, video
            # ... every animal takes part in one; and they are not stacked all the time
            crossed = {a for (a, b), d in per_pair.items() if d.min() < 10.0 for a in (a, b)}
            assert crossed == set(manifest["individuals"]), video
            assert max(d.max() for d in per_pair.values()) > 20.0, video
        gt = pd.read_csv(project / "ground_truth.csv", keep_default_na=False)
        hidden = gt[gt["occluded_by"].str.startswith("animal")]
        assert set(hidden[S.VIDEO]) == set(gt[S.VIDEO])  # every labeled video shows one


def test_swaps_are_where_the_list_says(ma_project: Path, ma3_project: Path):
    """Listed (image, labeler): the two animals' labels sit on each other's true positions;
    every other frame where the animals are apart: each label on its own animal."""
    for project in (ma_project, ma3_project):
        manifest = json.loads((project / "demo_manifest.json").read_text())
        swaps = pd.read_csv(project / "label_swaps.csv")
        assert len(swaps) == manifest["swaps"]["n"] > 0
        assert set(swaps[S.SCORER]) == {manifest["swaps"]["labeler"]}
        gt = pd.read_csv(project / "ground_truth.csv")
        truth = gt.set_index([S.IMAGE, S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]]
        inds = manifest["individuals"]
        cent = gt[gt[S.INDIVIDUAL] != S.SINGLE].groupby([S.IMAGE, S.INDIVIDUAL])[[S.X, S.Y]].mean()
        cent = cent.unstack(S.INDIVIDUAL)
        apart = pd.concat(_pair_distances(cent).values(), axis=1).min(axis=1) >= 8.0
        listed = {(r[S.IMAGE], r[S.SCORER], *sorted([r["individual_a"], r["individual_b"]]))
                  for _, r in swaps.iterrows()}
        found = set()
        for scorer in manifest["labelers"]:
            lab = _labels(project, scorer)
            lab = lab[lab[S.INDIVIDUAL] != S.SINGLE]
            swapped_here = {x[0] for x in listed if x[1] == scorer}
            for image, g in lab.groupby(S.IMAGE):
                if not apart[image] and image not in swapped_here:
                    continue  # animals on top of each other: who is who is not visible
                # mean distance of individual i's labels to animal j's true keypoints
                cost = np.full((len(inds), len(inds)), np.nan)
                for i, a in enumerate(inds):
                    la = g[g[S.INDIVIDUAL] == a].set_index(S.BODYPART)[[S.X, S.Y]]
                    for j, b in enumerate(inds):
                        tb = truth.loc[(image, b)].loc[la.index]
                        cost[i, j] = np.nanmean(np.hypot(*(la.to_numpy() - tb.to_numpy()).T))
                nearest = [inds[int(np.nanargmin(r))] if np.isfinite(r).any() else a
                           for a, r in zip(inds, cost, strict=True)]  # all hidden: no say
                wrong = [a for a, n in zip(inds, nearest, strict=True) if a != n]
                if wrong:
                    assert len(wrong) == 2, (image, scorer)
                    found.add((image, scorer, *sorted(wrong)))
        assert found == listed


# --------------------------------------------------------------------------- design, CLI, seed
def test_design_metadata_and_locomotion(ma_project: Path):
    p = DemoParams()
    meta = pd.read_csv(ma_project.parent / "videos.csv")
    assert list(meta.columns) == [S.VIDEO, *S.METADATA_COLUMNS]
    assert all(v == f"{a}-{s}" for v, a, s in zip(meta[S.VIDEO], meta[S.ANIMAL], meta[S.SESSION],
                                                  strict=True))
    labeled = meta[meta[S.VIDEO].isin([d.name for d in (ma_project / "labeled-data").iterdir()])]
    assert len(labeled) == p.animals * p.sessions
    per_group = labeled.groupby(S.ANIMAL)[S.CONDITION].agg(sorted)
    assert all(c == sorted(p.conditions) for c in per_group)  # crossover per group
    # the dose effect on walking speed holds for the animals of a group too
    tracks = pd.read_csv(ma_project / "ground_truth_tracks.csv")
    tb = tracks[tracks[S.BODYPART] == "tailbase"].sort_values([S.VIDEO, S.INDIVIDUAL, S.FRAME])
    g = tb.groupby([S.VIDEO, S.INDIVIDUAL])
    step = np.hypot(g[S.X].diff(), g[S.Y].diff())
    speed = step.groupby(tb[S.VIDEO]).mean().rename("speed").reset_index()
    by_cond = meta.merge(speed, on=S.VIDEO).groupby(S.CONDITION)["speed"].mean()
    assert by_cond["vehicle"] < by_cond["low_dose"] < by_cond["high_dose"]


def test_byte_for_byte_deterministic(tmp_path: Path):
    p = DemoParams.small_multi(unique_bodyparts=[MARKER])
    a = generate_demo(tmp_path / "a", p)
    b = generate_demo(tmp_path / "b", p)
    ha, hb = _hashes(a), _hashes(b)
    assert len(ha) == 6 * (6 + 3) + 3  # per video 6 PNG + 3 labeler CSVs; truth, tracks, swaps
    assert ha == hb
    c = generate_demo(tmp_path / "c", DemoParams.small_multi(unique_bodyparts=[MARKER], seed=8))
    assert _hashes(c)["ground_truth.csv"] != ha["ground_truth.csv"]


def test_cli_multi_animal_and_back_to_single(tmp_path: Path, repo_root: Path):
    out, meta = tmp_path / "proj", tmp_path / "videos.csv"
    args = ["demo", "--small", "--out", str(out), "--metadata", str(meta),
            "--params", str(repo_root / "params.yaml")]
    assert main([*args, "--multi-animal"]) == 0
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["multianimalproject"] is True and cfg["individuals"] == ["animal1", "animal2"]
    assert sorted(pd.read_csv(meta)[S.ANIMAL].unique()) == ["g1", "g2"]
    # regenerating as single-animal leaves no multi-animal file behind
    assert main(args) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["multianimalproject"] is False
    assert not (out / "label_swaps.csv").exists()
    assert sorted(d.name for d in (out / "labeled-data").iterdir())[0] == "m1-s1"
    assert S.INDIVIDUAL not in pd.read_csv(out / "ground_truth.csv").columns


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(swap_labeler="dave"), "swap_labeler"),
        (dict(unique_bodyparts=["snout"]), "unique_bodyparts"),
        (dict(animals_per_video=5), "animals_per_video"),
    ],
)
def test_bad_params_are_one_line_errors(tmp_path: Path, overrides: dict, words: str):
    with pytest.raises(PoseopsError, match=words):
        generate_demo(tmp_path / "x", DemoParams.small_multi(**overrides))
