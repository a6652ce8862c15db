"""Issue 21 on variants of the real openfield project (../shared/data/dlc-openfield): fast checks
that need no training (the leakage warning, reference bodyparts, validation messages)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from support.e2e import openfield_labels

from poseops.config.data import SplitParams
from poseops.data import composition as C
from poseops.data import split as SP
from poseops.dlc import files as dlcio


def openfield_long(spacing: int = 1) -> pd.DataFrame:
    """The openfield labels as a tidy table; frame f renamed to frame f * spacing (a lab that
    labels one frame every ``spacing`` frames)."""
    long = dlcio.wide_to_long(openfield_labels())
    long["frame"] = long["frame"] * spacing
    long["image"] = [f"labeled-data/m4s1/img{f:05d}.png" for f in long["frame"]]
    long["condition"] = "baseline"
    return long


def brute_min_gap(split: pd.DataFrame, frame: pd.Series) -> float:
    f, s, v = frame.to_numpy(), split["split"].to_numpy(), split["video"].to_numpy()
    gaps = [abs(int(f[i]) - int(f[j])) for i in range(len(f)) for j in range(len(f))
            if s[i] != s[j] and v[i] == v[j]]
    return min(gaps) if gaps else np.inf


def test_far_apart_frames_get_no_leakage_warning_in_temporal_blocks_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames 220 apart, blocks of 20: every block holds one image, but no two frames of
    different splits are neighbours: recommending temporal-blocks (in force) is wrong."""
    labels = openfield_long(spacing=220)
    p = SplitParams(mode="temporal-blocks", stratify_by=None)
    with caplog.at_level(logging.WARNING):
        split = SP.make_split(labels, p)
    assert (split.groupby("group")["image"].nunique() == 1).all()  # one image per block
    frame = split["image"].str.extract(r"img(\d+)\.png")[0].astype(int)
    assert brute_min_gap(split, frame) >= 220 > p.gap_frames
    sp = C.composition_metrics(labels, split, split_params=p)["split"]
    assert sp["leakage_warning"] is None and sp["frame_level_groups"] is False
    assert "leakage" not in caplog.text
    from poseops.report.html import split_summary_html

    assert "Leakage" not in split_summary_html({"split": sp})


def test_neighbouring_frames_across_splits_still_warn() -> None:
    """The openfield frames as labeled (consecutive) split image by image: neighbours straddle
    splits; the warning fires and states how close they are."""
    labels = openfield_long(spacing=1)
    p = SplitParams(group_by=["image"], stratify_by=None)
    split = SP.make_split(labels, p)
    frame = split["image"].str.extract(r"img(\d+)\.png")[0].astype(int)
    gap = brute_min_gap(split, frame)
    assert gap <= p.gap_frames
    sp = C.composition_metrics(labels, split, split_params=p)["split"]
    assert sp["frame_level_groups"] is True
    assert f"{gap} frame(s) apart" in sp["leakage_warning"]
    # the same lab labeling one frame in 220, split image by image: no neighbours, no warning
    far = openfield_long(spacing=220)
    split = SP.make_split(far, p)
    assert C.composition_metrics(far, split, split_params=p)["split"]["leakage_warning"] is None


def renamed_openfield(dst, rename: dict[str, str], multianimal: bool = False):
    """openfield's config.yaml with its bodyparts renamed (a lab's naming: 'pup_snout');
    ``multianimal``: the same names as maDLC multianimalbodyparts of two individuals."""
    import yaml
    from support.e2e import OPENFIELD

    cfg = yaml.safe_load((OPENFIELD / "config.yaml").read_text())
    names = [rename.get(b, b) for b in cfg["bodyparts"]]
    if multianimal:
        cfg.update(multianimalproject=True, bodyparts="MULTI!", multianimalbodyparts=names,
                   uniquebodyparts=["arena_corner"], individuals=["pup1", "pup2"])
    else:
        cfg["bodyparts"] = names
    dst.mkdir(parents=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


@pytest.mark.parametrize(("rename", "expected"), [
    ({"snout": "pup_snout", "tailbase": "pup_tailbase"}, ["pup_snout", "pup_tailbase"]),
    ({"snout": "moth_nose", "tailbase": "moth_tailbase"}, ["moth_nose", "moth_tailbase"]),
    ({"snout": "NoseTip", "tailbase": "base_of_tail"}, ["NoseTip", "base_of_tail"]),
    ({"snout": "snout_m", "tailbase": "tail1_m"}, ["snout_m", "tail1_m"]),
])
@pytest.mark.parametrize("multianimal", [False, True])
def test_init_finds_prefixed_reference_bodyparts(tmp_path, rename, expected, multianimal) -> None:
    from pathlib import Path

    from poseops.commands.init import fitted_params

    project = renamed_openfield(tmp_path / "p", rename, multianimal)
    current = {"evaluate": {"reference_bodyparts": ["snout", "tailbase"]}}
    updates, notes = fitted_params(project, Path("data/raw/p"), "dlc", current)
    assert updates["evaluate"]["reference_bodyparts"] == expected
    said = next(n for n in notes if n.startswith("evaluate.reference_bodyparts"))
    assert f"head-like {expected[0]!r} and tail-like {expected[1]!r}" in said
    assert ("per individual" in said) == multianimal


def test_reference_pair_shares_its_prefix() -> None:
    from poseops.commands.init import reference_bodyparts

    names = ["moth_nose", "pup_snout", "moth_tailbase", "pup_tail_base", "pup_tailtip"]
    assert reference_bodyparts(names, ["snout", "tailbase"]) == ["pup_snout", "pup_tail_base"]
    assert reference_bodyparts(["headstage", "tail_tip"], None) is None  # not a head, not a base


# --------------------------------------------------------------------------- validation
def _validate(labels: pd.DataFrame, project=None, **validate):
    """The dataset suite over ``labels`` with params.yaml's shipped ``validate`` defaults (plus
    ``validate`` overrides); returns the results indexed by expectation name."""
    import dataclasses

    from support.e2e import REPO

    from poseops.config.data import ValidateParams
    from poseops.quality import dataset as V
    from poseops.quality.gx import validate_tables

    vp = {**dataclasses.asdict(ValidateParams()), "check_images": False, **validate}
    config = V.config_params(project, labels) if project else {
        "bodyparts": list(dict.fromkeys(labels["bodypart"]))}
    tables = V.dataset_tables(labels, None, config.get("individuals"))
    res = validate_tables(REPO / "expectations" / "dataset.json", tables,
                          {"validate": vp, "config": config})
    return res, res.results.set_index("name")


def _with_metadata(long: pd.DataFrame) -> pd.DataFrame:
    return long.assign(animal="m4", session="s1", condition="baseline", width=640, height=480)


def _failed(r: pd.DataFrame) -> list[str]:
    return sorted(r.index[r["success"].eq(False)])


def multianimal_openfield(tmp_path, unique_only: list[int]):
    """openfield as a maDLC project: the mouse is individual 'mouse1', plus a unique bodypart
    'arena_corner' labeled in every frame; in the frames ``unique_only`` the mouse is not
    labeled (out of view), only the corner is: a valid DLC frame."""
    project = renamed_openfield(tmp_path / "ma", {}, multianimal=True)
    import yaml

    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["individuals"] = ["mouse1"]
    (project / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    long = _with_metadata(openfield_long())
    long.insert(long.columns.get_loc("scorer") + 1, "individual", "mouse1")
    corner = long.drop_duplicates("image").assign(individual="single", bodypart="arena_corner",
                                                  x=5.0, y=7.0, labeled=True)
    labels = pd.concat([long, corner], ignore_index=True).sort_values(
        ["image", "individual"], kind="stable").reset_index(drop=True)
    images = sorted(set(labels["image"]))
    gone = labels["image"].isin([images[i] for i in unique_only]) & (
        labels["individual"] == "mouse1")
    labels.loc[gone, ["x", "y"]] = np.nan
    labels["labeled"] = labels["x"].notna()
    return project, labels


def test_multianimal_frames_with_only_unique_bodyparts_pass_with_defaults(tmp_path) -> None:
    project, labels = multianimal_openfield(tmp_path, unique_only=[3, 40, 41, 90])
    # independent count: 4 images hold a labeled unique bodypart and no labeled mouse keypoint
    lab = labels[labels["x"].notna()]
    mouse = set(lab.loc[lab["individual"] == "mouse1", "image"])
    only_unique = set(lab.loc[lab["individual"] == "single", "image"]) - mouse
    assert len(only_unique) == 4
    _, r = _validate(labels, project)
    assert _failed(r) == [], r.loc[_failed(r), "observed"].to_dict()
    assert r.loc["animals_per_frame", "success"] == True  # noqa: E712
    # an image with nothing labeled at all still fails, and the message names the param and
    # the value that passes; that value does pass
    labels.loc[labels["image"] == sorted(only_unique)[0], ["x", "y"]] = np.nan
    res, r = _validate(labels, project)
    assert _failed(r) == ["animals_per_frame"]
    assert "min n_animals 0 < 1; passes with validate.min_animals_per_frame: 0" in res.message()
    _, r = _validate(labels, project, min_animals_per_frame=0)
    assert _failed(r) == []


def _nan_openfield(shares: dict[str, float]) -> pd.DataFrame:
    """openfield labels with the first ``share`` of each named bodypart's rows unlabeled."""
    long = _with_metadata(openfield_long())
    for bp, share in shares.items():
        rows = long.index[long["bodypart"] == bp]
        long.loc[rows[: round(share * len(rows))], ["x", "y"]] = np.nan
    long["labeled"] = long["x"].notna()
    return long


def test_nan_share_message_lists_the_worst_bodyparts_first_and_the_passing_value() -> None:
    labels = _nan_openfield({"snout": 0.3, "leftear": 0.45, "rightear": 1.0})
    share = labels.groupby("bodypart")["x"].apply(lambda s: s.isna().mean())
    worst = share[share > 0.25].sort_values(ascending=False)  # independent: pandas
    res, r = _validate(labels)
    assert _failed(r) == ["nan_share_per_bodypart"]
    ex = r.loc["nan_share_per_bodypart", "examples"]
    assert [e["bodypart"] for e in ex] == list(worst.index) == ["rightear", "leftear", "snout"]
    assert [e["nan_share"] for e in ex] == pytest.approx(list(worst))
    msg = res.message()
    assert "max nan_share 1 > 0.25; passes with validate.max_nan_share: 1" in msg
    _, r = _validate(labels, max_nan_share=1)
    assert _failed(r) == []


def test_max_nan_share_per_bodypart_mapping_and_its_suggestion_passes() -> None:
    import re

    import yaml

    labels = _nan_openfield({"snout": 0.3, "leftear": 0.45, "rightear": 1.0})
    _, r = _validate(labels, max_nan_share={"default": 0.25, "rightear": 1.0, "leftear": 0.5,
                                            "snout": 0.31})  # 35 of 116 rows: 0.302
    assert _failed(r) == []
    res, r = _validate(labels, max_nan_share={"default": 0.25, "rightear": 1.0})
    assert _failed(r) == ["nan_share_per_bodypart"]
    assert [e["bodypart"] for e in r.loc["nan_share_per_bodypart", "examples"]] == [
        "leftear", "snout"]
    msg = res.message()
    fix = re.search(r"passes with validate\.max_nan_share: (\{[^}]*\})", msg)
    assert fix, msg
    suggested = yaml.safe_load(fix.group(1))
    assert suggested["default"] == 0.25 and suggested["rightear"] == 1.0
    share = labels.groupby("bodypart")["x"].apply(lambda s: s.isna().mean())  # independent
    for bp in ("leftear", "snout"):
        assert share[bp] <= suggested[bp] < share[bp] + 1e-3, bp
    _, r = _validate(labels, max_nan_share=suggested)  # the pasted line passes
    assert _failed(r) == []


def test_max_nan_share_mapping_with_an_unknown_key_is_one_line() -> None:
    from poseops.core.errors import PoseopsError

    labels = _nan_openfield({"snout": 0.3})
    with pytest.raises(PoseopsError, match=r"validate.max_nan_share: key\(s\) \['Snoot'\]"):
        _validate(labels, max_nan_share={"default": 0.25, "Snoot": 1.0})


def test_multianimal_nan_share_per_individual_key(tmp_path) -> None:
    """maDLC: one individual rarely has its ears labeled; a key per individual lets it pass and
    the message suggests that key."""
    import yaml

    project, labels = multianimal_openfield(tmp_path, unique_only=[])
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["individuals"] = ["mouse1", "pup7"]
    (project / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    pup = labels[labels["individual"] == "mouse1"].assign(individual="pup7")
    pup.loc[pup["bodypart"].isin(["leftear", "rightear", "tailbase"]), ["x", "y"]] = np.nan
    labels = pd.concat([labels, pup], ignore_index=True)
    labels["labeled"] = labels["x"].notna()
    res, r = _validate(labels, project)
    assert _failed(r) == ["nan_share_per_individual_bodypart"]
    ex = r.loc["nan_share_per_individual_bodypart", "examples"]
    assert {(e["individual"], e["bodypart"]) for e in ex} == {
        ("pup7", "leftear"), ("pup7", "rightear"), ("pup7", "tailbase")}
    assert "max nan_share 1 > 0.25; passes with validate.max_nan_share: 1" in res.message()
    _, r = _validate(labels, project, max_nan_share={"default": 0.25, "pup7": 1.0})
    assert _failed(r) == []


def test_params_accept_a_max_nan_share_mapping(tmp_path) -> None:
    from poseops.config.pipeline import PipelineParams
    from poseops.core.errors import PoseopsError

    p = tmp_path / "params.yaml"
    p.write_text("validate:\n  max_nan_share: {default: 0.25, Tongue: 0.8, pup7: 1.0}\n")
    assert PipelineParams.load(p).validate.max_nan_share == {"default": 0.25, "Tongue": 0.8,
                                                             "pup7": 1.0}
    p.write_text("validate:\n  max_nan_share: {default: 0.25, Tongue: lots}\n")
    with pytest.raises(PoseopsError, match="max_nan_share"):
        PipelineParams.load(p).validate  # noqa: B018


def test_init_prints_the_max_nan_share_line_that_passes(tmp_path) -> None:
    """openfield with its ears mostly unlabeled: init names them and the params.yaml line; that
    line, pasted, lets validation pass on the ingested labels."""
    import re

    import yaml
    from support.e2e import dlc_variant

    from poseops.commands.init import nan_share_advice
    from poseops.data.ingest import ingest_project

    project = dlc_variant(tmp_path / "of", {"m4s1": (slice(0, 116), 0.25)})
    h5 = project / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    wide = dlcio.read_collected_data(h5)
    wide.iloc[:70, 2:4] = np.nan  # leftear: 70 of 116
    wide.iloc[:40, 4:6] = np.nan  # rightear: 40 of 116
    dlcio.write_collected_data(wide, h5)
    (advice,) = nan_share_advice(project, "dlc", 0.25)
    assert "leftear 0.60, rightear 0.34" in advice  # worst first; 70/116, 40/116
    line = re.search(r"max_nan_share: (\{.*\})$", advice).group(1)
    pasted = yaml.safe_load(line)
    assert pasted["default"] == 0.25 and set(pasted) == {"default", "leftear", "rightear"}
    labels = _with_metadata(ingest_project(project, None, "dlc").drop(columns=["animal"]))
    _, r = _validate(labels, max_nan_share=0.25)
    assert _failed(r) == ["nan_share_per_bodypart"]
    _, r = _validate(labels, max_nan_share=pasted)
    assert _failed(r) == []
    assert nan_share_advice(project, "dlc", pasted) == []


# --------------------------------------------------------------------------- Lightning Pose
def test_flat_lightning_pose_layout_metadata_key_and_bodypart_order(tmp_path) -> None:
    """Images directly in labeled-data/: init's metadata template gets the key ingest gives
    them (the folder name); training's config keeps the CSV header's bodypart order even when
    the labels table reaches it sorted (consensus sorts by bodypart)."""
    from support.e2e import lightning_pose_variant

    from poseops.commands.init import labeled_videos
    from poseops.data.ingest import ingest_project
    from poseops.train.project import source_config

    project = lightning_pose_variant(tmp_path / "lp-flat", scale=0.25, flat=True)
    labels = ingest_project(project, None, "lightning-pose")
    assert set(labels["video"]) == set(labeled_videos(project)) == {"lp-flat"}
    header = ["snout", "leftear", "rightear", "tailbase"]
    sorted_labels = labels.sort_values(["image", "bodypart"], kind="stable")
    assert list(dict.fromkeys(sorted_labels["bodypart"])) != header
    assert source_config(project, sorted_labels)["bodyparts"] == header
    assert dlcio.dlc_image_path("labeled-data/img0001.png", "lp-flat") == (
        "labeled-data/lp-flat/img0001.png")
    assert dlcio.dlc_image_path("labeled-data/m4s1/img0001.png", "x") == (
        "labeled-data/m4s1/img0001.png")
