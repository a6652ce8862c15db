"""poseops.data.composition: every metric checked against an independent numpy / hand computation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops import cli
from poseops.config.data import SplitParams
from poseops.data import composition as C
from poseops.data import split as SP

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
CONDITIONS = ["vehicle", "low_dose", "high_dose"]


def make_labels(seed: int = 0) -> pd.DataFrame:
    """4 animals x 3 sessions (crossover), 4-9 frames per video, alice labels everything, bob and
    carol relabel some frames (carol shifted on the snout), ~10% keypoints NaN."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(4):
        for s in range(3):
            video = f"m{a}s{s}"
            for f in range(int(rng.integers(4, 10))):
                image = f"labeled-data/{video}/img{f:04d}.png"
                truth = rng.uniform(10, 150, size=(len(BODYPARTS), 2))
                scorers = ["alice"] + (
                    ["bob", "carol"] if f % 3 == 0 else ["bob"] if f % 3 == 1 else []
                )
                for scorer in scorers:
                    for b, bp in enumerate(BODYPARTS):
                        x, y = (
                            truth[b]
                            + rng.normal(0, 1.0, 2)
                            + (4.0 * (scorer == "carol" and bp == "snout"), 0)
                        )
                        if rng.random() < 0.1:
                            x, y = np.nan, np.nan
                        rows.append(
                            {
                                "image": image,
                                "video": video,
                                "frame": f,
                                "scorer": scorer,
                                "bodypart": bp,
                                "x": x,
                                "y": y,
                                "labeled": bool(np.isfinite(x)),
                                "width": 160,
                                "height": 120,
                                "animal": f"m{a}",
                                "session": f"s{s + 1}",
                                "condition": CONDITIONS[(a + s) % 3],
                                "dose": float((a + s) % 3),
                                "camera": "top",
                            }
                        )
    return pd.DataFrame(rows)


@pytest.fixture
def labels() -> pd.DataFrame:
    return make_labels()


def test_frame_counts(labels: pd.DataFrame) -> None:
    m = C.composition_metrics(labels)
    images = labels.drop_duplicates("image")
    assert m["total_frames"] == len(set(labels["image"]))
    assert m["total_keypoints"] == len(labels)
    for col in ("video", "animal", "session", "condition"):
        expected = {k: sum(1 for v in images[col] if v == k) for k in set(images[col])}
        assert m[f"frames_per_{col}"] == expected
        assert m[f"n_{col}s"] == len(expected)
    assert m["n_scorers"] == 3
    assert m["condition_coverage_pct"] == 100.0


def test_condition_coverage_against_design(labels: pd.DataFrame) -> None:
    design = set(CONDITIONS) | {"saline", "ketamine"}
    m = C.composition_metrics(labels, conditions=design)
    assert m["condition_coverage_pct"] == pytest.approx(100 * 3 / 5)
    assert m["n_conditions_missing"] == 2
    assert m["frames_per_condition"]["saline"] == 0
    dropped = labels[labels["condition"] != "vehicle"]
    assert C.composition_metrics(dropped, conditions=set(CONDITIONS))["condition_coverage_pct"] == (
        pytest.approx(200 / 3)
    )


def test_pose_variance_matches_numpy(labels: pd.DataFrame) -> None:
    pv = C.pose_variance(labels).set_index("bodypart")
    for bp in BODYPARTS:
        # mean over scorers per image, labeled only, then sample SD
        xs, ys = [], []
        for _, g in labels[labels["bodypart"] == bp].groupby("image"):
            ok = g["x"].notna().to_numpy()
            if ok.any():
                xs.append(g["x"].to_numpy()[ok].mean())
                ys.append(g["y"].to_numpy()[ok].mean())
        xs, ys = np.array(xs), np.array(ys)
        assert pv.loc[bp, "n"] == len(xs)
        assert pv.loc[bp, "sd_x"] == pytest.approx(np.std(xs, ddof=1))
        assert pv.loc[bp, "sd_y"] == pytest.approx(np.std(ys, ddof=1))
        assert pv.loc[bp, "sd_px"] == pytest.approx(
            np.sqrt(np.var(xs, ddof=1) + np.var(ys, ddof=1))
        )


def test_egocentric_pose_variance_ignores_where_the_animal_is() -> None:
    # the same pose translated around the arena: absolute SD large, egocentric SD zero
    pose = np.array([[0, 0], [5, -3], [5, 3], [20, 0]], float)
    rows = []
    for i, shift in enumerate(np.random.default_rng(1).uniform(0, 100, (12, 2))):
        for bp, (x, y) in zip(BODYPARTS, pose + shift, strict=True):
            rows.append(
                {
                    "image": f"labeled-data/v/img{i:04d}.png",
                    "video": "v",
                    "scorer": "a",
                    "bodypart": bp,
                    "x": x,
                    "y": y,
                }
            )
    pv = C.pose_variance(pd.DataFrame(rows)).set_index("bodypart")
    assert (pv["sd_px"] > 10).all()
    np.testing.assert_allclose(pv["sd_px_egocentric"], 0, atol=1e-9)


def test_nan_share(labels: pd.DataFrame) -> None:
    m = C.composition_metrics(labels)
    for bp in BODYPARTS:
        sub = labels[labels["bodypart"] == bp]
        assert m["nan_share"][bp] == pytest.approx(np.isnan(sub["x"].to_numpy()).mean())
    assert m["nan_share_overall"] == pytest.approx(np.isnan(labels["x"].to_numpy()).mean())


def _pairwise_loop(labels: pd.DataFrame) -> list[tuple[str, str, str, float]]:
    """Independent: for every (image, bodypart), every two scorers who both labeled it."""
    out = []
    for (_, bp), g in labels.dropna(subset=["x", "y"]).groupby(["image", "bodypart"]):
        pos = {r.scorer: (r.x, r.y) for r in g.itertuples()}
        for a, b in itertools.combinations(sorted(pos), 2):
            out.append((bp, a, b, float(np.hypot(pos[a][0] - pos[b][0], pos[a][1] - pos[b][1]))))
    return out


def test_labeler_agreement_matches_loop(labels: pd.DataFrame) -> None:
    la = C.labeler_agreement(labels)
    ref = _pairwise_loop(labels)
    assert la["n_pairs"] == len(ref)
    assert la["mean_pairwise_px"] == pytest.approx(np.mean([d for *_, d in ref]))
    for bp in BODYPARTS:
        assert la["per_bodypart"][bp] == pytest.approx(
            np.mean([d for b, _, _, d in ref if b == bp])
        )
    for pair in ("alice-bob", "alice-carol", "bob-carol"):
        a, b = pair.split("-")
        assert la["per_pair"][pair] == pytest.approx(
            np.mean([d for _, x, y, d in ref if (x, y) == (a, b)])
        )
    multi = labels.groupby("image")["scorer"].nunique()
    assert la["n_frames"] == int((multi > 1).sum())
    # carol's +4 px snout offset shows: her snout pairs are the worst
    assert la["per_bodypart"]["snout"] > max(la["per_bodypart"][b] for b in BODYPARTS[1:])


def test_labeler_agreement_single_scorer_or_consensus(labels: pd.DataFrame) -> None:
    alice = labels[labels["scorer"] == "alice"]
    la = C.labeler_agreement(alice)
    assert la["mean_pairwise_px"] is None and la["n_pairs"] == 0
    cons = alice.assign(scorer="consensus")
    assert C.labeler_agreement(pd.concat([alice, cons]))["n_pairs"] == 0  # consensus not compared


def test_split_leakage_check(labels: pd.DataFrame) -> None:
    split = SP.make_split(labels, SplitParams(val_fraction=0))
    m = C.composition_metrics(labels, split)["split"]
    assert m["groups_crossing_splits"] == 0 and m["videos_crossing_splits"] == 0
    assert m["frames"] == {s: int((split["split"] == s).sum()) for s in ("train", "val", "test")}
    test = split[split["split"] == "test"]
    assert m["frames_per_condition"]["test"] == test["condition"].value_counts().to_dict()
    assert m["condition_coverage_pct"]["test"] == 100.0
    # a leaky split is reported
    leaky = split.copy()
    video = leaky.loc[leaky["split"] == "train", "video"].iloc[0]
    leaky.loc[leaky.index[leaky["video"] == video][0], "split"] = "test"
    m = C.split_composition(leaky, set(CONDITIONS))
    assert m["groups_crossing_splits"] == 1 and m["videos_crossing_splits"] == 1


def test_table_is_long_and_matches_metrics(labels: pd.DataFrame) -> None:
    """The long table's numbers, each recomputed from the input frames with plain pandas."""
    split = SP.make_split(labels, SplitParams(val_fraction=0))
    t = C.composition_table(C.composition_metrics(labels, split))
    assert list(t.columns) == ["metric", "stratum_type", "stratum", "split", "value"]
    idx = t.set_index(["metric", "stratum_type", "stratum", "split"])["value"]
    condition_of = labels.drop_duplicates("image").set_index("image")["condition"]
    assert idx[("total_frames", "all", "all", "all")] == len(condition_of)
    assert idx[("frames", "condition", "vehicle", "all")] == (condition_of == "vehicle").sum()
    snout_x = labels.loc[labels["bodypart"] == "snout", "x"].to_numpy()
    assert idx[("nan_share", "bodypart", "snout", "all")] == pytest.approx(np.isnan(snout_x).mean())
    test_images = set(split.loc[split["split"] == "test", "image"])
    assert idx[("frames", "condition", "vehicle", "test")] == sum(
        condition_of[image] == "vehicle" for image in test_images
    )
    splits_per_group = {g: set(s) for g, s in split.groupby("group")["split"]}
    crossing = sum(len(s) > 1 for s in splits_per_group.values())
    assert idx[("groups_crossing_splits", "all", "all", "all")] == crossing == 0
    assert idx.index.is_unique


def test_cli_writes_metrics_and_table(tmp_path: Path, labels: pd.DataFrame) -> None:
    labels.to_parquet(tmp_path / "labels.parquet")
    split = SP.make_split(labels, SplitParams(val_fraction=0))
    split.to_csv(tmp_path / "split.csv", index=False)
    meta = labels.drop_duplicates("video")[["video", "animal", "session", "condition"]]
    meta = pd.concat([meta, pd.DataFrame([{"video": "x", "condition": "saline"}])])
    meta.to_csv(tmp_path / "videos.csv", index=False)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "project": {"metadata": str(tmp_path / "videos.csv")},
                "composition": {
                    "input": str(tmp_path / "labels.parquet"),
                    "split": str(tmp_path / "split.csv"),
                    "metrics": str(tmp_path / "r" / "c.json"),
                    "table": str(tmp_path / "r" / "c.csv"),
                },
            }
        )
    )
    assert cli.main(["composition", "--params", str(tmp_path / "params.yaml")]) == 0
    m = json.loads((tmp_path / "r" / "c.json").read_text())
    assert m["condition_coverage_pct"] == pytest.approx(75.0)  # saline: in the design, unlabeled
    assert m["split"]["groups_crossing_splits"] == 0
    t = pd.read_csv(tmp_path / "r" / "c.csv")
    assert len(t) == len(C.composition_table(m))


def test_demo_composition(demo_project: Path, demo_metadata: Path) -> None:
    from poseops.data.ingest import ingest_project

    labels = ingest_project(demo_project, demo_metadata)
    meta = pd.read_csv(demo_metadata)
    m = C.composition_metrics(labels, conditions=set(meta["condition"].astype(str)))
    assert m["total_frames"] == labels["image"].nunique()
    assert m["condition_coverage_pct"] == 100.0
    assert m["labeler_agreement"]["n_scorers"] == labels["scorer"].nunique() >= 2
    assert m["labeler_agreement"]["mean_pairwise_px"] > 0


# ---------------------------------------------------------------------------- split mode
def one_video(n: int = 80) -> pd.DataFrame:
    """One video, frames 0..n-1, one scorer, two bodyparts (a DLC example project's shape)."""
    return pd.DataFrame(
        [
            {"image": f"labeled-data/m4s1/img{f:04d}.png", "video": "m4s1", "frame": f,
             "scorer": "alice", "bodypart": bp, "x": 10.0 + f, "y": 20.0, "labeled": True}
            for f in range(n)
            for bp in ("snout", "tailbase")
        ]
    )


def brute_min_distance(split: pd.DataFrame) -> float | None:
    frame = split["image"].str.extract(r"img(\d+)\.png")[0].astype(int).to_numpy()
    video, name = split["video"].to_numpy(), split["split"].to_numpy()
    d = [abs(frame[i] - frame[j]) for i in range(len(split)) for j in range(i + 1, len(split))
         if video[i] == video[j] and name[i] != name[j]]
    return min(d) if d else None


def test_min_frame_distance_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 40))
        split = pd.DataFrame({
            "video": rng.choice(["a", "b", "c"], n),
            "frame": rng.integers(0, 60, n),
            "split": rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2]),
        })
        split["image"] = [f"labeled-data/{v}/img{f:04d}.png" for v, f in
                          zip(split["video"], split["frame"], strict=True)]
        assert C.min_frame_distance(split, split["frame"]) == brute_min_distance(split), trial
    whole_videos = pd.DataFrame({"video": ["a", "a", "b"], "frame": [1, 2, 3],
                                 "split": ["train", "train", "test"]})
    assert C.min_frame_distance(whole_videos, whole_videos["frame"]) is None


def test_temporal_blocks_composition(tmp_path: Path) -> None:
    labels = one_video(80)
    p = SplitParams(mode="temporal-blocks", stratify_by=None, block_frames=10, gap_frames=3)
    split = SP.make_split(labels, p)
    m = C.composition_metrics(labels, split, split_params=p)
    sp = m["split"]
    assert sp["mode"] == "temporal-blocks"
    assert sp["block_frames"] == 10 and sp["gap_frames"] == 3
    frame = split["image"].str.extract(r"img(\d+)\.png")[0].astype(int)
    for s in ("train", "val", "test"):  # blocks: distinct frame // 10 among the split's frames
        assert sp["blocks"][s] == frame[split["split"] == s].floordiv(10).nunique() > 0, s
    assert sp["excluded_frames"] == 80 - len(split) > 0
    assert sp["min_frame_distance_between_splits"] == brute_min_distance(split) > 3
    assert sp["groups_crossing_splits"] == 0
    assert sp["frame_level_groups"] is False and sp["leakage_warning"] is None
    t = C.composition_table(m).set_index(["metric", "stratum_type", "stratum", "split"])["value"]
    assert t[("split_mode", "all", "all", "all")] == "temporal-blocks"
    assert t[("gap_frames", "all", "all", "all")] == 3
    assert t[("excluded_frames", "all", "all", "all")] == sp["excluded_frames"]
    assert t[("min_frame_distance_between_splits", "all", "all", "all")] == brute_min_distance(
        split)
    assert t[("blocks", "all", "all", "test")] == sp["blocks"]["test"]
    assert t.index.is_unique
    # the HTML report's split line
    from poseops.report.html import split_summary_html

    line = split_summary_html(json.loads(json.dumps(m)))
    assert "temporal-blocks (blocks of 10 frames, gap 3)" in line
    assert f"test {sp['frames']['test']} frames / {sp['blocks']['test']} blocks" in line
    assert f"{sp['excluded_frames']} labeled frames left out" in line
    assert f"{brute_min_distance(split)} frames apart" in line and "Leakage" not in line


def test_composition_stage_records_the_split_mode(tmp_path: Path) -> None:
    labels = one_video(60)
    labels.to_parquet(tmp_path / "labels.parquet")
    split_cfg = {"mode": "temporal-blocks", "stratify_by": None, "block_frames": 12,
                 "gap_frames": 2, "input": str(tmp_path / "labels.parquet"),
                 "out": str(tmp_path / "split.csv"), "fixed_split": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "project": {"metadata": None},
        "split": split_cfg,
        "composition": {"input": str(tmp_path / "labels.parquet"),
                        "split": str(tmp_path / "split.csv"),
                        "metrics": str(tmp_path / "c.json"), "table": str(tmp_path / "c.csv")},
    }))
    assert cli.main(["split", "--params", str(tmp_path / "params.yaml")]) == 0
    assert cli.main(["composition", "--params", str(tmp_path / "params.yaml")]) == 0
    sp = json.loads((tmp_path / "c.json").read_text())["split"]
    split = pd.read_csv(tmp_path / "split.csv")
    assert sp["mode"] == "temporal-blocks" and sp["block_frames"] == 12 and sp["gap_frames"] == 2
    assert sp["excluded_frames"] == 60 - len(split)
    assert sp["min_frame_distance_between_splits"] == brute_min_distance(split) > 2


def test_frame_level_groups_are_reported_as_leakage(
    labels: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        split = SP.make_split(labels, SplitParams(group_by=["image"], val_fraction=0))
    m = C.composition_metrics(labels, split, split_params=SplitParams(group_by=["image"]))
    sp = m["split"]
    assert sp["frame_level_groups"] is True
    assert "optimistic" in sp["leakage_warning"] and "temporal-blocks" in sp["leakage_warning"]
    assert sp["groups_crossing_splits"] == 0 < sp["videos_crossing_splits"]
    assert sp["min_frame_distance_between_splits"] == brute_min_distance(split)
    t = C.composition_table(m).set_index(["metric", "stratum_type", "stratum", "split"])["value"]
    assert t[("frame_level_groups", "all", "all", "all")] == 1
    from poseops.report.html import split_summary_html

    assert "Leakage" in split_summary_html(m)
    by_video = SP.make_split(labels, SplitParams(val_fraction=0))
    sp = C.composition_metrics(labels, by_video, split_params=SplitParams())["split"]
    assert sp["frame_level_groups"] is False and sp["leakage_warning"] is None
    assert sp["min_frame_distance_between_splits"] is None and sp["mode"] == "grouped"
    assert sp["excluded_frames"] == 0
