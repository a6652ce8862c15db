"""Multi-animal consensus: labelers' individuals matched by position (identity swaps detected and
reported) before the per-(image, individual, bodypart) medians. Hand-built label tables; every
expected number is computed here from the labels, independently of poseops.data.consensus."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from poseops.commands import consensus as CC
from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.data import consensus as C
from poseops.data import identities as ID

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
ANIMALS = ["animal1", "animal2", "animal3"]
IMG = "labeled-data/v1/img0001.png"


def ma_table(points: list[tuple[str, str, str, str, float, float]]) -> pd.DataFrame:
    """Multi-animal labels table from (image, scorer, individual, bodypart, x, y) tuples."""
    df = pd.DataFrame(points, columns=[S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y])
    df[S.VIDEO] = df[S.IMAGE].str.split("/").str[1]
    df[S.FRAME] = df[S.IMAGE].str.extract(r"img(\d+)")[0].astype(int)
    df[S.LABELED] = np.isfinite(df[S.X]) & np.isfinite(df[S.Y])
    df[S.WIDTH], df[S.HEIGHT] = 160, 120
    df[S.CONDITION] = "vehicle"
    return df


def animal_truth(rng: np.random.Generator, n_animals: int, spread: float = 40.0) -> np.ndarray:
    """(animals, bodyparts, 2): animal i centred ``spread * i`` px right of animal 0, bodyparts
    around each centre; a small spread (crossing animals) also gives them the same posture, so
    their keypoints nearly coincide (the hardest case for telling them apart)."""
    centres = np.array([[30.0 + spread * i, 40.0 + 0.25 * spread * i] for i in range(n_animals)])
    shape = (1 if spread < 10 else n_animals, len(BODYPARTS), 2)
    offsets = rng.uniform(-6, 6, shape)
    return centres[:, None, :] + offsets


def labeler_rows(
    image: str,
    scorer: str,
    truth: np.ndarray,
    rng: np.random.Generator,
    noise: float = 1.0,
    names: dict[str, str] | None = None,
    missing: set[tuple[str, str]] = frozenset(),
) -> list[tuple[str, str, str, str, float, float]]:
    """One labeler's rows for one image: truth + noise; ``names[true] = name the labeler uses``;
    ``missing`` (true individual, bodypart) pairs are NaN."""
    names = names or {}
    rows = []
    for i, ind in enumerate(ANIMALS[: len(truth)]):
        for k, bp in enumerate(BODYPARTS):
            x, y = truth[i, k] + rng.normal(0, noise, 2)
            if (ind, bp) in missing:
                x = y = np.nan
            rows.append((image, scorer, names.get(ind, ind), bp, float(x), float(y)))
    return rows


def point(cons: pd.DataFrame, individual: str, bodypart: str, image: str = IMG) -> pd.Series:
    row = cons[
        (cons[S.IMAGE] == image)
        & (cons[S.INDIVIDUAL] == individual)
        & (cons[S.BODYPART] == bodypart)
    ]
    assert len(row) == 1
    return row.iloc[0]


def true_position(rows: list[tuple], true_of: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The labels with each labeler's individual mapped back to the true one:
    ``true_of[(scorer, name used)] = true individual`` (default: the name itself)."""
    df = pd.DataFrame(rows, columns=[S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y])
    df[S.INDIVIDUAL] = [
        true_of.get((s, i), i) for s, i in zip(df[S.SCORER], df[S.INDIVIDUAL], strict=True)
    ]
    return df


def mean_distance(df: pd.DataFrame, scorer_a: str, ind_a: str, scorer_b: str, ind_b: str) -> float:
    """Mean distance over the bodyparts both labeled (the documented swap cost)."""
    a = df[(df[S.SCORER] == scorer_a) & (df[S.INDIVIDUAL] == ind_a)].set_index(S.BODYPART)
    b = df[(df[S.SCORER] == scorer_b) & (df[S.INDIVIDUAL] == ind_b)].set_index(S.BODYPART)
    j = a[[S.X, S.Y]].join(b[[S.X, S.Y]], lsuffix="_a", rsuffix="_b").dropna()
    return float(np.hypot(j["x_a"] - j["x_b"], j["y_a"] - j["y_b"]).mean())


# ------------------------------------------------------------------ swaps detected and undone


def test_two_animal_swap_detected_and_consensus_is_median_of_matched_labels() -> None:
    rng = np.random.default_rng(0)
    truth = animal_truth(rng, 2)
    swap = {"animal1": "animal2", "animal2": "animal1"}
    rows = labeler_rows(IMG, "alice", truth, rng) + labeler_rows(IMG, "carol", truth, rng)
    rows += labeler_rows(IMG, "bob", truth, rng, names=swap)
    labels = ma_table(rows)
    cons = C.build_consensus(labels)
    matched = true_position(rows, {("bob", "animal1"): "animal2", ("bob", "animal2"): "animal1"})
    for ind, bp in itertools.product(ANIMALS[:2], BODYPARTS):
        sel = matched[(matched[S.INDIVIDUAL] == ind) & (matched[S.BODYPART] == bp)]
        row = point(cons, ind, bp)
        assert row[S.X] == pytest.approx(np.median(sel[S.X]))
        assert row[S.Y] == pytest.approx(np.median(sel[S.Y]))
        # all three labelers kept: without the re-matching bob's points would be outliers
        assert row[C.N_LABELERS] == 3 and row[C.N_REMOVED] == 0
    unmatched = C.build_consensus(labels, match=False)
    assert (unmatched[C.N_REMOVED] > 0).any()  # the test above can tell the two apart

    _, swaps = ID.match_identities(labels)
    assert sorted(zip(swaps["from_individual"], swaps["to_individual"], strict=True)) == [
        ("animal1", "animal2"),
        ("animal2", "animal1"),
    ]
    assert set(swaps["labeler"]) == {"bob"} and set(swaps[S.IMAGE]) == {IMG}
    # reference: alice or carol (bob contradicts both); they tie on labels overall -> the name
    assert set(swaps["reference"]) == {"alice"}
    raw = true_position(rows, {})
    for r in swaps.itertuples():
        before = mean_distance(raw, "bob", r.from_individual, "alice", r.from_individual)
        after = mean_distance(raw, "bob", r.from_individual, "alice", r.to_individual)
        assert r.cost_before_px == pytest.approx(before)
        assert r.cost_after_px == pytest.approx(after)
    both_before = np.mean([mean_distance(raw, "bob", a, "alice", a) for a in ANIMALS[:2]])
    both_after = np.mean([mean_distance(raw, "bob", a, "alice", swap[a]) for a in ANIMALS[:2]])
    assert swaps["labeler_cost_before_px"].iloc[0] == pytest.approx(both_before)
    assert swaps["labeler_cost_after_px"].iloc[0] == pytest.approx(both_after)


def test_two_labelers_swap_consensus_is_the_mean_of_matched_labels() -> None:
    rng = np.random.default_rng(1)
    truth = animal_truth(rng, 2)
    rows = labeler_rows(IMG, "alice", truth, rng)
    rows += labeler_rows(IMG, "bob", truth, rng, names={"animal1": "animal2", "animal2": "animal1"})
    cons = C.build_consensus(ma_table(rows))
    matched = true_position(rows, {("bob", "animal1"): "animal2", ("bob", "animal2"): "animal1"})
    expect = matched.groupby([S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]].mean()
    got = cons.set_index([S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]]
    pd.testing.assert_frame_equal(got.sort_index(), expect.sort_index(), check_names=False)
    # matched, the two labelers agree (noise 1 px): no disagreement flag
    assert not cons[C.DISAGREEMENT].any()


def test_three_animals_cyclic_permutation() -> None:
    rng = np.random.default_rng(2)
    truth = animal_truth(rng, 3)
    cycle = {"animal1": "animal2", "animal2": "animal3", "animal3": "animal1"}  # true -> used
    rows = labeler_rows(IMG, "alice", truth, rng) + labeler_rows(IMG, "bob", truth, rng)
    rows += labeler_rows(IMG, "carol", truth, rng, names=cycle)
    labels = ma_table(rows)
    _, swaps = ID.match_identities(labels)
    # carol's name -> the reference's name for the same animal
    expected = sorted((used, true) for true, used in cycle.items())
    assert sorted(zip(swaps["from_individual"], swaps["to_individual"], strict=True)) == expected
    assert set(swaps["labeler"]) == {"carol"}
    cons = C.build_consensus(labels)
    matched = true_position(rows, {("carol", used): true for true, used in cycle.items()})
    expect = matched.groupby([S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]].median()
    got = cons.set_index([S.INDIVIDUAL, S.BODYPART])[[S.X, S.Y]]
    pd.testing.assert_frame_equal(got.sort_index(), expect.sort_index(), check_names=False)
    assert (cons[C.N_LABELERS] == 3).all()


def test_partial_swap_of_two_of_three_animals() -> None:
    rng = np.random.default_rng(3)
    truth = animal_truth(rng, 3)
    rows = labeler_rows(IMG, "alice", truth, rng) + labeler_rows(IMG, "bob", truth, rng)
    rows += labeler_rows(
        IMG, "carol", truth, rng, names={"animal2": "animal3", "animal3": "animal2"}
    )
    _, swaps = ID.match_identities(ma_table(rows))
    assert sorted(zip(swaps["from_individual"], swaps["to_individual"], strict=True)) == [
        ("animal2", "animal3"),
        ("animal3", "animal2"),
    ]  # animal1 kept its name: not reported


# ------------------------------------------------------------------ no false alarms


def test_no_swap_under_plain_noise_even_when_animals_cross() -> None:
    rng = np.random.default_rng(4)
    rows = []
    images = [f"labeled-data/v{v}/img{f:04d}.png" for v in range(4) for f in range(25)]
    for n, image in enumerate(images):
        # half the frames: animals 40 px apart; the other half: crossing, centres 2 px apart
        truth = animal_truth(rng, 3 if n % 3 == 0 else 2, spread=40.0 if n % 2 else 2.0)
        for scorer in ("alice", "bob", "carol"):
            rows += labeler_rows(image, scorer, truth, rng, noise=1.5)
    labels = ma_table(rows)
    matched, swaps = ID.match_identities(labels)
    assert swaps.empty
    pd.testing.assert_frame_equal(matched, labels)
    pd.testing.assert_frame_equal(C.build_consensus(labels), C.build_consensus(labels, match=False))
    # the margin is what keeps noise on crossing animals from being called a swap
    _, no_margin = ID.match_identities(labels, ConsensusParams(swap_margin_px=0.0))
    assert len(no_margin) > 0


def test_swap_smaller_than_the_margin_is_not_flagged() -> None:
    """Animals 4 px apart, exactly swapped: the cost drops by < 5 px (the default margin)."""
    truth = np.array([[[50.0, 50.0]] * len(BODYPARTS), [[54.0, 50.0]] * len(BODYPARTS)])
    rng = np.random.default_rng(5)
    rows = labeler_rows(IMG, "alice", truth, rng, noise=0.0)
    rows += labeler_rows(
        IMG, "bob", truth, rng, noise=0.0, names={"animal1": "animal2", "animal2": "animal1"}
    )
    labels = ma_table(rows)
    assert ID.match_identities(labels)[1].empty
    _, swaps = ID.match_identities(labels, ConsensusParams(swap_margin_px=3.0))
    assert len(swaps) == 2
    assert swaps["labeler_cost_before_px"].iloc[0] == pytest.approx(4.0)
    assert swaps["labeler_cost_after_px"].iloc[0] == pytest.approx(0.0)


# ------------------------------------------------------------------ partial labels, unique bodyparts


def test_partially_labeled_individuals() -> None:
    """Bob labels only animal1 (no tail) but calls it animal2; his animal2 rows are NaN."""
    rng = np.random.default_rng(6)
    truth = animal_truth(rng, 2)
    alice = labeler_rows(IMG, "alice", truth, rng, missing={("animal2", "leftear")})
    bob = labeler_rows(
        IMG,
        "bob",
        truth,
        rng,
        names={"animal1": "animal2", "animal2": "animal1"},
        missing={("animal1", "tailbase")} | {("animal2", bp) for bp in BODYPARTS},
    )
    labels = ma_table(alice + bob)
    matched, swaps = ID.match_identities(labels)
    # only the individual bob labeled is reported; his all-NaN rows were renamed without a row
    assert list(zip(swaps["from_individual"], swaps["to_individual"], strict=True)) == [
        ("animal2", "animal1")
    ]
    raw = true_position(alice + bob, {})
    r = swaps.iloc[0]
    assert r["cost_before_px"] == pytest.approx(
        mean_distance(raw, "bob", "animal2", "alice", "animal2")
    )
    assert r["cost_after_px"] == pytest.approx(
        mean_distance(raw, "bob", "animal2", "alice", "animal1")
    )
    assert not matched.duplicated([S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART]).any()
    assert len(matched) == len(labels)
    cons = C.build_consensus(labels)
    for bp in BODYPARTS:
        a1 = point(cons, "animal1", bp)
        want = [
            (truth_row[4], truth_row[5]) for truth_row in alice if truth_row[2:4] == ("animal1", bp)
        ]
        want += [(b[4], b[5]) for b in bob if b[2:4] == ("animal2", bp) and np.isfinite(b[4])]
        assert a1[C.N_LABELERS] == len(want)
        assert a1[S.X] == pytest.approx(np.mean([w[0] for w in want]))
        a2 = point(cons, "animal2", bp)  # alice only (bob labeled no animal2)
        assert a2[C.N_LABELERS] == (0 if bp == "leftear" else 1)


def test_reference_missing_an_animal_is_not_a_swap() -> None:
    rng = np.random.default_rng(7)
    truth = animal_truth(rng, 3)
    rows = labeler_rows(IMG, "alice", truth, rng, missing={("animal3", bp) for bp in BODYPARTS})
    rows += labeler_rows(IMG, "bob", truth, rng)
    _, swaps = ID.match_identities(ma_table(rows))
    assert swaps.empty


def test_unique_bodyparts_are_never_swapped() -> None:
    rng = np.random.default_rng(8)
    truth = animal_truth(rng, 2)
    rows = []
    corner = {"alice": (5.0, 5.0), "bob": (6.0, 5.0), "carol": (150.0, 110.0)}  # carol: far off
    for scorer in ("alice", "bob", "carol"):
        names = {"animal1": "animal2", "animal2": "animal1"} if scorer == "bob" else None
        rows += labeler_rows(IMG, scorer, truth, rng, names=names)
        rows.append((IMG, scorer, S.SINGLE, "corner", *corner[scorer]))
    labels = ma_table(rows)
    matched, swaps = ID.match_identities(labels)
    assert S.SINGLE not in set(swaps["from_individual"]) | set(swaps["to_individual"])
    single = matched[matched[S.INDIVIDUAL] == S.SINGLE]
    pd.testing.assert_frame_equal(single, labels[labels[S.INDIVIDUAL] == S.SINGLE])
    cons = C.build_consensus(labels)
    c = point(cons, S.SINGLE, "corner")
    assert (c[S.X], c[S.Y]) == (pytest.approx(5.5), pytest.approx(5.0))  # carol removed (MAD)
    assert c[C.N_REMOVED] == 1
    assert len(swaps) == 2  # bob's animals still re-matched


def test_majority_blames_the_swapping_labeler_even_if_he_labeled_most() -> None:
    """Bob labels more images than anyone (first in priority) but swaps on IMG: alice and carol
    agree with each other, so bob is the one re-matched there; with only two labelers the
    priority order decides."""
    rng = np.random.default_rng(11)
    truth = animal_truth(rng, 2)
    swap = {"animal1": "animal2", "animal2": "animal1"}
    rows = labeler_rows(IMG, "alice", truth, rng) + labeler_rows(IMG, "carol", truth, rng)
    rows += labeler_rows(IMG, "bob", truth, rng, names=swap)
    for f in range(2, 5):  # bob's extra images
        rows += labeler_rows(f"labeled-data/v1/img{f:04d}.png", "bob", animal_truth(rng, 2), rng)
    _, swaps = ID.match_identities(ma_table(rows))
    assert set(swaps["labeler"]) == {"bob"} and set(swaps["reference"]) == {"alice"}
    two = [r for r in rows if r[1] != "carol"]
    _, swaps = ID.match_identities(ma_table(two))
    assert set(swaps["labeler"]) == {"alice"} and set(swaps["reference"]) == {"bob"}


def test_gold_scorer_is_the_reference() -> None:
    """With bob as gold scorer, his names win: alice and carol are the ones re-matched."""
    rng = np.random.default_rng(9)
    truth = animal_truth(rng, 2)
    swap = {"animal1": "animal2", "animal2": "animal1"}
    rows = labeler_rows(IMG, "alice", truth, rng) + labeler_rows(IMG, "carol", truth, rng)
    rows += labeler_rows(IMG, "bob", truth, rng, names=swap)
    labels = ma_table(rows)
    _, swaps = ID.match_identities(labels, ConsensusParams(gold_scorer="bob"))
    assert set(swaps["labeler"]) == {"alice", "carol"} and set(swaps["reference"]) == {"bob"}
    cons = C.build_consensus(labels, ConsensusParams(gold_scorer="bob"))
    bob = true_position(rows, {}).query("scorer == 'bob'").set_index([S.INDIVIDUAL, S.BODYPART])
    got = cons.set_index([S.INDIVIDUAL, S.BODYPART])
    # consensus named as bob names them: within noise of his points, far from the other animal
    d = np.hypot(got[S.X] - bob[S.X].reindex(got.index), got[S.Y] - bob[S.Y].reindex(got.index))
    assert (d < 5).all()


# ------------------------------------------------------------------ the stage's QC and reports


def swapped_dataset(seed: int = 10) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """Several images; bob swaps on some, carol on one; returns (labels, swapped images per
    labeler)."""
    rng = np.random.default_rng(seed)
    rows = []
    swapped: dict[str, set[str]] = {"bob": set(), "carol": set()}
    for v in range(3):
        for f in range(6):
            image = f"labeled-data/v{v}/img{f:04d}.png"
            truth = animal_truth(rng, 2)
            for scorer in ("alice", "bob", "carol"):
                swap = (scorer == "bob" and f % 3 == 0) or (scorer == "carol" and (v, f) == (1, 4))
                if swap:
                    swapped[scorer].add(image)
                names = {"animal1": "animal2", "animal2": "animal1"} if swap else None
                rows += labeler_rows(image, scorer, truth, rng, names=names)
    labels = ma_table(rows)
    labels[S.SESSION] = "s" + labels[S.VIDEO].str[1:]
    return labels, swapped


def test_analyse_reports_swaps_per_labeler_and_qc_is_not_polluted(tmp_path) -> None:
    labels, swapped = swapped_dataset()
    res = C.analyse(labels)
    found = res.identity_swaps.groupby("labeler")[S.IMAGE].agg(set).to_dict()
    assert found == swapped
    all_rows = res.qc[res.qc[S.BODYPART] == C.ALL].set_index(S.SCORER)
    assert all_rows[ID.N_IDENTITY_SWAPS].to_dict() == {
        "alice": 0,
        "bob": len(swapped["bob"]),
        "carol": len(swapped["carol"]),
    }
    assert res.qc.loc[res.qc[S.BODYPART] != C.ALL, ID.N_IDENTITY_SWAPS].isna().all()
    assert res.summary["n_identity_swaps"] == len(swapped["bob"]) + len(swapped["carol"])
    assert res.summary["n_images_identity_swapped"] == len(swapped["bob"] | swapped["carol"])
    assert res.summary["identity_swaps"] == {"alice": 0, "bob": 6, "carol": 1}
    assert res.summary["n_individuals"] == 2
    # once re-matched, nobody's points are outliers and the ICC sees agreement
    assert res.summary["n_removed"] == 0
    assert (res.qc["share_removed"].fillna(0) == 0).all()
    assert (res.icc["icc"] > 0.95).all()
    # one consensus point per (image, individual, bodypart)
    assert (
        len(res.consensus) == labels[[S.IMAGE, S.INDIVIDUAL, S.BODYPART]].drop_duplicates().shape[0]
    )

    p = ConsensusParams(
        reports=str(tmp_path / "rep"),
        out=str(tmp_path / "c.parquet"),
        summary=str(tmp_path / "s.json"),
    )
    paths = CC.write_outputs(res, p)
    written = pd.read_csv(paths["identity_swaps"])
    assert list(written.columns[:7]) == [
        S.IMAGE,
        "labeler",
        "reference",
        "from_individual",
        "to_individual",
        "cost_before_px",
        "cost_after_px",
    ]
    assert len(written) == len(res.identity_swaps)


def test_single_animal_analysis_has_no_swap_outputs(tmp_path) -> None:
    labels, _ = swapped_dataset()
    single = labels[labels[S.INDIVIDUAL] == "animal1"].drop(columns=[S.INDIVIDUAL])
    res = C.analyse(single)
    assert res.identity_swaps is None
    assert ID.N_IDENTITY_SWAPS not in res.qc.columns
    assert "n_identity_swaps" not in res.summary and S.INDIVIDUAL not in res.consensus.columns
    p = ConsensusParams(
        reports=str(tmp_path / "rep"),
        out=str(tmp_path / "c.parquet"),
        summary=str(tmp_path / "s.json"),
    )
    CC.write_outputs(res, p)
    assert not (tmp_path / "rep" / CC.SWAPS_FILE).exists()


def test_multianimal_consensus_written_as_dlc_4_level_collected_data(tmp_path) -> None:
    labels, _ = swapped_dataset()
    corner = labels.drop_duplicates([S.IMAGE, S.SCORER]).assign(
        **{S.INDIVIDUAL: S.SINGLE, S.BODYPART: "corner", S.X: 3.0, S.Y: 4.0}
    )
    cons = C.build_consensus(pd.concat([labels, corner], ignore_index=True))
    paths = CC.consensus_to_dlc(
        cons,
        tmp_path,
        "alice",
        bodyparts=BODYPARTS,
        individuals=ANIMALS[:2],
        unique_bodyparts=["corner"],
    )
    assert len(paths) == cons[S.VIDEO].nunique()
    for path in paths:
        wide = pd.read_hdf(path)  # what DLC's merge reads
        assert list(wide.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
        want = [("alice", a, bp, c) for a in ANIMALS[:2] for bp in BODYPARTS for c in "xy"]
        assert list(wide.columns) == want + [
            ("alice", S.SINGLE, "corner", "x"),
            ("alice", S.SINGLE, "corner", "y"),
        ]
    from poseops.dlc import files as dlcio

    back = pd.concat([dlcio.wide_to_long(pd.read_hdf(p)) for p in paths], ignore_index=True)
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART]
    m = back.merge(cons, on=keys, suffixes=("", "_c"))
    assert len(m) == len(cons)
    np.testing.assert_allclose(m[S.X], m["x_c"])
    np.testing.assert_allclose(m[S.Y], m["y_c"])


# ------------------------------------------------------------------ the multi-animal demo


@pytest.mark.parametrize("animals", [2, 3])
def test_demo_swaps_found_exactly_and_consensus_matches_ground_truth(tmp_path, animals) -> None:
    """The demo's swap labeler swaps two animals on known frames (label_swaps.csv): consensus
    finds exactly those (image, labeler, pair) and, re-matched, lands on the true animals."""
    from poseops.config.demo import DemoParams
    from poseops.data.ingest import ingest_project
    from poseops.demo import project as demo

    project = tmp_path / "proj"
    demo.generate_demo(
        project, DemoParams.small_multi(animals_per_video=animals), tmp_path / "videos.csv"
    )
    labels = ingest_project(project, tmp_path / "videos.csv")
    res = C.analyse(labels)
    known = pd.read_csv(project / "label_swaps.csv")
    assert len(known) > 0
    want = {
        (r.image, r.scorer, frozenset((r.individual_a, r.individual_b))) for r in known.itertuples()
    }
    found: dict[tuple[str, str], set[str]] = {}
    for r in res.identity_swaps.itertuples():
        found.setdefault((r.image, r.labeler), set()).update([r.from_individual, r.to_individual])
    assert {(i, s, frozenset(v)) for (i, s), v in found.items()} == want
    assert res.summary["n_identity_swaps"] == len(known)

    truth = pd.read_csv(project / "ground_truth.csv")
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART]
    m = res.consensus.merge(truth, on=keys, suffixes=("", "_true")).dropna(subset=[S.X, "x_true"])
    err = np.hypot(m[S.X] - m["x_true"], m[S.Y] - m["y_true"])
    on_swapped = m[S.IMAGE].isin(known[S.IMAGE]).to_numpy()
    # labelers' noise is ~1 px (carol's snout bias 4 px): far below the animals' separation
    assert err[on_swapped].max() < 6
    naive = C.build_consensus(labels, match=False).merge(truth, on=keys, suffixes=("", "_true"))
    naive = naive[naive[S.IMAGE].isin(known[S.IMAGE])].dropna(subset=[S.X, "x_true"])
    # without the matching the swapped points either drag the consensus (two labelers) or are
    # thrown away as outliers (three)
    naive_err = np.hypot(naive[S.X] - naive["x_true"], naive[S.Y] - naive["y_true"])
    removed = m.loc[on_swapped, C.N_REMOVED].sum()
    assert naive_err.max() > 6 or naive[C.N_REMOVED].sum() > removed
