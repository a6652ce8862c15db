"""outliers: planted low-likelihood frames and jumps are found; quotas per condition hold;
frames + machinelabels are written in DLC's refine convention."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.config.refine import OutliersParams
from poseops.refine import outliers as O

BPS = ["snout", "leftear", "rightear", "tailbase"]
LOW_ONE = {("a", 10), ("b", 33)}  # one bodypart at likelihood 0.1
LOW_ALL = {("c", 20)}  # every bodypart at 0.2 (mean below the bound too)
JUMP = {("a", 40), ("c", 5)}  # snout displaced 40 px for one frame


def _smooth_preds(videos=("a", "b", "c"), n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for v in videos:
        base = rng.uniform(30, 90, (len(BPS), 2))
        for f in range(n):
            for j, bp in enumerate(BPS):
                x, y = base[j] + 0.5 * f * np.array([1, 0.3])  # 0.52 px/frame
                lik = 0.9 + 0.09 * rng.random()
                if (v, f) in LOW_ONE and j == 2:
                    lik = 0.1
                if (v, f) in LOW_ALL:
                    lik = 0.2
                if (v, f) in JUMP and bp == "snout":
                    x += 40
                rows.append((v, f, bp, x, y, lik))
    return pd.DataFrame(rows, columns=["video", "frame", "bodypart", "x", "y", "likelihood"])


def _flagged(f: pd.DataFrame, col: str) -> set[tuple[str, int]]:
    return set(zip(f.loc[f[col], "video"], f.loc[f[col], "frame"], strict=True))


def test_planted_low_likelihood_frames_are_found():
    f = O.candidate_frames(_smooth_preds(), p_bound=0.6, epsilon=20, uncertain_fraction=0.0)
    assert _flagged(f, "low_likelihood") == LOW_ONE | LOW_ALL
    fm = O.candidate_frames(_smooth_preds(), 0.6, 20, 0.0, likelihood_mode="mean")
    assert _flagged(fm, "low_likelihood") == LOW_ALL  # one low bodypart does not sink the mean


def test_planted_jumps_are_found_and_measured():
    f = O.candidate_frames(_smooth_preds(), p_bound=0.6, epsilon=20, uncertain_fraction=0.0)
    # a one-frame spike: the displacement into it and back out of it both exceed epsilon
    expected = JUMP | {(v, t + 1) for v, t in JUMP}
    assert _flagged(f, "jump") == expected
    row = f[(f.video == "a") & (f.frame == 40)].iloc[0]
    step = math.hypot(40 + 0.5, 0.15)  # spike + the regular per-frame motion
    assert row["jump_px"] == pytest.approx(step, abs=1e-9)
    assert f[(f.video == "a") & (f.frame == 0)]["jump_px"].isna().all()  # no previous frame


def test_top_uncertain_fraction_per_video():
    preds = _smooth_preds()
    f = O.candidate_frames(preds, p_bound=0.0, epsilon=1e9, uncertain_fraction=0.05)
    for _, part in f.groupby("video"):
        k = math.ceil(0.05 * len(part))
        lowest = part.nsmallest(k, "mean_likelihood")
        assert set(part.loc[part.uncertain, "frame"]) == set(lowest["frame"])
    assert (f["rule"] == f["uncertain"].map({True: "uncertain", False: ""})).all()


def test_rules_are_named_in_the_rule_column():
    f = O.candidate_frames(_smooth_preds(), 0.6, 20, 0.0).set_index(["video", "frame"])
    assert f.loc[("c", 20), "rule"] == "low_likelihood"
    assert f.loc[("a", 40), "rule"] == "jump"
    assert f.loc[("a", 3), "rule"] == ""


def test_diversity_sampling_keeps_condition_quotas():
    rng = np.random.default_rng(0)
    cand = pd.DataFrame({"video": list("aaaaaaaabbbbbbc"), "frame": range(15)})
    cand["condition"] = cand["video"].map({"a": "vehicle", "b": "low", "c": "high"})
    sel = O.select_outliers(cand, rng.normal(size=(15, 6)), 7, seed=0, balance_by="condition")
    # 7 over 3 conditions: high has one candidate, the rest is split 3 / 3
    assert sel["condition"].value_counts().to_dict() == {"vehicle": 3, "low": 3, "high": 1}


def _preds_from_truth(proj: Path, videos: list[str], planted: dict) -> pd.DataFrame:
    """'Model predictions' = the generator's true tracks, likelihood 0.95, with planted faults."""
    t = pd.read_csv(proj / "ground_truth_tracks.csv")
    t = t[t.video.isin(videos)].copy()
    t["likelihood"] = 0.95
    t["scorer"] = "DLC_test"
    for (v, f), kind in planted.items():
        m = (t.video == v) & (t.frame == f)
        if kind == "low":
            t.loc[m & (t.bodypart == "leftear"), "likelihood"] = 0.05
        else:
            t.loc[m & (t.bodypart == "tailbase"), "x"] += 50
    return t


def test_outliers_on_demo_write_frames_machinelabels_and_manifest(demo_src, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    videos = ["m1-s4", "m1-s2", "m1-s3", "m2-s3"]  # vehicle, low_dose, high_dose, vehicle

    def free(v: str, after: int) -> int:  # first frame > after without a labeled image
        return next(f for f in range(after + 1, 30)
                    if not (proj / "labeled-data" / v / f"img{f:02d}.png").exists())

    planted = {(v, free(v, 3)): "low" for v in videos}
    jump_frame = free("m1-s4", 15)
    planted[("m1-s4", jump_frame)] = "jump"
    preds = _preds_from_truth(proj, videos, planted)
    low_frame = free("m1-s4", 3)
    preds.to_parquet(tmp_path / "preds.parquet")
    params = OutliersParams(predictions=str(tmp_path / "preds.parquet"), p_bound=0.6,
                              epsilon=20, uncertain_fraction=0.0, n_frames=20,
                              manifest=str(tmp_path / "out" / "manifest.csv"))
    man = O.pick_outliers(params, proj, demo_src[1])
    picked = set(zip(man.video, man.frame, strict=True))
    assert set(planted) <= picked  # every planted frame is found (fewer candidates than n_frames)
    assert (man.set_index(["video", "frame"]).loc[("m1-s4", jump_frame), "rule"]) == "jump"
    assert man.loc[man.rule.str.contains("jump"), "jump_px"].min() > 20
    # machinelabels-iter0.h5: DLC's refine file; holds the predictions of the picked frames
    ml = pd.read_hdf(proj / "labeled-data" / "m1-s4" / "machinelabels-iter0.h5", "df_with_missing")
    assert list(ml.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(dict.fromkeys(ml.columns.get_level_values("bodyparts"))) == BPS
    row = ml.loc[("labeled-data", "m1-s4", f"img{low_frame:02d}.png")]
    truth = preds[(preds.video == "m1-s4") & (preds.frame == low_frame)].set_index("bodypart")
    assert row[("DLC_test", "snout", "x")] == pytest.approx(truth.loc["snout", "x"])
    assert row[("DLC_test", "leftear", "likelihood")] == pytest.approx(0.05)
    for img in man.image:
        assert (proj / img).is_file()


def test_quota_per_condition_on_demo(demo_src, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    videos = ["m1-s4", "m1-s2", "m1-s3", "m2-s3"]
    preds = _preds_from_truth(proj, videos, {})
    preds.to_parquet(tmp_path / "preds.parquet")
    # every frame is a candidate (uncertain_fraction = 1): 6 frames -> 2 per condition
    params = OutliersParams(predictions=str(tmp_path / "preds.parquet"), uncertain_fraction=1.0,
                              n_frames=6, write_frames=False,
                              manifest=str(tmp_path / "out" / "manifest.csv"))
    man = O.pick_outliers(params, proj, demo_src[1])
    assert man.condition.value_counts().to_dict() == {"vehicle": 2, "low_dose": 2, "high_dose": 2}
    assert man.cluster.notna().all() and (man.quota == 2).all()


def _demo_preds(demo_src, tmp_path, planted: dict) -> tuple[Path, Path, pd.DataFrame]:
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    preds = _preds_from_truth(proj, ["m1-s4", "m1-s2", "m1-s3", "m2-s3"], planted)
    preds.to_parquet(tmp_path / "preds.parquet")
    return proj, tmp_path / "preds.parquet", preds


def _free(proj: Path, v: str, after: int) -> int:
    return next(f for f in range(after + 1, 30)
                if not (proj / "labeled-data" / v / f"img{f:02d}.png").exists())


def test_targeted_bodypart_scores_only_that_bodypart(demo_src, tmp_path):
    """A leftear drop (frame A) and a tailbase jump (frame B) in m1-s4: aimed at tailbase, only
    the jump (and the frame after it) is picked; the machinelabels still hold every bodypart."""
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    a = _free(proj, "m1-s4", 3)
    b = _free(proj, "m1-s4", 15)
    proj2, ppath, preds = _demo_preds(demo_src, tmp_path / "x", {("m1-s4", a): "low",
                                                                  ("m1-s4", b): "jump"})
    params = OutliersParams(predictions=str(ppath), p_bound=0.6, epsilon=20,
                            uncertain_fraction=0.0, n_frames=20, bodyparts=["tailbase"],
                            manifest=str(tmp_path / "out" / "manifest.csv"))
    man = O.pick_outliers(params, proj2, demo_src[1])
    picked = set(zip(man.video, man.frame, strict=True))
    assert ("m1-s4", b) in picked and ("m1-s4", a) not in picked
    assert set(man.rule) == {"jump"}
    untargeted = O.pick_outliers(OutliersParams(**{**params.__dict__, "bodyparts": [],
                                                   "write_frames": False}), proj2, demo_src[1])
    assert ("m1-s4", a) in set(zip(untargeted.video, untargeted.frame, strict=True))
    ml = pd.read_hdf(proj2 / "labeled-data/m1-s4/machinelabels-iter0.h5", "df_with_missing")
    assert list(dict.fromkeys(ml.columns.get_level_values("bodyparts"))) == BPS
    row = ml.loc[("labeled-data", "m1-s4", f"img{b:02d}.png")]
    truth = preds[(preds.video == "m1-s4") & (preds.frame == b)].set_index("bodypart")
    assert row[("DLC_test", "leftear", "x")] == pytest.approx(truth.loc["leftear", "x"])


def test_targeted_condition_gets_the_whole_quota(demo_src, tmp_path):
    proj, ppath, _ = _demo_preds(demo_src, tmp_path, {})
    params = OutliersParams(predictions=str(ppath), uncertain_fraction=1.0, n_frames=6,
                            write_frames=False, conditions=["high_dose"],
                            manifest=str(tmp_path / "out" / "manifest.csv"))
    man = O.pick_outliers(params, proj, demo_src[1])
    meta = pd.read_csv(demo_src[1])
    high = set(meta.loc[meta.condition == "high_dose", "video"])
    assert len(man) == 6 and set(man.video) <= high and set(man.condition) == {"high_dose"}
    assert (man.quota == 6).all()


def test_targeting_a_bodypart_or_condition_that_is_not_there_is_one_line(demo_src, tmp_path,
                                                                         capsys):
    from poseops.cli import main

    proj, ppath, _ = _demo_preds(demo_src, tmp_path, {})
    (tmp_path / "params.yaml").write_text(
        f"outliers:\n  manifest: {tmp_path / 'out' / 'manifest.csv'}\n"
        f"merge:\n  pending: {tmp_path / 'pending.csv'}\n")
    base = ["outliers", "--project", str(proj), "--metadata", str(demo_src[1]), "--predictions",
            str(ppath), "--params", str(tmp_path / "params.yaml")]
    assert main([*base, "--bodypart", "nose"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bodypart 'nose'" in err and "preds.parquet" in err
    assert main([*base, "--condition", "mega_dose"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'mega_dose'" in err and "videos.csv" in err


def test_pending_frames_of_a_partial_merge_are_listed_again(demo_src, tmp_path):
    proj, ppath, _ = _demo_preds(demo_src, tmp_path, {})
    pending = tmp_path / "pending.csv"
    pd.DataFrame({"image": ["labeled-data/m9-s1/img07.png"], "video": ["m9-s1"], "frame": [7],
                  "iteration": [0], "rule": ["low_likelihood"]}).to_csv(pending, index=False)
    params = OutliersParams(predictions=str(ppath), uncertain_fraction=1.0, n_frames=4,
                            write_frames=False, pending=str(pending),
                            manifest=str(tmp_path / "out" / "manifest.csv"))
    man = O.pick_outliers(params, proj, demo_src[1])
    back = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert len(man) == len(back) == 5
    row = back[back.image == "labeled-data/m9-s1/img07.png"].iloc[0]
    assert row.rule == "pending" and row.video == "m9-s1" and row.frame == 7


# ---------------------------------------------------------------- seed-ensemble disagreement
def _members_with_offsets(preds: pd.DataFrame, offsets: dict[tuple[str, int], list[float]],
                          bodypart: str) -> list[pd.DataFrame]:
    """One copy of ``preds`` per member; on the frames of ``offsets`` member k moves
    ``bodypart`` by offsets[frame][k] px in x (member 0 = the analyzed model itself)."""
    n = len(next(iter(offsets.values())))
    out = []
    for k in range(n):
        m = preds.copy()
        for (v, f), offs in offsets.items():
            sel = (m.video == v) & (m.frame == f) & (m.bodypart == bodypart)
            m.loc[sel, "x"] += offs[k]
        out.append(m)
    return out


def test_disagreement_rule_flags_frames_where_members_disagree():
    preds = _smooth_preds()
    # three members; ("a", 7): x spread [0, 6, -6] (SD 4.90 px), ("b", 12): [0, 10, 2] (SD 4.32),
    # ("c", 30): [0, 1, -1] (SD 0.82, below the bound): every other frame identical
    offsets = {("a", 7): [0.0, 6.0, -6.0], ("b", 12): [0.0, 10.0, 2.0], ("c", 30): [0.0, 1.0, -1.0]}
    members = _members_with_offsets(preds, offsets, "leftear")
    f = O.candidate_frames(members[0], 0.0, 1e9, 0.0, ensemble=members[1:], ensemble_sd_px=2.0)
    assert _flagged(f, "disagreement") == {("a", 7), ("b", 12)}
    f = f.set_index(["video", "frame"])
    for key, offs in offsets.items():  # population SD of the members' positions (ddof 0)
        assert f.loc[key, "ensemble_sd_px"] == pytest.approx(np.std(offs), abs=1e-9)
    assert f.loc[("a", 7), "rule"] == "disagreement" and f.loc[("c", 30), "rule"] == ""
    agree = f.drop(list(offsets))
    assert (agree["ensemble_sd_px"] == 0).all() and not agree["disagreement"].any()
    plain = O.candidate_frames(members[0], 0.0, 1e9, 0.0)  # no ensemble: the rule never fires
    assert not plain["disagreement"].any() and plain["ensemble_sd_px"].isna().all()


def _ensemble_params(tmp_path: Path, ppath: Path, members: list[pd.DataFrame],
                     **kw) -> OutliersParams:
    paths = []
    for k, m in enumerate(members):
        paths.append(tmp_path / f"seed{k + 1}.parquet")
        m.to_parquet(paths[-1])
    return OutliersParams(predictions=str(ppath), p_bound=0.0, epsilon=1e9, uncertain_fraction=0.0,
                          ensemble=[str(p) for p in paths], ensemble_sd_px=2.0,
                          manifest=str(tmp_path / "out" / "manifest.csv"), **kw)


def test_outliers_on_demo_pick_the_frames_the_seeds_disagree_on(demo_src, tmp_path):
    proj, ppath, preds = _demo_preds(demo_src, tmp_path, {})
    a, b = _free(proj, "m1-s4", 3), _free(proj, "m1-s3", 10)
    offsets = {("m1-s4", a): [0.0, 8.0, -2.0], ("m1-s3", b): [0.0, 3.0, 9.0]}
    members = _members_with_offsets(preds, offsets, "tailbase")
    params = _ensemble_params(tmp_path, ppath, members[1:], n_frames=20)
    man = O.pick_outliers(params, proj, demo_src[1])
    assert set(zip(man.video, man.frame, strict=True)) == set(offsets)
    assert set(man.rule) == {"disagreement"}
    got = man.set_index(["video", "frame"])["ensemble_sd_px"]
    for key, offs in offsets.items():
        assert got[key] == pytest.approx(np.std(offs), abs=1e-9)
    back = pd.read_csv(tmp_path / "out" / "manifest.csv").set_index(["video", "frame"])
    assert back.loc[("m1-s4", a), "ensemble_sd_px"] == pytest.approx(np.std(offsets[("m1-s4", a)]))
    scores = pd.read_csv(tmp_path / "out" / "frame_scores.csv")
    assert scores["disagreement"].sum() == 2 and (scores["ensemble_sd_px"].notna()).all()


def test_ensemble_member_errors_are_one_line_naming_file_and_what(demo_src, tmp_path, capsys):
    from poseops.cli import main

    proj, ppath, preds = _demo_preds(demo_src, tmp_path, {})
    f = _free(proj, "m1-s2", 3)
    member = tmp_path / "seed1.parquet"
    yaml_ = tmp_path / "params.yaml"
    yaml_.write_text(f"outliers:\n  manifest: {tmp_path / 'out' / 'manifest.csv'}\n"
                     f"  ensemble: [{member}]\nmerge:\n  pending: {tmp_path / 'pending.csv'}\n")
    args = ["outliers", "--project", str(proj), "--metadata", str(demo_src[1]), "--predictions",
            str(ppath), "--params", str(yaml_)]

    def one_line_error() -> str:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "seed1.parquet" in err
        return err

    assert "not found" in one_line_error()  # the member is missing
    preds[preds.video != "m2-s3"].to_parquet(member)  # a member without one video
    err = one_line_error()
    assert "'m2-s3'" in err and "video" in err
    preds[~((preds.video == "m1-s2") & (preds.frame == f))].to_parquet(member)  # lacks a frame
    err = one_line_error()
    assert "'m1-s2'" in err and f"[{f}]" in err and "frame" in err
    other = preds.assign(video=preds.video.replace({"m1-s4": "m9-s9"}))  # another video instead
    other.to_parquet(member)
    err = one_line_error()
    assert "'m9-s9'" in err and "'m1-s4'" in err
    other = tmp_path / "seed2.csv"  # --ensemble overrides params outliers.ensemble
    preds[preds.bodypart != "leftear"].to_csv(other, index=False)
    assert main([*args, "--ensemble", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed2.csv" in err and "bodypart 'leftear'" in err
    ma = tmp_path / "ma.parquet"  # multi-animal: assemblies are unordered, no pairing of members
    preds.assign(assembly=0).to_parquet(ma)
    assert main([*args, "--predictions", str(ma), "--ensemble", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ma.parquet" in err and "unordered" in err


def test_videos_with_no_outlier_give_an_empty_manifest_not_a_crash(demo_src, tmp_path):
    """Steady, confident predictions (nothing below p_bound, no jump, no uncertain quota): no
    frame is a candidate; outliers writes an empty manifest with its header, picks no frame and
    writes no machinelabels (a model that is good on these videos is not an error)."""
    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    preds = _preds_from_truth(proj, ["m1-s4", "m2-s3"], {})
    assert preds["likelihood"].min() >= 0.6  # brute force: nothing under the bound
    preds.to_parquet(tmp_path / "preds.parquet")
    before = sorted(p.relative_to(proj) for p in proj.rglob("*"))
    manifest = tmp_path / "out" / "manifest.csv"
    params = OutliersParams(predictions=str(tmp_path / "preds.parquet"), p_bound=0.6,
                            epsilon=1000, uncertain_fraction=0.0, n_frames=20,
                            manifest=str(manifest))
    man = O.pick_outliers(params, proj, demo_src[1])
    assert man.empty and {"video", "frame", "rule", "image"} <= set(man.columns)
    assert manifest.is_file() and pd.read_csv(manifest).empty
    assert sorted(p.relative_to(proj) for p in proj.rglob("*")) == before  # nothing written
