"""poseops.split: grouped + stratified without leakage, validation carved from train, seeded,
leave-one-out by any metadata column, impossible requests refused with an explanation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops import cli
from poseops import split as SP
from poseops.errors import PoseopsError

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


def params(**kw) -> SP.SplitParams:
    return SP.SplitParams(**kw)


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
    assert SP.groups_crossing_splits(split) == []


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
    labels = make_labels()
    labels.to_parquet(tmp_path / "labels.parquet")
    out = tmp_path / "processed" / "split.csv"
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {"split": {"input": str(tmp_path / "labels.parquet"), "out": str(out), "seed": 1}}
        )
    )
    assert cli.main(["split", "--params", str(tmp_path / "params.yaml")]) == 0
    written = pd.read_csv(out)
    expected = SP.make_split(labels, params(seed=1))
    pd.testing.assert_frame_equal(written, expected.reset_index(drop=True), check_dtype=False)


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
    from poseops.ingest import ingest_project

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
    from poseops.ingest import ingest_project
    from poseops.params import section

    labels = ingest_project(demo_project, demo_metadata)
    split = SP.make_split(labels, section("split", SP.SplitParams, repo_root / "params.yaml"))
    per = pd.crosstab(split["condition"], split["split"])
    assert (per[["train", "val", "test"]] > 0).all().all(), per
    assert crossing(split, "video") == 0
    n = split["split"].value_counts()
    assert n["train"] > n["val"] and n["train"] > n["test"], n


def test_openfield_single_video_is_refused_with_advice(openfield: Path) -> None:
    from poseops.ingest import ingest_project

    labels = ingest_project(openfield, None)
    assert labels["video"].nunique() == 1
    with pytest.raises(PoseopsError, match="no 'condition'.*stratify_by: null"):
        SP.make_split(labels, params())
    with pytest.raises(PoseopsError, match="only 1 group \\(video=m4s1\\)"):
        SP.make_split(labels, params(stratify_by=None))


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
    out = SP.run(str(p)).set_index("image")["split"]
    prev = first.set_index("image")["split"]
    assert (out.reindex(prev.index) == prev).all()
    new = out[~out.index.isin(prev.index)]
    assert len(new) > 0 and (new != "test").all()
    test_videos = set(first.loc[first.split == "test", "video"])
    new_videos = {i.split("/")[1] for i in new.index}
    assert not (new_videos & test_videos)
    assert crossing(pd.read_csv(tmp_path / "split.csv"), "video") == 0
