"""poseops.data.split: grouped + stratified without leakage, validation carved from train, seeded,
leave-one-out by any metadata column, impossible requests refused with an explanation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops import cli
from poseops.commands import split as CS
from poseops.config.data import SplitParams
from poseops.core.errors import PoseopsError
from poseops.data import split as SP

CONDITIONS = ["vehicle", "low_dose", "high_dose"]


def make_labels(
    animals: int = 4,
    sessions: int = 3,
    frames: int | None = None,
    seed: int = 0,
    bodyparts: int = 2,
) -> pd.DataFrame:
    """Crossover design: animal a gets condition (a + s) % 3 in session s; one video per
    (animal, session); frames per video random (5..14) unless given."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(animals):
        for s in range(sessions):
            video = f"m{a}s{s}"
            n = frames or int(rng.integers(5, 15))
            for f in range(n):
                for b in range(bodyparts):
                    rows.append(
                        {
                            "image": f"labeled-data/{video}/img{f:04d}.png",
                            "video": video,
                            "frame": f,
                            "scorer": "alice",
                            "bodypart": f"bp{b}",
                            "x": 1.0,
                            "y": 1.0,
                            "animal": f"m{a}",
                            "session": s + 1,
                            "condition": CONDITIONS[(a + s) % 3],
                        }
                    )
    return pd.DataFrame(rows)


def params(**kw) -> SplitParams:
    return SplitParams(**kw)


def crossing(split: pd.DataFrame, col: str) -> int:
    """Independent leakage count: values of ``col`` present in more than one split."""
    return sum(len(set(g)) > 1 for _, g in split.groupby(col)["split"])


def test_grouped_no_leakage_every_condition_in_test_and_train() -> None:
    labels = make_labels()
    split = SP.make_split(labels, params())
    assert list(split.columns) == ["image", "video", "group", "split", "condition"]
    assert len(split) == labels["image"].nunique() and split["image"].is_unique
    assert crossing(split, "video") == 0 and crossing(split, "group") == 0
    assert (split["group"] == split["video"]).all()
    for name in ("train", "test"):
        assert set(split.loc[split["split"] == name, "condition"]) == set(CONDITIONS), name
    assert (split["split"] == "val").any()
    assert all(len(set(split.loc[split["group"] == g, "split"])) == 1 for g in set(split["group"]))


def test_group_by_several_columns_and_by_animal() -> None:
    labels = make_labels(animals=6)
    by_as = SP.make_split(labels, params(group_by=["animal", "session"]))
    assert crossing(by_as, "group") == 0
    frames = labels.drop_duplicates("image").set_index("image")
    expected = frames["animal"] + "|" + frames["session"].astype(str)
    assert (by_as.set_index("image")["group"] == expected.loc[by_as["image"]]).all()
    by_animal = SP.make_split(labels, params(group_by=["animal"]))
    animal = frames.loc[by_animal["image"], "animal"].to_numpy()
    assert crossing(by_animal.assign(animal=animal), "animal") == 0
    assert set(by_animal.loc[by_animal["split"] == "test", "condition"]) == set(CONDITIONS)


def test_seeded_and_deterministic() -> None:
    labels = make_labels(animals=8)
    a = SP.make_split(labels, params(seed=3))
    b = SP.make_split(labels.sample(frac=1, random_state=1), params(seed=3))  # row order irrelevant
    pd.testing.assert_frame_equal(a, b)
    splits = {tuple(SP.make_split(labels, params(seed=s))["split"]) for s in range(6)}
    assert len(splits) > 1  # the seed matters


@pytest.mark.parametrize("test_fraction,val_fraction", [(0.2, 0.15), (0.3, 0.25), (0.1, 0.1)])
def test_fractions_approximately_honoured(test_fraction: float, val_fraction: float) -> None:
    labels = make_labels(animals=20, sessions=3, frames=10)  # 20 videos of 10 frames per condition
    split = SP.make_split(labels, params(test_fraction=test_fraction, val_fraction=val_fraction))
    per = pd.crosstab(split["condition"], split["split"])
    total = per.sum(axis=1)
    # per condition, test is within half a video (5 frames) of the target
    assert (abs(per["test"] - test_fraction * total) <= 5).all(), per
    train_val = per["train"].sum() + per["val"].sum()
    assert abs(per["val"].sum() - val_fraction * train_val) <= 5
    assert per["val"].gt(0).sum() == len(CONDITIONS)  # val spread over conditions


def test_leave_one_out_animal() -> None:
    labels = make_labels(animals=5)
    split = SP.make_split(
        labels, params(mode="leave-one-out", holdout_column="animal", holdout_value="m2")
    )
    frames = labels.drop_duplicates("image").set_index("image")
    in_test = set(split.loc[split["split"] == "test", "image"])
    assert in_test == set(frames.index[frames["animal"] == "m2"])
    assert crossing(split, "group") == 0 and (split["split"] == "val").any()
    # every condition of the remaining animals stays in train
    assert set(split.loc[split["split"] == "train", "condition"]) == set(CONDITIONS)


def test_leave_one_out_session_value_as_number_or_text() -> None:
    labels = make_labels()
    a = SP.make_split(
        labels, params(mode="leave-one-out", holdout_column="session", holdout_value=2)
    )
    b = SP.make_split(
        labels, params(mode="leave-one-out", holdout_column="session", holdout_value="2")
    )
    pd.testing.assert_frame_equal(a, b)
    frames = labels.drop_duplicates("image").set_index("image")
    assert set(a.loc[a["split"] == "test", "image"]) == set(frames.index[frames["session"] == 2])


def test_leave_one_out_condition_cohort() -> None:
    labels = make_labels()
    split = SP.make_split(
        labels, params(mode="leave-one-out", holdout_column="condition", holdout_value="high_dose")
    )
    assert set(split.loc[split["split"] == "test", "condition"]) == {"high_dose"}
    assert "high_dose" not in set(split.loc[split["split"] != "test", "condition"])


def test_refuses_condition_with_a_single_group() -> None:
    labels = make_labels()
    labels = labels[~((labels["condition"] == "high_dose") & (labels["video"] != "m0s2"))]
    with pytest.raises(PoseopsError) as e:
        SP.make_split(labels, params())
    msg = str(e.value)
    assert "'high_dose'" in msg and "only 1 group (video=m0s2)" in msg
    assert "leave-one-out" in msg and "holdout_column: condition" in msg


def test_refuses_single_group_dataset_without_strata() -> None:
    labels = make_labels(animals=1, sessions=1)
    with pytest.raises(PoseopsError, match="the dataset has labeled frames in only 1 group"):
        SP.make_split(labels, params(stratify_by=None))


def test_refuses_too_few_groups_for_val() -> None:
    labels = make_labels(animals=2)  # 2 videos per condition: 1 test + 1 train each
    with pytest.raises(PoseopsError, match="too few groups for a validation set.*val_fraction: 0"):
        SP.make_split(labels, params())
    split = SP.make_split(labels, params(val_fraction=0))
    assert set(split["split"]) == {"train", "test"}
    assert crossing(split, "group") == 0


def test_refuses_bad_leave_one_out_requests() -> None:
    labels = make_labels()
    with pytest.raises(
        PoseopsError, match=r"animal='m9'.*existing values: \['m0', 'm1', 'm2', 'm3'\]"
    ):
        SP.make_split(
            labels, params(mode="leave-one-out", holdout_column="animal", holdout_value="m9")
        )
    with pytest.raises(PoseopsError, match="holdout_column"):
        SP.make_split(labels, params(mode="leave-one-out"))
    with pytest.raises(PoseopsError, match="add 'session' to split.group_by"):
        SP.make_split(
            labels,
            params(
                mode="leave-one-out", group_by=["animal"], holdout_column="session", holdout_value=1
            ),
        )
    with pytest.raises(PoseopsError, match="'cohort' is not in the labels table"):
        SP.make_split(
            labels, params(mode="leave-one-out", holdout_column="cohort", holdout_value=1)
        )


def test_refuses_missing_metadata_and_bad_settings() -> None:
    labels = make_labels()
    labels.loc[labels["video"] == "m1s1", "condition"] = None
    with pytest.raises(PoseopsError, match="have no 'condition'.*m1s1.*stratify_by: null"):
        SP.make_split(labels, params())
    with pytest.raises(PoseopsError, match="mode must be one of"):
        SP.make_split(make_labels(), params(mode="random"))
    with pytest.raises(PoseopsError, match="test_fraction must be 0 < x < 1"):
        SP.make_split(make_labels(), params(test_fraction=1.0))


def test_cli_writes_split_csv(tmp_path: Path) -> None:
    """The written split.csv has the properties of a split, checked from the labels alone (every
    image once, the fractions within one video, no video in two splits); same seed, same file."""
    labels = make_labels()
    labels.to_parquet(tmp_path / "labels.parquet")

    def run_cli(name: str) -> Path:
        out = tmp_path / name / "split.csv"
        (tmp_path / "params.yaml").write_text(
            yaml.safe_dump(
                {"split": {"input": str(tmp_path / "labels.parquet"), "out": str(out), "seed": 1}}
            )
        )
        assert cli.main(["split", "--params", str(tmp_path / "params.yaml")]) == 0
        return out

    out = run_cli("processed")
    written = pd.read_csv(out)
    assert list(written.columns) == ["image", "video", "group", "split", "condition"]
    assert sorted(written["image"]) == sorted(set(labels["image"]))  # every image, once
    frames = labels.drop_duplicates("image").set_index("image")
    assert (written["video"] == frames.loc[written["image"], "video"].to_numpy()).all()
    assert (written["condition"] == frames.loc[written["image"], "condition"].to_numpy()).all()
    assert set(written["split"]) == {"train", "val", "test"}
    for video in set(written["video"]):  # no video (the default group) in two splits
        assert written.loc[written["video"] == video, "split"].nunique() == 1, video
    biggest = frames["video"].value_counts().max()  # whole videos: within one video of the target
    for condition, part in written.groupby("condition"):
        n_test = (part["split"] == "test").sum()
        assert abs(n_test - 0.2 * len(part)) <= biggest, condition  # split.test_fraction default
        assert (part["split"] == "train").any(), condition
    train_val = written[written["split"] != "test"]
    n_val = (train_val["split"] == "val").sum()  # split.val_fraction default, one video per condition
    assert abs(n_val - 0.3 * len(train_val)) <= biggest * len(CONDITIONS)
    assert run_cli("again").read_bytes() == out.read_bytes()  # seeded: the same file twice


def test_cli_refusal_leaves_no_output(tmp_path: Path, capsys) -> None:
    labels = make_labels(animals=1)
    labels.to_parquet(tmp_path / "labels.parquet")
    out = tmp_path / "split.csv"
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"split": {"input": str(tmp_path / "labels.parquet"), "out": str(out)}})
    )
    assert cli.main(["split", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "only 1 group" in capsys.readouterr().err
    assert not out.exists()


def test_demo_split(demo_project: Path, demo_metadata: Path) -> None:
    from poseops.data.ingest import ingest_project

    labels = ingest_project(demo_project, demo_metadata)
    split = SP.make_split(labels, params())
    frames = labels.drop_duplicates("image")
    assert len(split) == len(frames)
    assert crossing(split, "video") == 0
    per = pd.crosstab(split["condition"], split["split"])
    assert (per["test"] > 0).all() and (per["train"] > 0).all()
    # the demo is balanced (same frames per video): equal test frames per condition
    counts = frames.groupby("video").size()
    if counts.nunique() == 1:
        assert per["test"].nunique() == 1


def test_demo_params_select_models_on_every_condition(
    demo_project: Path, demo_metadata: Path, repo_root: Path
) -> None:
    """The shipped params.yaml on the demo: the validation set (what DLC's best snapshot and the
    sweep choose on) holds every condition, as the guide's split protocol asks, and whole videos;
    training keeps every condition and most frames."""
    from poseops.config.loader import section
    from poseops.data.ingest import ingest_project

    labels = ingest_project(demo_project, demo_metadata)
    split = SP.make_split(labels, section("split", SplitParams, repo_root / "params.yaml"))
    per = pd.crosstab(split["condition"], split["split"])
    assert (per[["train", "val", "test"]] > 0).all().all(), per
    assert crossing(split, "video") == 0
    n = split["split"].value_counts()
    assert n["train"] > n["val"] and n["train"] > n["test"], n


def test_openfield_single_video_is_refused_with_advice(openfield: Path) -> None:
    from poseops.data.ingest import ingest_project

    labels = ingest_project(openfield, None)
    assert labels["video"].nunique() == 1
    with pytest.raises(PoseopsError, match="no 'condition'.*stratify_by: null"):
        SP.make_split(labels, params())
    with pytest.raises(PoseopsError, match="only 1 group \\(video=m4s1\\)") as e:
        SP.make_split(labels, params(stratify_by=None))
    assert "mode: temporal-blocks" in str(e.value)  # the option that works on one video


def test_split_stage_keeps_the_previous_iterations_split(tmp_path: Path) -> None:
    """After `poseops merge`, `poseops split` keeps the fixed split: old images keep theirs,
    new frames of a known group follow it (test groups' new frames are left out), new groups
    never enter test."""
    labels = make_labels(animals=4, frames=6)
    first = SP.make_split(labels, params())
    fixed = tmp_path / "fixed_split.csv"
    first.to_csv(fixed, index=False)
    # next iteration: new frames in every old video + two new animals (new groups)
    extra = make_labels(animals=6, frames=9, seed=1)
    extra = extra[extra["frame"] >= 6]
    grown = pd.concat([labels, extra], ignore_index=True)
    grown.to_parquet(tmp_path / "labels.parquet")
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"split": {
        "input": str(tmp_path / "labels.parquet"), "out": str(tmp_path / "split.csv"),
        "fixed_split": str(fixed)}}))
    out = CS.run(str(p)).set_index("image")["split"]
    prev = first.set_index("image")["split"]
    assert (out.reindex(prev.index) == prev).all()
    new = out[~out.index.isin(prev.index)]
    assert len(new) > 0 and (new != "test").all()
    test_videos = set(first.loc[first.split == "test", "video"])
    new_videos = {i.split("/")[1] for i in new.index}
    assert not (new_videos & test_videos)
    assert crossing(pd.read_csv(tmp_path / "split.csv"), "video") == 0


# ---------------------------------------------------------------------------- temporal blocks
def video_labels(frames: list[int] | range, video: str = "v0", **meta) -> pd.DataFrame:
    """One video, one scorer, two bodyparts, the given frame numbers (imgNNNN.png)."""
    rows = [
        {"image": f"labeled-data/{video}/img{f:04d}.png", "video": video, "frame": f,
         "scorer": "alice", "bodypart": f"bp{b}", "x": 1.0, "y": 1.0, **meta}
        for f in frames
        for b in range(2)
    ]
    return pd.DataFrame(rows)


def blocks_params(**kw) -> SplitParams:
    return params(**{"mode": "temporal-blocks", "stratify_by": None, **kw})


def brute_min_distance(split: pd.DataFrame) -> float:
    """Every pair of frames of one video in different splits: the smallest frame distance."""
    best = np.inf
    for _, g in split.groupby("video"):
        rows = list(zip(g["frame"], g["split"], strict=True))
        for i, (fa, sa) in enumerate(rows):
            for fb, sb in rows[i + 1:]:
                if sa != sb:
                    best = min(best, abs(fa - fb))
    return best


def brute_gap_drops(blocks: pd.DataFrame, gap: int) -> set[str]:
    """Independent loops: test frames stay; a val frame goes if within ``gap`` of a test frame;
    a train frame if within ``gap`` of a test frame or of a val frame that stayed."""
    drops: set[str] = set()
    for _, g in blocks.groupby("video"):
        recs = list(g[["image", "frame", "split"]].itertuples(index=False))
        test = [r.frame for r in recs if r.split == "test"]
        val_kept = []
        for r in recs:
            if r.split == "val":
                if any(abs(r.frame - t) <= gap for t in test):
                    drops.add(r.image)
                else:
                    val_kept.append(r.frame)
        for r in recs:
            if r.split == "train" and any(abs(r.frame - t) <= gap for t in test + val_kept):
                drops.add(r.image)
    return drops


def test_temporal_blocks_hand_computed_blocks_and_gap() -> None:
    frames = [0, 4, 9, 10, 17, 25, 29, 30, 44, 51, 58, 59, 60, 75, 99, 100, 101]
    labels = video_labels(frames)
    p = blocks_params(block_frames=10, gap_frames=3, test_fraction=0.2, val_fraction=0.3)
    blocks = SP.make_split(labels, p, gaps=False)  # before the gap frames are left out
    # block k of frame f is f // 10 (frames 10k .. 10k+9), named v0#b<k>, 2 digits
    expected = {
        0: "b00", 4: "b00", 9: "b00", 10: "b01", 17: "b01", 25: "b02", 29: "b02", 30: "b03",
        44: "b04", 51: "b05", 58: "b05", 59: "b05", 60: "b06", 75: "b07", 99: "b09",
        100: "b10", 101: "b10",
    }
    b = blocks.set_index("frame")
    assert b["group"].to_dict() == {f: f"v0#{k}" for f, k in expected.items()}
    start = {f: int(k[1:]) * 10 for f, k in expected.items()}
    assert b["block_start"].to_dict() == start
    assert b["block_end"].to_dict() == {f: s + 9 for f, s in start.items()}
    assert crossing(blocks, "group") == 0  # a block is never cut
    assert set(blocks["split"]) == {"train", "val", "test"}
    split = SP.make_split(labels, p)
    assert list(split.columns) == [
        "image", "video", "group", "split", "frame", "block_start", "block_end"]
    drops = brute_gap_drops(blocks, 3)
    assert drops and set(blocks["image"]) - set(split["image"]) == drops
    kept = blocks[blocks["image"].isin(split["image"])]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), split)  # the rest is unchanged
    assert brute_min_distance(split) > 3
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split.loc[split["split"] == "test", "image"].isin(
        blocks.loc[blocks["split"] == "test", "image"])).all()
    assert set(blocks.loc[blocks["split"] == "test", "image"]) <= set(split["image"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
@pytest.mark.parametrize("block_frames,gap_frames", [(20, 5), (10, 0), (7, 6)])
def test_temporal_blocks_gap_holds_by_brute_force(
    seed: int, block_frames: int, gap_frames: int
) -> None:
    rng = np.random.default_rng(seed)
    frames = sorted(rng.choice(400, size=120, replace=False).tolist())  # sparse, like k-means
    split = SP.make_split(video_labels(frames), blocks_params(
        block_frames=block_frames, gap_frames=gap_frames, seed=seed))
    assert brute_min_distance(split) > gap_frames
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split["block_start"] == split["frame"] // block_frames * block_frames).all()
    assert crossing(split, "group") == 0


def test_temporal_blocks_openfield_single_video(openfield: Path, repo_root: Path) -> None:
    """DLC's openfield example: one video (m4s1), 116 labeled frames. With the shipped params
    (block_frames, gap_frames) in temporal-blocks mode it gets train, val and test with no two
    frames of different splits within gap_frames."""
    from dataclasses import replace

    from poseops.config.loader import section
    from poseops.data.ingest import ingest_project

    labels = ingest_project(openfield, None)
    assert labels["video"].nunique() == 1 and labels["image"].nunique() == 116
    shipped = section("split", SplitParams, repo_root / "params.yaml")
    p = replace(shipped, mode="temporal-blocks", stratify_by=None)
    split = SP.make_split(labels, p)
    n = split["split"].value_counts()
    assert n["train"] > 0 and n["val"] > 0 and n["test"] > 0, n
    assert n["train"] > n["test"]
    assert brute_min_distance(split) > p.gap_frames
    frame = split["image"].str.extract(r"img(\d+)\.png")[0].astype(int)  # from the file name
    assert (split["frame"] == frame).all()
    assert (split["group"] == [f"m4s1#b{f // p.block_frames:02d}" for f in frame]).all()
    assert all(len(set(split.loc[split["group"] == g, "split"])) == 1 for g in set(split["group"]))
    assert split["image"].isin(labels["image"]).all()
    excluded = labels["image"].nunique() - len(split)
    assert 0 < excluded == len(brute_gap_drops(SP.make_split(labels, p, gaps=False), p.gap_frames))


def test_temporal_blocks_is_seeded_and_stratified() -> None:
    labels = make_labels(animals=4, sessions=3, frames=40)  # 12 videos, 40 consecutive frames
    p = params(mode="temporal-blocks", block_frames=10, gap_frames=2)
    a = SP.make_split(labels, p)
    pd.testing.assert_frame_equal(a, SP.make_split(labels.sample(frac=1, random_state=3), p))
    assert len({tuple(SP.make_split(labels, params(mode="temporal-blocks", block_frames=10,
                                                   gap_frames=2, seed=s))["split"])
                for s in range(4)}) > 1  # the seed matters
    for name in ("train", "val", "test"):
        assert set(a.loc[a["split"] == name, "condition"]) == set(CONDITIONS), name
    assert brute_min_distance(a) > 2
    assert crossing(a, "group") == 0
    n = a["split"].value_counts()
    assert abs(n["test"] - 0.2 * len(labels["image"].unique())) <= 20  # within 2 blocks


def test_temporal_blocks_refuses_a_video_too_short_for_three_blocks() -> None:
    labels = video_labels(range(30), video="m4s1")  # blocks of 20: frames 0-19, 20-29
    with pytest.raises(PoseopsError) as e:
        SP.make_split(labels, blocks_params(block_frames=20))
    msg = str(e.value)
    assert "\n" not in msg
    assert "video m4s1 (30 labeled frames, frames 0..29)" in msg
    assert "only 2 block(s) of block_frames=20, 3 are needed (train, val, test)" in msg
    assert "block_frames: 14 or less" in msg  # 14: blocks 0-13, 14-27, 28-29
    SP.make_split(labels, blocks_params(block_frames=14, gap_frames=0))  # ... and it works
    # without a validation set two blocks do
    two = SP.make_split(labels, blocks_params(block_frames=20, val_fraction=0, gap_frames=2))
    assert set(two["split"]) == {"train", "test"} and brute_min_distance(two) > 2
    with pytest.raises(PoseopsError, match="label at least 3 frames"):
        SP.make_split(video_labels([5, 6]), blocks_params(block_frames=1))
    with pytest.raises(PoseopsError, match="gap_frames=30 leaves no train frame.*lower"):
        SP.make_split(labels, blocks_params(block_frames=10, gap_frames=30))
    with pytest.raises(PoseopsError, match="block_frames must be an integer >= 1"):
        SP.make_split(labels, blocks_params(block_frames=0))


def test_temporal_blocks_needs_frame_numbers() -> None:
    labels = video_labels(range(60)).drop(columns="frame")  # parsed from the name instead
    split = SP.make_split(labels, blocks_params(block_frames=10, gap_frames=2))
    assert (split["frame"] == split["image"].str.extract(r"(\d+)\.png")[0].astype(int)).all()
    labels["image"] = labels["image"].str.replace(r"img(\d+)", r"img\1x", regex=True)
    with pytest.raises(PoseopsError, match="no frame number for 60 image"):
        SP.make_split(labels, blocks_params(block_frames=10))


def test_group_by_image_warns_that_it_leaks(caplog: pytest.LogCaptureFixture) -> None:
    labels = make_labels(animals=4, frames=8)
    with caplog.at_level("WARNING", logger="poseops.data.split"):
        split = SP.make_split(labels, params(group_by=["image"]))
    loud = [r for r in caplog.records if r.levelname == "WARNING" and "image" in r.getMessage()]
    assert len(loud) == 1, caplog.text
    msg = loud[0].getMessage()
    assert "neighbouring frames" in msg and "train and in test" in msg
    assert "optimistic" in msg and "temporal-blocks" in msg
    assert SP.frame_level_groups(split)
    caplog.clear()
    with caplog.at_level("WARNING", logger="poseops.data.split"):
        by_video = SP.make_split(labels, params())
    assert "optimistic" not in caplog.text and not SP.frame_level_groups(by_video)


def test_shipped_block_params_equal_the_dataclass_defaults(repo_root: Path) -> None:
    shipped = yaml.safe_load((repo_root / "params.yaml").read_text())["split"]
    assert shipped["block_frames"] == SplitParams().block_frames
    assert shipped["gap_frames"] == SplitParams().gap_frames
    assert "temporal-blocks" in SP.MODES


def test_fixed_split_keeps_the_held_out_cohort_held_out(tmp_path: Path) -> None:
    """Leave-one-out with a fixed test set: new frames of the held-out animal (here a new video
    of it, a new group) never enter train or val; the test set stays the fixed one."""
    labels = make_labels(animals=5, frames=6)
    p = {"mode": "leave-one-out", "holdout_column": "animal", "holdout_value": "m2"}
    first = SP.make_split(labels, params(**p))
    fixed = tmp_path / "fixed_split.csv"
    first.to_csv(fixed, index=False)
    more = make_labels(animals=5, sessions=4, frames=9, seed=1)
    more = more[(more["frame"] >= 6) | (more["session"] == 4)]  # new frames + session-4 videos
    grown = pd.concat([labels, more], ignore_index=True)
    grown.to_parquet(tmp_path / "labels.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {
        **p, "input": str(tmp_path / "labels.parquet"), "out": str(tmp_path / "split.csv"),
        "fixed_split": str(fixed)}}))
    out = CS.run(str(tmp_path / "params.yaml"))
    animal = out["image"].str.extract(r"labeled-data/(m\d)s")[0]
    assert (out.loc[animal == "m2", "split"] == "test").all()  # the cohort stays held out
    assert set(out.loc[out["split"] == "test", "image"]) == set(
        first.loc[first["split"] == "test", "image"])  # the fixed test set is unchanged
    new = out[~out["image"].isin(first["image"])]
    assert len(new) > 0 and set(new["split"]) <= {"train", "val"}
    new_m2 = set(more.loc[more["animal"] == "m2", "image"])
    assert new_m2 and not (new_m2 & set(out["image"]))  # left out, not trained on


def test_fixed_split_with_temporal_blocks_keeps_test_and_gap(tmp_path: Path) -> None:
    """Next iteration of a one-video temporal-blocks split: the fixed test images stay test, new
    frames follow their block (none enters test), and the gap still holds."""
    first_labels = video_labels(range(0, 120, 2))
    p = {"mode": "temporal-blocks", "stratify_by": None, "block_frames": 20, "gap_frames": 3}
    first = SP.make_split(first_labels, params(**p))
    fixed = tmp_path / "fixed_split.csv"
    first.to_csv(fixed, index=False)
    grown = video_labels(range(120))  # the odd frames are new
    grown.to_parquet(tmp_path / "labels.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {
        **p, "input": str(tmp_path / "labels.parquet"), "out": str(tmp_path / "split.csv"),
        "fixed_split": str(fixed)}}))
    out = CS.run(str(tmp_path / "params.yaml"))
    prev_test = set(first.loc[first["split"] == "test", "image"])
    assert set(out.loc[out["split"] == "test", "image"]) == prev_test
    assert brute_min_distance(out) > 3
    kept_old = out[out["image"].isin(first["image"])].set_index("image")["split"]
    assert (kept_old == first.set_index("image")["split"].loc[kept_old.index]).all()
    assert crossing(pd.read_csv(tmp_path / "split.csv"), "group") == 0
