"""Multi-animal DLC projects (maDLC): config, 4-level CollectedData, ingest, and written back so
that DeepLabCut's own readers see exactly the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops.cli import main
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.ingest import ingest_project
from poseops.dlc import files as dlcio

SCORER = "Ann"
ANIMALS = ["mouse1", "mouse2", "mouse3"]
MULTI_BPS = ["snout", "tail"]
UNIQUE_BPS = ["led"]
VIDEOS = {"v1": 3, "v2": 2}  # video -> labeled frames
W, H = 64, 48


def _keypoints() -> list[tuple[str, str]]:
    """(individual, bodypart) in the order DLC's labeling tools write them."""
    return [(a, b) for a in ANIMALS for b in MULTI_BPS] + [(S.SINGLE, b) for b in UNIQUE_BPS]


def _truth(seed: int = 0) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(image, individual, bodypart) -> (x, y); about a quarter unlabeled (NaN), all inside the
    image (DLC's COCO conversion drops points on or outside the border)."""
    rng = np.random.default_rng(seed)
    out = {}
    for video, n in VIDEOS.items():
        for f in range(n):
            image = f"labeled-data/{video}/img{f:03d}.png"
            for ind, bp in _keypoints():
                if rng.random() < 0.25:
                    out[(image, ind, bp)] = (np.nan, np.nan)
                else:
                    xy = rng.uniform(1, [W - 1, H - 1]).round(2)
                    out[(image, ind, bp)] = (float(xy[0]), float(xy[1]))
    return out


def _csv_text(truth: dict, video: str) -> str:
    """A CollectedData CSV in DLC >= 2.2's multi-animal layout, written by hand: 4 header rows
    (scorer / individuals / bodyparts / coords) and a 3-column row index."""
    kps = _keypoints()
    lines = [
        ",".join(["scorer", "", "", *[SCORER] * 2 * len(kps)]),
        ",".join(["individuals", "", "", *[i for i, _ in kps for _ in "xy"]]),
        ",".join(["bodyparts", "", "", *[b for _, b in kps for _ in "xy"]]),
        ",".join(["coords", "", "", *["x", "y"] * len(kps)]),
    ]
    for image in sorted({k[0] for k in truth if k[0].split("/")[1] == video}):
        vals = []
        for ind, bp in kps:
            x, y = truth[(image, ind, bp)]
            vals += ["" if np.isnan(x) else repr(x), "" if np.isnan(y) else repr(y)]
        lines.append(",".join([*image.split("/"), *vals]))
    return "\n".join(lines) + "\n"


def _write_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (W, H), (90, 90, 90)).save(path)


def _config(project: Path) -> dict:
    return {
        "Task": "ma", "scorer": SCORER, "date": "Jan1", "multianimalproject": True,
        "identity": False, "project_path": str(project), "engine": "pytorch",
        "video_sets": {str(project / "videos" / f"{v}.mp4"): {"crop": f"0, {W}, 0, {H}"}
                       for v in VIDEOS},
        "bodyparts": "MULTI!", "individuals": list(ANIMALS),
        "multianimalbodyparts": list(MULTI_BPS), "uniquebodyparts": list(UNIQUE_BPS),
        "skeleton": [], "start": 0, "stop": 1, "numframes2pick": 20, "pcutoff": 0.6,
        "dotsize": 8, "alphavalue": 0.7, "colormap": "rainbow", "TrainingFraction": [0.95],
        "iteration": 0, "default_net_type": "dekr_w18", "default_augmenter": "albumentations",
        "snapshotindex": -1, "batch_size": 1, "cropping": False, "x1": 0, "x2": W, "y1": 0,
        "y2": H, "corner2move2": [50, 50], "move2corner": True, "skeleton_color": "black",
    }


@pytest.fixture
def ma_project(tmp_path: Path) -> Path:
    """A small multi-animal DLC project whose .h5 label files DeepLabCut itself wrote
    (``convertcsv2h5`` from hand-written CSVs)."""
    project = tmp_path / "ma-Ann-2025-01-01"
    (project / "videos").mkdir(parents=True)
    truth = _truth()
    for video, n in VIDEOS.items():
        folder = project / "labeled-data" / video
        folder.mkdir(parents=True)
        for f in range(n):
            _write_png(folder / f"img{f:03d}.png")
        (folder / f"CollectedData_{SCORER}.csv").write_text(_csv_text(truth, video))
    (project / "config.yaml").write_text(yaml.safe_dump(_config(project), sort_keys=False))
    from deeplabcut.utils.conversioncode import convertcsv2h5

    convertcsv2h5(str(project / "config.yaml"), userfeedback=False)
    return project


def _h5(project: Path, video: str = "v1") -> Path:
    return project / "labeled-data" / video / f"CollectedData_{SCORER}.h5"


# --------------------------------------------------------------------------- config
def test_multianimal_config_read_with_dlc_keys(ma_project: Path):
    cfg = dlcio.read_config(ma_project)
    assert dlcio.is_multianimal(cfg)
    assert dlcio.config_individuals(cfg) == ANIMALS
    assert dlcio.config_bodyparts(cfg) == MULTI_BPS + UNIQUE_BPS
    assert dlcio.config_unique_bodyparts(cfg) == UNIQUE_BPS
    assert cfg["bodyparts"] == "MULTI!"  # DLC's own keys kept, so the dict can be written back
    # the same lists as DeepLabCut's own helpers give
    from deeplabcut.utils import auxfun_multianimal, auxiliaryfunctions

    dlc_cfg = auxiliaryfunctions.read_config(str(ma_project / "config.yaml"))
    inds, uniq, multi = auxfun_multianimal.extractindividualsandbodyparts(dlc_cfg)
    assert [*dlcio.config_individuals(cfg), S.SINGLE] == inds
    assert dlcio.config_unique_bodyparts(cfg) == uniq
    assert dlcio.config_bodyparts(cfg) == multi + uniq


def test_single_animal_helpers(openfield: Path):
    cfg = dlcio.read_config(openfield)
    assert not dlcio.is_multianimal(cfg)
    assert dlcio.config_bodyparts(cfg) == cfg["bodyparts"]
    assert dlcio.config_individuals(cfg) == [] and dlcio.config_unique_bodyparts(cfg) == []


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("individuals"), "'individuals' must be a non-empty list"),
        (lambda c: c.update(individuals=["mouse1", "single"]), "must not list 'single'"),
        (lambda c: c.update(individuals=["a", "a"]), "'individuals' has duplicates"),
        (lambda c: c.update(multianimalbodyparts=[]), "'multianimalbodyparts' must be"),
        (lambda c: c.update(uniquebodyparts=["snout"]), "in both"),
    ],
)
def test_bad_multianimal_config(tmp_path: Path, edit, match):
    cfg = _config(tmp_path)
    edit(cfg)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(PoseopsError, match=match) as e:
        dlcio.read_config(tmp_path)
    assert str(tmp_path / "config.yaml") in str(e.value) and "multi-animal" in str(e.value)


def test_uniquebodyparts_may_be_empty_or_null(tmp_path: Path):
    cfg = _config(tmp_path)
    cfg["uniquebodyparts"] = None
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    got = dlcio.read_config(tmp_path)
    assert dlcio.config_unique_bodyparts(got) == [] and dlcio.config_bodyparts(got) == MULTI_BPS


# --------------------------------------------------------------------------- reading
def test_dlc_written_files_ingest_to_truth(ma_project: Path):
    truth = _truth()
    labels = ingest_project(ma_project, None)
    assert list(labels.columns[:11]) == [
        S.IMAGE, S.VIDEO, S.FRAME, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y, S.LABELED,
        S.WIDTH, S.HEIGHT,
    ]
    assert len(labels) == len(truth)
    assert not labels.duplicated([S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART]).any()
    for r in labels.itertuples(index=False):
        x, y = truth[(r.image, r.individual, r.bodypart)]
        np.testing.assert_equal([r.x, r.y], [x, y])
        assert r.labeled == (not np.isnan(x))
        assert (r.width, r.height) == (W, H) and r.video == r.image.split("/")[1]
    assert labels.loc[labels[S.INDIVIDUAL] == S.SINGLE, S.BODYPART].unique().tolist() == UNIQUE_BPS
    # the .csv twin (DLC's own to_csv) reads to the same table
    for video in VIDEOS:
        _h5(ma_project, video).unlink()
    pd.testing.assert_frame_equal(ingest_project(ma_project, None), labels)


def test_csv_and_h5_read_alike_in_both_index_styles(ma_project: Path, tmp_path: Path):
    from_h5 = dlcio.read_collected_data(_h5(ma_project))
    assert list(from_h5.columns.names) == dlcio.MA_HEADER_LEVELS
    pd.testing.assert_frame_equal(dlcio.read_collected_data(_h5(ma_project).with_suffix(".csv")), from_h5)
    flat = from_h5.copy()
    flat.index = pd.Index(dlcio.image_paths(from_h5), dtype=object)  # DLC 2.0's flat index
    p = tmp_path / f"CollectedData_{SCORER}.h5"
    flat.to_hdf(p, key="df_with_missing", mode="w")
    flat.to_csv(p.with_suffix(".csv"))
    for f in (p, p.with_suffix(".csv")):
        pd.testing.assert_frame_equal(dlcio.read_collected_data(f), flat)


# --------------------------------------------------------------------------- writing
def test_written_back_identical_for_deeplabcut(ma_project: Path, tmp_path: Path):
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.pose_estimation_pytorch.data.dataset import PoseDatasetParameters
    from deeplabcut.pose_estimation_pytorch.data.dlcloader import (
        DLCLoader,
        build_dlc_dataframe_columns,
    )
    from deeplabcut.utils import auxiliaryfunctions

    cfg = dlcio.read_config(ma_project)
    labels = ingest_project(ma_project, None)
    dlc_cfg = auxiliaryfunctions.read_config(str(ma_project / "config.yaml"))
    (ma_project / "ts").mkdir()
    merged_orig = merge_annotateddatasets(dlc_cfg, ma_project / "ts")
    originals = {v: pd.read_hdf(_h5(ma_project, v)) for v in VIDEOS}
    csv_orig = {v: _h5(ma_project, v).with_suffix(".csv").read_bytes() for v in VIDEOS}
    params = PoseDatasetParameters(bodyparts=MULTI_BPS, unique_bpts=UNIQUE_BPS, individuals=ANIMALS)
    for video in VIDEOS:
        wide = dlcio.labels_to_wide(
            labels[labels[S.VIDEO] == video], SCORER, dlcio.config_bodyparts(cfg),
            individuals=dlcio.config_individuals(cfg),
            unique_bodyparts=dlcio.config_unique_bodyparts(cfg),
        )
        # DLC's column order (the one its own dataframes are built with)
        assert wide.columns.equals(build_dlc_dataframe_columns(SCORER, params, False))
        dlcio.write_collected_data(wide, _h5(ma_project, video))
        pd.testing.assert_frame_equal(pd.read_hdf(_h5(ma_project, video)), originals[video])
        # the CSV is byte for byte the one DLC's convertcsv2h5 wrote
        assert _h5(ma_project, video).with_suffix(".csv").read_bytes() == csv_orig[video]
        # read as DLC's convertcsv2h5 reads a multi-animal CSV
        from_csv = pd.read_csv(
            _h5(ma_project, video).with_suffix(".csv"), header=[0, 1, 2, 3], index_col=[0, 1, 2]
        )
        pd.testing.assert_frame_equal(from_csv, originals[video], check_names=False)
    merged = merge_annotateddatasets(dlc_cfg, ma_project / "ts")
    pd.testing.assert_frame_equal(merged, merged_orig)
    # DLC's training-set conversion (frame -> COCO annotations) sees the truth per individual
    coco = DLCLoader.to_coco(str(ma_project), merged, params)
    truth = _truth()
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    seen = set()
    for ann in coco["annotations"]:
        image = Path(files[ann["image_id"]]).relative_to(ma_project).as_posix()
        bps = MULTI_BPS if ann["individual"] != S.SINGLE else UNIQUE_BPS
        for bp, (x, y, vis) in zip(bps, ann["keypoints"], strict=True):
            tx, ty = truth[(image, ann["individual"], bp)]
            if vis > 0:
                assert (x, y) == pytest.approx((tx, ty))
                seen.add((image, ann["individual"], bp))
            else:
                assert np.isnan(tx)
    assert seen == {k for k, v in truth.items() if not np.isnan(v[0])}


def test_long_wide_long_roundtrip_and_defaults(ma_project: Path):
    labels = ingest_project(ma_project, None)
    cols = [S.IMAGE, S.VIDEO, S.FRAME, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y, S.LABELED]
    for style in ("multi", "flat"):
        wide = dlcio.labels_to_wide(labels, index=style)  # defaults from the table itself
        assert [(c[1], c[2]) for c in wide.columns[::2]] == _keypoints()
        back = dlcio.wide_to_long(wide)
        pd.testing.assert_frame_equal(back, labels[cols].reset_index(drop=True))
    # an individual absent from the table still gets its (NaN) columns, as DLC keeps them
    part = labels[labels[S.INDIVIDUAL] != "mouse2"]
    wide = dlcio.labels_to_wide(part, individuals=ANIMALS, unique_bodyparts=UNIQUE_BPS)
    assert wide.xs("mouse2", axis=1, level="individuals").isna().all().all()
    assert wide.shape[1] == 2 * len(_keypoints())
    with pytest.raises(PoseopsError, match=r"individuals \['mouse3'\] not in"):
        dlcio.labels_to_wide(labels, individuals=["mouse1", "mouse2"])


# --------------------------------------------------------------------------- bad input
def _ingest_error(project: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "out" / "labels.parquet"
    rc = main(["ingest", "--project", str(project), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _rename_in_h5(project: Path, level: str, old: str, new: str) -> None:
    df = pd.read_hdf(_h5(project))
    df = df.rename(columns={old: new}, level=level)
    df.to_hdf(_h5(project), key="df_with_missing", mode="w")


def _first_labeled_image(project: Path, individual: str, bodypart: str) -> str:
    df = pd.read_hdf(_h5(project))
    col = df[(SCORER, individual, bodypart, "x")]
    return "/".join(col[col.notna()].index[0])


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: only the CLI arguments count


def test_individual_not_in_config_h5(ma_project: Path, tmp_path: Path, capsys):
    image = _first_labeled_image(ma_project, "mouse2", "snout")
    _rename_in_h5(ma_project, "individuals", "mouse2", "rat9")
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert str(_h5(ma_project)) in msg and f"row {image}" in msg
    assert "'rat9' is not in config.yaml individuals" in msg


def test_individual_not_in_config_csv_names_line(ma_project: Path, tmp_path: Path, capsys):
    csv = _h5(ma_project).with_suffix(".csv")
    _h5(ma_project).unlink()
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace("mouse3", "mouse7")
    csv.write_text("\n".join(lines) + "\n")
    # the first data line (header is 4 lines) with a mouse3 label
    cols = [i for i, c in enumerate(lines[1].split(",")) if c == "mouse7"]
    line = next(n for n, text in enumerate(lines[4:], start=5)
                if any(text.split(",")[i] for i in cols))
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert str(csv) in msg and f"row {line}," in msg and "'mouse7'" in msg


def test_unique_bodypart_under_an_animal(ma_project: Path, tmp_path: Path, capsys):
    image = _first_labeled_image(ma_project, "mouse1", "tail")
    _rename_in_h5(ma_project, "bodyparts", "tail", "led")  # mouse1..3 now carry 'led'
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert str(_h5(ma_project)) in msg and f"row {image}" in msg and "bodypart 'led'" in msg
    assert "unique bodypart under individual 'mouse1'" in msg


def test_multianimal_bodypart_under_single(ma_project: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(_h5(ma_project))
    df = df.rename(columns={"led": "snout"}, level="bodyparts")
    df.to_hdf(_h5(ma_project), key="df_with_missing", mode="w")
    image = "/".join(df[df[(SCORER, S.SINGLE, "snout", "x")].notna()].index[0])
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert f"row {image}" in msg and "bodypart 'snout'" in msg and "under individual 'single'" in msg


def test_three_level_header_in_multianimal_project(ma_project: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(_h5(ma_project))
    three = df.xs("mouse1", axis=1, level="individuals", drop_level=True)
    three.to_hdf(_h5(ma_project), key="df_with_missing", mode="w")
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert str(_h5(ma_project)) in msg and "row header" in msg and "3-level header" in msg
    # the CSV: line 2 should be 'individuals'
    _h5(ma_project).unlink()
    csv = _h5(ma_project).with_suffix(".csv")
    three.to_csv(csv)
    msg = _ingest_error(ma_project, tmp_path, capsys)
    assert str(csv) in msg and "row 2:" in msg and "multi-animal project" in msg


def test_four_level_header_in_single_animal_project(openfield: Path, ma_project: Path,
                                                     tmp_path: Path, capsys):
    h5 = openfield / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
    df = pd.read_hdf(h5)
    cols = [(c[0], "mouse1", c[1], c[2]) for c in df.columns]
    df.columns = pd.MultiIndex.from_tuples(cols, names=dlcio.MA_HEADER_LEVELS)
    df.to_hdf(h5, key="df_with_missing", mode="w")
    msg = _ingest_error(openfield, tmp_path, capsys)
    assert str(h5) in msg and "row header" in msg and "single-animal project" in msg


# --------------------------------------------------------------------------- init
def test_init_fits_params_to_a_multianimal_project(ma_project: Path):
    from poseops.commands.init import fitted_params

    rel = Path("data/raw/ma")
    current = {"train": {"net_type": "rtmpose_s"}, "evaluate": {"reference_bodyparts": None}}
    updates, notes = fitted_params(ma_project, rel, "dlc", current)
    assert updates["evaluate"]["reference_bodyparts"] == ["snout", "tail"]
    assert (updates["train"]["crop_width"], updates["train"]["crop_height"]) == (W, H)
    # rtmpose_s is top-down: poseops trains bottom-up nets on multi-animal projects
    assert updates["train"]["net_type"] == "cspnext_s"
    assert any("individuals ['mouse1', 'mouse2', 'mouse3']" in n for n in notes)
    # a bottom-up choice is kept
    updates, _ = fitted_params(ma_project, rel, "dlc", {"train": {"net_type": "dekr_w18"}})
    assert "net_type" not in updates.get("train", {})
    # a unique bodypart (a floor marker) never serves as the body-length reference
    cfg = yaml.safe_load((ma_project / "config.yaml").read_text())
    cfg["multianimalbodyparts"], cfg["uniquebodyparts"] = ["ear", "tail"], ["snout"]
    (ma_project / "config.yaml").write_text(yaml.safe_dump(cfg))
    updates, _ = fitted_params(ma_project, rel, "dlc", {"evaluate": {"reference_bodyparts": ["x"]}})
    assert updates["evaluate"]["reference_bodyparts"] is None


def test_cli_init_then_ingest_multianimal(ma_project: Path, tmp_path: Path, repo_root: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    import os
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for cmd in (["git", "init", "-q"], [str(Path(sys.executable).parent / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    shutil.copy(repo_root / "params.yaml", repo / "params.yaml")
    monkeypatch.chdir(repo)
    assert main(["init", str(ma_project), "--name", "ma"]) == 0
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["project"]["path"] == "data/raw/ma"
    assert params["evaluate"]["reference_bodyparts"] == ["snout", "tail"]
    meta = pd.read_csv(repo / params["project"]["metadata"], dtype=str, keep_default_na=False)
    assert sorted(meta[S.VIDEO]) == sorted(VIDEOS)
    labels = ingest_project(repo / "data" / "raw" / "ma", None)
    assert set(labels[S.INDIVIDUAL]) == {*ANIMALS, S.SINGLE} and len(labels) == len(_truth())
