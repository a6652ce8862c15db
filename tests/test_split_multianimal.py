"""Split and composition on multi-animal tables (several rows per image and bodypart, one per
individual): the split stays one row per image, counts are images, not rows; composition adds the
animals-per-frame distribution. Expected values are computed here, independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops import cli
from poseops.config.data import SplitParams
from poseops.core import schema as S
from poseops.data import composition as CO
from poseops.data import split as SP

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
ANIMALS = ["animal1", "animal2", "animal3"]
CONDITIONS = ["vehicle", "low_dose", "high_dose"]


def ma_labels(
    seed: int = 0,
    videos: int = 9,
    frames: int = 10,
    frame_step: int = 10,
    scorers: tuple[str, ...] = ("consensus",),
    swap: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Multi-animal labels: video v has 2 (even v) or 3 animals, one of which is sometimes
    absent (all NaN); a unique bodypart "corner" under ``single``; condition v % 3. ``swap``:
    (scorer, image) on which that scorer names animal1 and animal2 the other way round."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(videos):
        video = f"m{v}s{v % 3}"
        n_animals = 2 if v % 2 == 0 else 3
        for f in range(frames):
            frame = f * frame_step
            image = f"labeled-data/{video}/img{frame:04d}.png"
            truth = (
                20
                + 40 * np.arange(n_animals)[:, None, None]
                + rng.uniform(0, 15, (n_animals, len(BODYPARTS), 2))
            )
            absent = ANIMALS[n_animals - 1] if f % 4 == 3 else None
            for scorer in scorers:
                swapped = swap == (scorer, image)
                for i, ind in enumerate(ANIMALS[:n_animals]):
                    name = {"animal1": "animal2", "animal2": "animal1"}.get(ind, ind)
                    for k, bp in enumerate(BODYPARTS):
                        x, y = truth[i, k] + rng.normal(0, 0.5, 2)
                        if ind == absent:
                            x = y = np.nan
                        rows.append(
                            (image, video, frame, scorer, name if swapped else ind, bp, x, y)
                        )
                rows.append((image, video, frame, scorer, S.SINGLE, "corner", 5.0, 5.0))
    df = pd.DataFrame(
        rows, columns=[S.IMAGE, S.VIDEO, S.FRAME, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y]
    )
    df[S.LABELED] = np.isfinite(df[S.X]) & np.isfinite(df[S.Y])
    df[S.WIDTH], df[S.HEIGHT] = 160, 120
    vid = df[S.VIDEO].str[1].astype(int)
    df[S.ANIMAL] = "m" + vid.astype(str)
    df[S.SESSION] = "s" + (vid % 3).astype(str)
    df[S.CONDITION] = [CONDITIONS[i % 3] for i in vid]
    return df


def collapse(labels: pd.DataFrame) -> pd.DataFrame:
    """A single-animal table with the same images and metadata (one row per image)."""
    return labels.drop_duplicates(S.IMAGE).drop(columns=[S.INDIVIDUAL])


def brute_animals(labels: pd.DataFrame) -> dict[str, int]:
    """Labeled individuals per image, by a plain loop."""
    out: dict[str, set[str]] = {}
    for r in labels.itertuples():
        out.setdefault(r.image, set())
        if r.individual != S.SINGLE and np.isfinite(r.x) and np.isfinite(r.y):
            out[r.image].add(r.individual)
    return {k: len(v) for k, v in out.items()}


# ------------------------------------------------------------------ split


@pytest.mark.parametrize(
    "params",
    [
        SplitParams(),
        SplitParams(group_by=[S.ANIMAL, S.SESSION], val_fraction=0.2, seed=3),
        SplitParams(mode="leave-one-out", holdout_column=S.CONDITION, holdout_value="high_dose"),
    ],
    ids=["grouped", "grouped-2-columns", "leave-one-out"],
)
def test_split_of_multianimal_table_is_the_split_of_its_images(params: SplitParams) -> None:
    labels = ma_labels()
    split = SP.make_split(labels, params)
    assert not split[S.IMAGE].duplicated().any()
    assert set(split[S.IMAGE]) == set(labels[S.IMAGE])
    # the individual rows change nothing: same split as a one-row-per-image table
    pd.testing.assert_frame_equal(split, SP.make_split(collapse(labels), params))
    assert all(len(set(split.loc[split[S.GROUP] == g, S.SPLIT])) == 1 for g in set(split[S.GROUP]))
    if params.mode == "leave-one-out":
        held = set(labels.loc[labels[S.CONDITION] == "high_dose", S.IMAGE])
        assert set(split.loc[split[S.SPLIT] == S.TEST, S.IMAGE]) == held
    else:
        # test ~ test_fraction of each condition's images (whole videos of 10 images: within one)
        for cond, sub in split.groupby(S.CONDITION):
            n_test = int((sub[S.SPLIT] == S.TEST).sum())
            assert abs(n_test - params.test_fraction * len(sub)) <= 10, cond


def test_grouped_split_counts_images_not_rows() -> None:
    """3-animal videos have 1.5x the rows of 2-animal ones; the fractions are still of images."""
    labels = ma_labels(videos=12, frames=10)
    p = SplitParams(stratify_by=None, test_fraction=0.25, val_fraction=0.0)
    split = SP.make_split(labels, p)
    counts = split[S.SPLIT].value_counts()
    assert counts[S.TEST] == 30 and counts[S.TRAIN] == 90  # 3 / 12 videos of 10 images


def test_temporal_blocks_split_of_multianimal_table() -> None:
    labels = ma_labels(videos=1, frames=60, frame_step=2)  # one video, frames 0..118
    p = SplitParams(mode="temporal-blocks", stratify_by=None, block_frames=20, gap_frames=5)
    split = SP.make_split(labels, p)
    assert not split[S.IMAGE].duplicated().any()
    pd.testing.assert_frame_equal(split, SP.make_split(collapse(labels), p))
    assert set(split[S.SPLIT]) == set(S.SPLITS)
    # brute force: frames of different splits are more than gap_frames apart
    f = split[S.FRAME].to_numpy()
    s = split[S.SPLIT].to_numpy()
    d = np.abs(f[:, None] - f[None, :])[s[:, None] != s[None, :]]
    assert d.min() > p.gap_frames
    left_out = set(labels[S.IMAGE]) - set(split[S.IMAGE])
    assert len(left_out) > 0  # the gap frames, counted in images


# ------------------------------------------------------------------ composition


def test_composition_counts_images_and_animals_per_frame() -> None:
    labels = ma_labels()
    split = SP.make_split(labels, SplitParams())
    m = CO.composition_metrics(labels, split)
    images = labels.drop_duplicates(S.IMAGE)
    assert m["total_frames"] == len(images) == 90
    assert m["frames_per_video"] == images[S.VIDEO].value_counts().sort_index().to_dict()
    assert m["frames_per_condition"] == images[S.CONDITION].value_counts().sort_index().to_dict()
    per_image = brute_animals(labels)
    want = pd.Series(per_image).value_counts().sort_index()
    assert m["animals_per_frame"] == {str(k): int(v) for k, v in want.items()}
    assert set(m["animals_per_frame"]) == {"1", "2", "3"}  # absent animals make 1s and 2s
    assert m["animals_per_frame_mean"] == pytest.approx(np.mean(list(per_image.values())))
    assert m["n_individuals"] == 3
    for s in S.SPLITS:
        imgs = split.loc[split[S.SPLIT] == s, S.IMAGE]
        want_s = pd.Series([per_image[i] for i in imgs]).value_counts().sort_index()
        assert m["split"]["animals_per_frame"][s] == {str(k): int(v) for k, v in want_s.items()}
    table = CO.composition_table(m)
    rows = table[(table["stratum_type"] == CO.ANIMALS_IN_FRAME) & (table["split"] == CO.ALL)]
    assert dict(zip(rows["stratum"], rows["value"], strict=True)) == m["animals_per_frame"]
    per_split = table[(table["stratum_type"] == CO.ANIMALS_IN_FRAME) & (table["split"] != CO.ALL)]
    assert per_split["value"].sum() == len(split)


def test_composition_pose_variance_per_animal() -> None:
    labels = ma_labels(videos=3, frames=6)
    pv = CO.pose_variance(labels).set_index(S.BODYPART)
    for bp in BODYPARTS:
        xs, ys, ex, ey = [], [], [], []
        for _, g in labels[labels[S.INDIVIDUAL] != S.SINGLE].groupby([S.IMAGE, S.INDIVIDUAL]):
            g = g.dropna(subset=[S.X, S.Y])
            if bp not in set(g[S.BODYPART]):
                continue
            r = g[g[S.BODYPART] == bp].iloc[0]
            xs.append(r.x)
            ys.append(r.y)
            ex.append(r.x - g[S.X].mean())  # the animal's own centroid, not the frame's
            ey.append(r.y - g[S.Y].mean())
        assert pv.loc[bp, "n"] == len(xs)
        assert pv.loc[bp, "sd_x"] == pytest.approx(np.std(xs, ddof=1))
        assert pv.loc[bp, "sd_px_egocentric"] == pytest.approx(
            np.sqrt(np.var(ex, ddof=1) + np.var(ey, ddof=1))
        )


def test_composition_labeler_agreement_after_identity_matching() -> None:
    swapped = "labeled-data/m0s0/img0010.png"
    labels = ma_labels(videos=2, frames=5, scorers=("alice", "bob"), swap=("bob", swapped))
    m = CO.composition_metrics(labels)
    assert m["identity_swaps"] == 1
    # independent: distance between the two scorers' points of the same TRUE animal
    true = labels.copy()
    fix = (true[S.SCORER] == "bob") & (true[S.IMAGE] == swapped)
    true.loc[fix, S.INDIVIDUAL] = true.loc[fix, S.INDIVIDUAL].replace(
        {"animal1": "animal2", "animal2": "animal1"}
    )
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART]
    a = true[true[S.SCORER] == "alice"].set_index(keys)
    b = true[true[S.SCORER] == "bob"].set_index(keys)
    d = np.hypot(a[S.X] - b[S.X].reindex(a.index), a[S.Y] - b[S.Y].reindex(a.index)).dropna()
    assert m["labeler_agreement"]["mean_pairwise_px"] == pytest.approx(d.mean())
    assert m["labeler_agreement"]["n_pairs"] == len(d)
    assert m["labeler_agreement"]["mean_pairwise_px"] < 2  # noise only: the swap is undone


def test_single_animal_composition_has_no_animal_metrics() -> None:
    m = CO.composition_metrics(collapse(ma_labels(videos=3, frames=4)))
    assert not {"animals_per_frame", "n_individuals", "identity_swaps"} & set(m)
    assert CO.ANIMALS_IN_FRAME not in set(CO.composition_table(m)["stratum_type"])


def test_composition_and_split_stages_on_multianimal_files(tmp_path: Path) -> None:
    labels = ma_labels(scorers=("alice", "bob"), swap=("bob", "labeled-data/m1s1/img0020.png"))
    labels.to_parquet(tmp_path / "labels.parquet")
    cons = labels[labels[S.SCORER] == "alice"].assign(**{S.SCORER: S.CONSENSUS_SCORER})
    cons.to_parquet(tmp_path / "consensus.parquet")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "project": {"metadata": None},
                "consensus": {"swap_margin_px": 5.0},
                "split": {
                    "input": str(tmp_path / "consensus.parquet"),
                    "out": str(tmp_path / "split.csv"),
                    "fixed_split": None,
                },
                "composition": {
                    "input": str(tmp_path / "labels.parquet"),
                    "split": str(tmp_path / "split.csv"),
                    "metrics": str(tmp_path / "r" / "c.json"),
                    "table": str(tmp_path / "r" / "c.csv"),
                },
            }
        )
    )
    params = str(tmp_path / "params.yaml")
    assert cli.main(["split", "--params", params]) == 0
    split = pd.read_csv(tmp_path / "split.csv")
    assert len(split) == labels[S.IMAGE].nunique()
    assert cli.main(["composition", "--params", params]) == 0
    m = json.loads((tmp_path / "r" / "c.json").read_text())
    assert m["identity_swaps"] == 1
    assert sum(
        m["split"]["animals_per_frame"][s][k]
        for s in S.SPLITS
        for k in m["split"]["animals_per_frame"][s]
    ) == len(split)
