"""Multi-labeler consensus and labeler QC (`poseops consensus`) on synthetic label tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.commands import consensus as CC
from poseops.config.data import ConsensusParams
from poseops.config.pipeline import PipelineParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data import consensus as C
from poseops.data import labelers as LQ
from poseops.data import robust as RB

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def labels_table(points: list[tuple[str, str, str, float, float]], **meta: object) -> pd.DataFrame:
    """Labels table from (image, scorer, bodypart, x, y) tuples (+ constant metadata)."""
    df = pd.DataFrame(points, columns=[S.IMAGE, S.SCORER, S.BODYPART, S.X, S.Y])
    df[S.VIDEO] = df[S.IMAGE].str.split("/").str[1]
    df[S.FRAME] = df[S.IMAGE].str.extract(r"img(\d+)")[0].astype(int)
    df[S.LABELED] = np.isfinite(df[S.X]) & np.isfinite(df[S.Y])
    df[S.WIDTH], df[S.HEIGHT] = 160, 120
    for k, v in meta.items():
        df[k] = v
    return df


def simulate(
    seed: int = 0,
    n_videos: int = 6,
    frames: int = 12,
    labelers: tuple[str, ...] = ("alice", "bob", "carol"),
    noise: float = 1.0,
    bias: dict[tuple[str, str], tuple[float, float]] | None = None,
    subsets: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels, truth): ``labelers[0]`` labels every frame; others label a random share
    ``subsets[name]`` (default all). ``bias[(scorer, bodypart)] = (dx, dy)``. Truth columns:
    image, bodypart, x, y. Videos are numbered sessions (two videos per session)."""
    rng = np.random.default_rng(seed)
    bias = bias or {}
    subsets = subsets or {}
    rows, truth = [], []
    for v in range(n_videos):
        for f in range(frames):
            image = f"labeled-data/vid{v}/img{f:04d}.png"
            who = [lab for lab in labelers if rng.random() < subsets.get(lab, 1.0)]
            if labelers[0] not in who:
                who.insert(0, labelers[0])
            for bp in BODYPARTS:
                tx, ty = rng.uniform(10, 150), rng.uniform(10, 110)
                truth.append((image, bp, tx, ty))
                for lab in who:
                    bx, by = bias.get((lab, bp), (0.0, 0.0))
                    ex, ey = rng.normal(0, noise, 2)
                    rows.append((image, lab, bp, tx + bx + ex, ty + by + ey))
    labels = labels_table(rows)
    labels[S.SESSION] = "s" + (labels[S.VIDEO].str[3:].astype(int) // 2).astype(str)
    return labels, pd.DataFrame(truth, columns=[S.IMAGE, S.BODYPART, S.X, S.Y])


def point(cons: pd.DataFrame, image: str, bodypart: str = "snout") -> pd.Series:
    row = cons[(cons[S.IMAGE] == image) & (cons[S.BODYPART] == bodypart)]
    assert len(row) == 1
    return row.iloc[0]


IMG = "labeled-data/v1/img0001.png"
IMG2 = "labeled-data/v1/img0002.png"


# ------------------------------------------------------------------ aggregation rules


def test_consensus_equals_independent_median_without_outliers():
    labels, _ = simulate(seed=1, labelers=("a", "b", "c", "d", "e"), noise=0.5)
    cons = C.build_consensus(labels)
    assert (cons[C.N_REMOVED] == 0).all()  # 0.5 px noise never exceeds 3 x the 2 px floor
    expected = labels.groupby([S.IMAGE, S.BODYPART])[[S.X, S.Y]].agg(lambda s: np.median(s))
    got = cons.set_index([S.IMAGE, S.BODYPART])[[S.X, S.Y]].loc[expected.index]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    assert (cons[S.SCORER] == S.CONSENSUS_SCORER).all()
    assert not cons.duplicated([S.IMAGE, S.BODYPART]).any()
    assert len(cons) == labels[[S.IMAGE, S.BODYPART]].drop_duplicates().shape[0]


def test_far_off_point_is_removed_and_the_rest_kept():
    pts = [(50.0, 50.0), (51.0, 50.5), (49.2, 50.1), (50.4, 48.9), (80.0, 50.0)]
    labels = labels_table([(IMG, f"s{i}", "snout", x, y) for i, (x, y) in enumerate(pts)])
    qc = C.analyse(labels).qc
    cons = C.build_consensus(labels)
    row = point(cons, IMG)
    kept = np.array(pts[:4])
    assert row[C.N_REMOVED] == 1 and row[C.N_LABELERS] == 4
    assert row[S.X] == pytest.approx(np.median(kept[:, 0]))
    assert row[S.Y] == pytest.approx(np.median(kept[:, 1]))
    # ILA = mean pairwise distance of the 4 kept points
    d = [np.hypot(*(kept[i] - kept[j])) for i in range(4) for j in range(i + 1, 4)]
    assert row[C.ILA_PX] == pytest.approx(np.mean(d))
    removed = qc[(qc[S.BODYPART] == "snout")].set_index(S.SCORER)["n_removed"]
    assert removed.to_dict() == {"s0": 0, "s1": 0, "s2": 0, "s3": 0, "s4": 1}


def test_three_labelers_one_far_off_is_removed_but_evenly_spread_are_kept():
    labels = labels_table(
        [
            (IMG, "a", "snout", 10.0, 10.0),
            (IMG, "b", "snout", 11.0, 10.0),
            (IMG, "c", "snout", 30.0, 10.0),
            (IMG2, "a", "snout", 0.0, 10.0),
            (IMG2, "b", "snout", 10.0, 10.0),
            (IMG2, "c", "snout", 20.0, 10.0),
        ]
    )
    cons = C.build_consensus(labels)
    one = point(cons, IMG)
    assert (one[C.N_REMOVED], one[C.N_LABELERS]) == (1, 2)
    assert (one[S.X], one[S.Y]) == (10.5, 10.0)  # median (= mean) of the two kept
    even = point(cons, IMG2)  # nobody stands out: MAD = 10 px
    assert (even[C.N_REMOVED], even[C.N_LABELERS], even[S.X]) == (0, 3, 10.0)


def test_two_labelers_both_kept_mean_and_disagreement_flag():
    labels = labels_table(
        [
            (IMG, "a", "snout", 10.0, 10.0),
            (IMG, "b", "snout", 30.0, 20.0),  # 22 px apart: cannot tell who is wrong
            (IMG2, "a", "snout", 10.0, 10.0),
            (IMG2, "b", "snout", 12.0, 10.0),
        ]
    )
    p = ConsensusParams(two_labeler_disagreement_px=5.0)
    cons = C.build_consensus(labels, p)
    far, near = point(cons, IMG), point(cons, IMG2)
    assert (far[C.N_LABELERS], far[C.N_REMOVED]) == (2, 0)
    assert (far[S.X], far[S.Y]) == (20.0, 15.0)
    assert far[C.ILA_PX] == pytest.approx(np.hypot(20, 10))
    assert bool(far[C.DISAGREEMENT]) and not bool(near[C.DISAGREEMENT])
    assert near[C.ILA_PX] == pytest.approx(2.0)


def test_identical_labels_mad_zero_remove_nothing_unless_far():
    same = [(IMG, s, "snout", 40.0, 40.0) for s in "abc"]
    labels = labels_table(
        same
        + [(IMG, "d", "snout", 41.0, 40.0)]  # 1 px off: within 3 x 2 px floor
        + [(IMG2, s, "snout", 40.0, 40.0) for s in "abc"]
        + [(IMG2, "d", "snout", 50.0, 40.0)]  # 10 px off identical labels
    )
    cons = C.build_consensus(labels, ConsensusParams(min_scale_px=2.0))
    a, b = point(cons, IMG), point(cons, IMG2)
    assert (a[C.N_REMOVED], a[C.N_LABELERS], a[S.X]) == (0, 4, 40.0)
    assert (b[C.N_REMOVED], b[C.N_LABELERS], b[S.X], b[C.ILA_PX]) == (1, 3, 40.0, 0.0)
    # identical only
    only = C.build_consensus(labels_table(same))
    assert (point(only, IMG)[C.N_REMOVED], point(only, IMG)[C.ILA_PX]) == (0, 0.0)


def test_labeler_who_skipped_a_bodypart_is_ignored_for_it():
    labels = labels_table(
        [
            (IMG, "a", "snout", 10.0, 10.0),
            (IMG, "b", "snout", 12.0, 10.0),
            (IMG, "c", "snout", np.nan, np.nan),  # skipped
            (IMG, "a", "tailbase", 50.0, 50.0),
            (IMG, "b", "tailbase", 51.0, 50.0),
            (IMG, "c", "tailbase", 52.0, 50.0),
            (IMG2, "a", "snout", np.nan, np.nan),  # nobody labeled it
            (IMG2, "b", "snout", np.nan, np.nan),
        ]
    )
    cons = C.build_consensus(labels)
    snout = point(cons, IMG)
    assert (snout[C.N_LABELERS], snout[S.X], snout[C.ILA_PX]) == (2, 11.0, 2.0)
    assert point(cons, IMG, "tailbase")[C.N_LABELERS] == 3
    empty = point(cons, IMG2)
    assert empty[C.N_LABELERS] == 0 and np.isnan(empty[S.X]) and not empty[S.LABELED]
    qc = LQ.labeler_qc(RB.label_cube(labels), ConsensusParams()).set_index([S.SCORER, S.BODYPART])
    assert qc.loc[("c", "snout"), "n"] == 0 and qc.loc[("c", "tailbase"), "n"] == 1


def test_frames_labeled_once_pass_through_unchanged():
    labels, _ = simulate(seed=2, subsets={"bob": 0.3, "carol": 0.3})
    # a scorer labeling frames that nobody else did
    extra = labels_table(
        [
            ("labeled-data/vid9/img0003.png", "dave", bp, 20.0 + i, 30.0)
            for i, bp in enumerate(BODYPARTS)
        ]
    )
    extra[S.SESSION] = "s9"
    labels = pd.concat([labels, extra], ignore_index=True)
    cons = C.build_consensus(labels)
    n_per_point = labels.groupby([S.IMAGE, S.BODYPART])[S.X].count()
    single = n_per_point[n_per_point == 1].index
    assert len(single) > 0
    src = labels.set_index([S.IMAGE, S.BODYPART]).loc[single, [S.X, S.Y]]
    got = cons.set_index([S.IMAGE, S.BODYPART]).loc[single]
    np.testing.assert_array_equal(got[[S.X, S.Y]].to_numpy(), src.to_numpy())
    assert (got[C.N_LABELERS] == 1).all() and got[C.ILA_PX].isna().all()
    dave = cons[cons[S.VIDEO] == "vid9"]
    assert len(dave) == 4 and dave[C.FRAME_ILA_PX].isna().all()
    assert (dave[S.SESSION] == "s9").all() and (dave[S.WIDTH] == 160).all()
    qc = C.analyse(labels).qc.set_index([S.SCORER, S.BODYPART])
    assert qc.loc[("dave", C.ALL), "n"] == 0 and qc.loc[("dave", C.ALL), "n_single"] == 4


def test_frame_ila_and_no_sample_weight():
    """frame_ila_px: the mean pairwise distance of the frame's points; no sample_weight column
    (DLC 3 cannot weight samples: removed, issue 22)."""
    labels = labels_table(
        [
            (IMG, "a", "snout", 10.0, 10.0),
            (IMG, "b", "snout", 13.0, 14.0),  # 5 px
            (IMG, "a", "tailbase", 50.0, 50.0),
            (IMG, "b", "tailbase", 51.0, 50.0),  # 1 px
        ]
    )
    cons = C.build_consensus(labels, ConsensusParams())
    assert cons[C.FRAME_ILA_PX].tolist() == [3.0, 3.0]
    assert "sample_weight" not in cons.columns


def test_metadata_columns_are_kept_and_order_is_labels_first():
    labels, _ = simulate(seed=3)
    labels[S.CONDITION] = "vehicle"
    cons = C.build_consensus(labels)
    assert list(cons.columns[: len(S.LABEL_COLUMNS)]) == S.LABEL_COLUMNS
    for c in [S.SESSION, S.CONDITION, C.N_LABELERS, C.N_REMOVED, C.ILA_PX, C.FRAME_ILA_PX]:
        assert c in cons.columns
    assert cons[C.N_LABELERS].dtype.kind == "i"


def test_duplicate_point_is_an_error_naming_image_and_bodypart():
    labels = labels_table([(IMG, "a", "snout", 1.0, 1.0), (IMG, "a", "snout", 2.0, 2.0)])
    with pytest.raises(PoseopsError, match=r"img0001.png.*'snout'"):
        C.build_consensus(labels)


# ------------------------------------------------------------------ labeler QC


def test_biased_labeler_flagged_and_offset_recovered():
    labels, _ = simulate(seed=4, bias={("carol", "snout"): (4.0, 0.0)})
    qc = C.analyse(labels).qc.set_index([S.SCORER, S.BODYPART])
    carol = qc.loc[("carol", "snout")]
    assert carol["flagged_bias"]
    assert carol["dx_loo"] == pytest.approx(4.0, abs=0.5)
    assert carol["dy_loo"] == pytest.approx(0.0, abs=0.5)
    assert carol["bias_x"] == pytest.approx(4.0, abs=0.5)
    flagged = qc[qc["flagged_bias"]].index.tolist()
    assert flagged == [("carol", "snout"), ("carol", C.ALL)]


def test_bias_model_does_not_blame_unbiased_labelers_on_partial_overlap():
    # alice labels everything, bob and carol each relabel ~half: many frames are alice + carol
    # only, where leave-one-out puts the whole offset on alice too
    labels, _ = simulate(
        seed=5,
        n_videos=8,
        bias={("carol", "snout"): (5.0, 0.0)},
        subsets={"bob": 0.6, "carol": 0.6},
    )
    qc = C.analyse(labels).qc.set_index([S.SCORER, S.BODYPART])
    assert qc.loc[("carol", "snout"), "flagged_bias"]
    assert qc.loc[("carol", "snout"), "bias_x"] == pytest.approx(5.0, abs=0.5)
    assert not qc.loc[("alice", "snout"), "flagged_bias"]
    assert not qc.loc[("bob", "snout"), "flagged_bias"]
    assert abs(qc.loc[("alice", "snout"), "bias_x"]) < 0.5


def test_gold_scorer_offsets_match_hand_computation():
    labels, _ = simulate(seed=6, bias={("bob", "leftear"): (0.0, -3.0)})
    p = ConsensusParams(gold_scorer="alice")
    qc = LQ.labeler_qc(RB.label_cube(labels), p).set_index([S.SCORER, S.BODYPART])
    w = labels.pivot_table(index=[S.IMAGE, S.BODYPART], columns=S.SCORER, values=[S.X, S.Y])
    w = w.xs("leftear", level=S.BODYPART)
    dy = (w[(S.Y, "bob")] - w[(S.Y, "alice")]).dropna()
    dist = np.hypot(w[(S.X, "bob")] - w[(S.X, "alice")], w[(S.Y, "bob")] - w[(S.Y, "alice")])
    row = qc.loc[("bob", "leftear")]
    assert row["gold_n"] == len(dy)
    assert row["gold_dy"] == pytest.approx(dy.mean())
    assert row["gold_dist"] == pytest.approx(dist.dropna().mean())
    assert row["bias_y"] == pytest.approx(-3.0, abs=0.5) and row["flagged_bias"]
    assert np.isnan(qc.loc[("alice", "leftear"), "gold_n"])  # the gold scorer vs itself


def test_unknown_gold_scorer_is_an_error():
    labels, _ = simulate(seed=6, n_videos=1)
    with pytest.raises(PoseopsError, match="gold_scorer 'zoe'"):
        C.analyse(labels, ConsensusParams(gold_scorer="zoe"))


def test_share_removed_per_labeler():
    labels, _ = simulate(seed=7, labelers=("a", "b", "c", "d"), noise=0.3)
    sloppy = (labels[S.SCORER] == "d") & (labels[S.FRAME] < 3)  # 3 of 12 frames far off
    labels.loc[sloppy, S.X] += 25.0
    p = ConsensusParams(max_removed_share=0.1)
    qc = C.analyse(labels, p).qc.set_index([S.SCORER, S.BODYPART])
    d = qc.loc[("d", C.ALL)]
    assert d["n_removed"] == sloppy.sum() and d["share_removed"] == pytest.approx(3 / 12)
    assert d["flagged_removed"] and not qc.loc[("a", C.ALL), "flagged_removed"]


def test_pairwise_distance_matches_direct_computation():
    labels, _ = simulate(seed=8, subsets={"bob": 0.5})
    pw = LQ.pairwise_distances(RB.label_cube(labels))
    w = labels[labels[S.BODYPART] == "rightear"].pivot(index=S.IMAGE, columns=S.SCORER)
    d = np.hypot(w[(S.X, "alice")] - w[(S.X, "bob")], w[(S.Y, "alice")] - w[(S.Y, "bob")]).dropna()
    for a, b in (("alice", "bob"), ("bob", "alice")):
        row = pw[(pw[S.BODYPART] == "rightear") & (pw.scorer_a == a) & (pw.scorer_b == b)]
        assert row["n"].item() == len(d)
        assert row["mean_px"].item() == pytest.approx(d.mean())
        assert row["median_px"].item() == pytest.approx(d.median())


@pytest.mark.parametrize("missing", [False, True])
def test_icc_matches_pingouin(missing: bool):
    pg = pytest.importorskip("pingouin")
    labels, _ = simulate(seed=9, noise=3.0, bias={("carol", "snout"): (6.0, 2.0)})
    if missing:  # bob skipped some snouts: ICC uses the frames every rater labeled
        drop = (labels[S.SCORER] == "bob") & (labels[S.BODYPART] == "snout") & (labels[S.FRAME] < 4)
        labels.loc[drop, [S.X, S.Y]] = np.nan
    icc = LQ.icc_table(RB.label_cube(labels), ConsensusParams()).set_index([S.BODYPART, "coord"])
    for bp in BODYPARTS:
        sub = labels[labels[S.BODYPART] == bp]
        for coord in (S.X, S.Y):
            ref = pg.intraclass_corr(
                sub, targets=S.IMAGE, raters=S.SCORER, ratings=coord, nan_policy="omit"
            ).set_index("Type")  # pingouin 0.7: ICC(A,1) = Shrout-Fleiss ICC(2,1)
            row = icc.loc[(bp, coord)]
            assert row["icc"] == pytest.approx(ref.loc["ICC(A,1)", "ICC"], abs=1e-10)
            assert row["icc_k"] == pytest.approx(ref.loc["ICC(A,k)", "ICC"], abs=1e-10)
            assert row["n_raters"] == 3
            n_frames = sub.groupby(S.IMAGE)[coord].count().eq(3).sum()
            assert row["n_frames"] == n_frames


def test_icc_quality_thresholds_and_rater_fallback():
    labels, _ = simulate(seed=10, subsets={"carol": 0.02})  # carol: (almost) no shared frames
    p = ConsensusParams(icc_min_frames=5, min_icc=0.85, excellent_icc=0.95)
    icc = LQ.icc_table(RB.label_cube(labels), p)
    assert (icc["raters"] == "alice,bob").all() and (icc["n_raters"] == 2).all()
    assert (icc["quality"] == "excellent").all()  # 1 px noise over a 140 px spread
    noisy, _ = simulate(seed=10, noise=25.0)
    q = LQ.icc_table(RB.label_cube(noisy), p)
    assert (q["quality"] == "insufficient").all() and (q["icc"] < 0.85).all()


def test_icc_is_nan_with_a_single_labeler():
    labels, _ = simulate(seed=11, labelers=("alice",))
    icc = LQ.icc_table(RB.label_cube(labels), ConsensusParams())
    assert icc["icc"].isna().all() and (icc["quality"] == "n/a").all()


def test_drift_flags_the_bad_batch_only():
    labels, _ = simulate(seed=12, n_videos=12, labelers=("a", "b", "c", "d"), noise=1.0)
    bad = (labels[S.SCORER] == "d") & (labels[S.SESSION] == "s4")
    rng = np.random.default_rng(0)
    labels.loc[bad, S.X] += rng.normal(0, 2.5, bad.sum())  # d gets sloppy in session 4
    drift = LQ.drift_table(labels, RB.label_cube(labels), ConsensusParams())
    assert (drift["batch_by"] == S.SESSION).all()
    flagged = drift[drift["flagged"]][["batch", S.SCORER]].values.tolist()
    assert flagged == [["s4", "d"]]
    # reference = other labelers' per-batch agreements, recomputed by hand
    row = drift[(drift.batch == "s4") & (drift[S.SCORER] == "d")].iloc[0]
    others = drift[drift[S.SCORER] != "d"]["agreement_px"]
    assert row["z"] == pytest.approx((row["agreement_px"] - others.mean()) / others.std(ddof=1))


def test_drift_batch_column_choice():
    labels, _ = simulate(seed=13, n_videos=2)
    p = ConsensusParams()
    assert LQ.drift_column(labels, p) == S.VIDEO  # one session only -> per video
    labels["batch"] = np.where(labels[S.FRAME] < 6, "w1", "w2")
    assert LQ.drift_column(labels, p) == "batch"
    with pytest.raises(PoseopsError, match="'week'"):
        LQ.drift_column(labels, ConsensusParams(drift_by="week"))


def test_stop_rule_shift_matches_hand_computation():
    labels, _ = simulate(seed=14, n_videos=3, labelers=("a", "b", "c", "d", "e", "f"), noise=0.4)
    p = ConsensusParams(labeler_order=["f", "e", "d", "c", "b", "a"], stop_rule_px=0.5)
    table = LQ.stop_rule(RB.label_cube(labels), p)
    overall = table[table[S.BODYPART] == C.ALL].set_index("step")
    assert overall["scorer_added"].tolist() == ["e", "d", "c", "b", "a"]
    # step 3: consensus of f, e, d (median) vs of f, e (mean); no outliers at 0.4 px
    w = labels.pivot_table(index=[S.IMAGE, S.BODYPART], columns=S.SCORER, values=[S.X, S.Y])
    c2 = {k: w[k][["f", "e"]].mean(axis=1) for k in (S.X, S.Y)}
    c3 = {k: w[k][["f", "e", "d"]].median(axis=1) for k in (S.X, S.Y)}
    shift = np.hypot(c3[S.X] - c2[S.X], c3[S.Y] - c2[S.Y])
    assert overall.loc[3, "mean_shift_px"] == pytest.approx(shift.mean())
    assert overall.loc[3, "n"] == len(shift)
    assert overall.loc[6, "enough"] == (overall.loc[6, "mean_shift_px"] < 0.5)
    assert overall.loc[6, "mean_shift_px"] < overall.loc[2, "mean_shift_px"]
    res = C.analyse(labels, p)
    enough = overall[overall["enough"]].index
    assert res.summary["labelers_needed"] == (enough[0] - 1 if len(enough) else None)


def test_stop_rule_default_order_and_unknown_name():
    labels, _ = simulate(seed=15, n_videos=2, subsets={"bob": 0.5, "carol": 0.8})
    cube = RB.label_cube(labels)
    assert LQ.labeler_order(cube, ConsensusParams()) == ["alice", "carol", "bob"]
    assert LQ.labeler_order(cube, ConsensusParams(gold_scorer="bob"))[0] == "bob"
    with pytest.raises(PoseopsError, match="'zed'"):
        LQ.labeler_order(cube, ConsensusParams(labeler_order=["zed"]))


def test_consensus_beats_every_single_labeler_against_truth():
    labels, truth = simulate(seed=16, labelers=("a", "b", "c", "d", "e"), noise=1.5)
    far = (labels[S.SCORER] == "e") & (labels[S.FRAME] == 0)  # some gross errors too
    labels.loc[far, S.Y] += 30.0
    cons = C.build_consensus(labels)

    def err(df: pd.DataFrame) -> float:
        m = df.merge(truth, on=[S.IMAGE, S.BODYPART], suffixes=("", "_t"))
        return float(np.hypot(m[S.X] - m["x_t"], m[S.Y] - m["y_t"]).mean())

    per_labeler = {s: err(g) for s, g in labels.groupby(S.SCORER)}
    assert err(cons) < min(per_labeler.values())


# ------------------------------------------------------------------ stage I/O


@pytest.fixture
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A params.yaml + labels parquet in a tmp working dir."""
    import yaml

    labels, _ = simulate(seed=17, bias={("carol", "snout"): (4.0, 0.0)})
    (tmp_path / "data").mkdir()
    labels.to_parquet(tmp_path / "data" / "labels.parquet", index=False)
    params = {
        "ingest": {"out": "data/labels.parquet"},
        "consensus": {
            "out": "data/consensus.parquet",
            "reports": "rep/labelers",
            "summary": "rep/labelers_summary.json",
            "mad_k": 3.0,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_cli_writes_every_output(stage: Path):
    from poseops.cli import main

    assert main(["consensus"]) == 0
    cons = pd.read_parquet(stage / "data" / "consensus.parquet")
    assert (cons[S.SCORER] == S.CONSENSUS_SCORER).all()
    for name in CC.REPORT_FILES.values():
        assert (stage / "rep" / "labelers" / name).stat().st_size > 0
    png = (stage / "rep" / "labelers" / CC.HEATMAP).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((stage / "rep" / "labelers_summary.json").read_text())
    assert summary["flagged_bias"] == ["carol/snout"]
    assert summary["n_labelers"] == 3 and summary["n_images"] == cons[S.IMAGE].nunique()
    qc = pd.read_csv(stage / "rep" / "labelers" / "qc.csv")
    assert set(qc[S.SCORER]) == {"alice", "bob", "carol"}


def test_cli_missing_labels_is_a_one_line_error(stage: Path, capsys: pytest.CaptureFixture):
    from poseops.cli import main

    (stage / "data" / "labels.parquet").unlink()
    assert main(["consensus"]) == 2
    err = capsys.readouterr().err
    assert "labels.parquet" in err and "poseops ingest" in err and err.count("\n") == 1


def test_unknown_param_key_is_an_error(stage: Path):
    import yaml

    params = yaml.safe_load((stage / "params.yaml").read_text())
    params["consensus"]["mad"] = 3
    (stage / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PoseopsError, match="mad"):
        CC.run()


def test_log_to_mlflow(stage: Path, mlflow_uri: str):
    import mlflow

    from poseops.cli import main

    res = CC.run()  # the stage itself logs nothing unless asked
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert main(["consensus", "--mlflow"]) == 0  # a run of its own (MLFLOW_TRACKING_URI set)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.run_name == "labeler-qc"
    # beside the training runs (train.experiment), not in MLflow's untagged "Default"
    exp = client.get_experiment(runs[0].info.experiment_id)
    assert exp.name == PipelineParams.load("params.yaml").train.experiment == "poseops"
    m = runs[0].data.metrics
    assert m["labelers.n_labelers"] == 3
    assert m["labelers.removed_share"] == pytest.approx(res.summary["removed_share"])
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "labelers")}
    assert {"labelers/qc.csv", "labelers/icc.csv", f"labelers/{CC.HEATMAP}"} <= arts
    # into an active run, from the reports folder
    with mlflow.start_run() as active:
        assert CC.log_to_mlflow(stage / "rep" / "labelers", stage / "rep" / "labelers_summary.json")
    got = client.get_run(active.info.run_id).data.metrics
    assert got["labelers.n_images"] == res.summary["n_images"]


def test_log_to_mlflow_without_tracking_is_a_no_op(stage: Path):
    res = CC.run()
    assert CC.log_to_mlflow(res) is False
    assert not (stage / "mlflow.db").exists() and not (stage / "mlruns").exists()


def test_drift_constant_offset_is_persistent_not_drift():
    labels, _ = simulate(seed=18, n_videos=8, labelers=("a", "b", "c", "d"), noise=1.0)
    labels.loc[labels[S.SCORER] == "d", S.X] += 3.0  # d is off in every session
    drift = LQ.drift_table(labels, RB.label_cube(labels), ConsensusParams())
    d = drift[drift[S.SCORER] == "d"]
    assert d["flagged"].all() and d["persistent"].all() and len(d) == 4
    assert not drift[drift[S.SCORER] != "d"]["persistent"].any()
    assert C.analyse(labels).summary["drift_flagged"] == []


def test_ge_expectations_on_icc_and_removed_share(tmp_path: Path, repo_root: Path):
    """The labeler expectations of expectations/dataset.json pass on good labels and fail,
    naming the culprit, on a sloppy labeler / unreliable bodypart."""
    import dataclasses

    from poseops.quality import gx

    suite = json.loads((repo_root / "expectations" / "dataset.json").read_text())
    mine = [e for e in suite["expectations"] if e["meta"]["table"] in ("labeler_icc", "labeler_qc")]
    assert {e["meta"]["name"] for e in mine} == {"labeler_icc", "labeler_removed_share"}
    path = tmp_path / "labelers.json"
    path.write_text(json.dumps({"name": "labelers", "expectations": mine}))
    p = ConsensusParams(max_removed_share=0.1, min_icc=0.85)
    params = {"consensus": dataclasses.asdict(p)}

    good, _ = simulate(seed=19, labelers=("a", "b", "c", "d"))
    res = C.analyse(good, p)
    ok = gx.validate_tables(path, {"labeler_icc": res.icc, "labeler_qc": res.qc}, params)
    assert ok.success, ok.message()

    bad = good.copy()
    sloppy = (bad[S.SCORER] == "d") & (bad[S.FRAME] < 4)  # a third of d's frames far off
    bad.loc[sloppy, S.X] += 40.0
    tail = bad[S.BODYPART] == "tailbase"  # tailbase: everyone guesses within 60 px
    bad.loc[tail, S.X] += np.random.default_rng(1).normal(0, 60, tail.sum())
    res = C.analyse(bad, p)
    out = gx.validate_tables(path, {"labeler_icc": res.icc, "labeler_qc": res.qc}, params)
    fails = out.failures().set_index("name")
    assert set(fails.index) == {"labeler_icc", "labeler_removed_share"}
    assert "tailbase" in str(fails.loc["labeler_icc", "examples"])
    examples = fails.loc["labeler_removed_share", "examples"]
    assert examples and all(e[S.SCORER] == "d" for e in examples)


def test_empty_labels_is_an_error():
    labels, _ = simulate(seed=20, n_videos=1)
    with pytest.raises(PoseopsError, match="empty"):
        C.build_consensus(labels.iloc[:0])


def test_single_scorer_project_passes_through(openfield: Path, tmp_path: Path):
    """The real openfield project (one scorer, Pranav): consensus = his labels, QC tables empty
    or NaN, every output still written."""
    from poseops.data.ingest import ingest_project

    labels = ingest_project(openfield)
    res = C.analyse(labels)
    cons = res.consensus.set_index([S.IMAGE, S.BODYPART])
    src = labels.set_index([S.IMAGE, S.BODYPART]).loc[cons.index]
    np.testing.assert_array_equal(cons[[S.X, S.Y]], src[[S.X, S.Y]])
    assert (cons[C.N_LABELERS] == src[S.LABELED].astype(int)).all()
    assert cons[C.ILA_PX].isna().all() and cons[C.FRAME_ILA_PX].isna().all()
    assert res.icc["icc"].isna().all() and res.pairwise.empty and res.stop_rule.empty
    assert res.summary["n_labelers"] == 1 and res.summary["n_removed"] == 0
    p = ConsensusParams(
        out=str(tmp_path / "c.parquet"),
        reports=str(tmp_path / "rep"),
        summary=str(tmp_path / "s.json"),
    )
    paths = CC.write_outputs(res, p)
    assert all(Path(v).stat().st_size > 0 for v in paths.values())


@pytest.mark.parametrize(
    "kw", [{"mad_k": 0.5}, {"min_scale_px": -1.0}, {"min_icc": 0.99, "excellent_icc": 0.95}]
)
def test_invalid_params_are_an_error_naming_the_key(kw: dict):
    with pytest.raises(PoseopsError, match=next(iter(kw))):
        ConsensusParams(**kw)
