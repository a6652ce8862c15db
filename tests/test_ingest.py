"""`poseops ingest`: every scorer, real image sizes, metadata joined, numbers as in the files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from poseops.cli import main
from poseops.core import schema as S
from poseops.data.ingest import ingest_project


def test_openfield_counts_sizes_values(openfield: Path):
    labels = ingest_project(openfield, None)
    original = pd.read_hdf(openfield / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5")
    assert len(labels) == original.shape[0] * 4 == 464
    assert list(labels.columns[: len(S.LABEL_COLUMNS)]) == S.LABEL_COLUMNS
    assert labels[S.LABELED].all()  # PROVENANCE.md: no NaN keypoints
    assert set(labels[S.WIDTH]) == {640} and set(labels[S.HEIGHT]) == {480}
    assert labels[S.FRAME].min() == 0 and labels[S.FRAME].is_monotonic_increasing
    # every value equals the file's value (looked up independently by pandas)
    for bp in ("snout", "tailbase"):
        got = labels[labels[S.BODYPART] == bp].set_index(S.IMAGE)
        np.testing.assert_array_equal(got[S.X], original["Pranav", bp, "x"].to_numpy())
        np.testing.assert_array_equal(got[S.Y], original["Pranav", bp, "y"].to_numpy())


def test_demo_every_scorer_nan_counts_and_metadata(demo_project: Path, demo_metadata: Path):
    labels = ingest_project(demo_project, demo_metadata)
    gt = pd.read_csv(demo_project / "ground_truth.csv")
    meta = pd.read_csv(demo_metadata)
    per_scorer = labels.groupby(S.SCORER)[S.IMAGE].nunique().to_dict()
    files = {s: sorted(demo_project.glob(f"labeled-data/*/CollectedData_{s}.h5")) for s in per_scorer}
    assert per_scorer == {s: sum(len(pd.read_hdf(f)) for f in fs) for s, fs in files.items()}
    assert per_scorer["alice"] == gt[S.IMAGE].nunique() == 120
    assert not labels.duplicated([S.IMAGE, S.SCORER, S.BODYPART]).any()
    # NaN = occluded: one NaN per occluded keypoint per scorer who labeled that frame
    occl = set(map(tuple, gt.loc[gt["occluded"], [S.IMAGE, S.BODYPART]].to_numpy()))
    unl = labels[~labels[S.LABELED]]
    assert set(map(tuple, unl[[S.IMAGE, S.BODYPART]].to_numpy())) == occl
    assert labels[S.X].isna().sum() == sum(
        labels[S.SCORER][labels[[S.IMAGE, S.BODYPART]].apply(tuple, axis=1).isin(occl)].notna()
    )
    # metadata joined per video, as in the CSV
    joined = labels.drop_duplicates(S.VIDEO).set_index(S.VIDEO)[S.METADATA_COLUMNS]
    expect = meta.set_index(S.VIDEO).loc[joined.index, S.METADATA_COLUMNS]
    pd.testing.assert_frame_equal(joined, expect, check_dtype=False)
    assert set(labels[S.WIDTH]) == {160} and set(labels[S.HEIGHT]) == {120}
    frame_of = labels[S.IMAGE].str.extract(r"img(\d+)\.png")[0].astype(int)
    assert (labels[S.FRAME] == frame_of).all()


def test_sizes_differ_between_videos(demo_copy: Path):
    """Images of one video rescaled: ingest reports each image's own size, from the file."""
    video = demo_copy / "labeled-data" / "m2-s2"
    for png in video.glob("*.png"):
        Image.open(png).resize((200, 150)).save(png)
    labels = ingest_project(demo_copy, None)
    sizes = labels.groupby(S.VIDEO)[[S.WIDTH, S.HEIGHT]].agg(set)
    assert sizes.loc["m2-s2", S.WIDTH] == {200} and sizes.loc["m2-s2", S.HEIGHT] == {150}
    assert sizes.drop("m2-s2")[S.WIDTH].map(lambda s: s == {160}).all()


def test_h5_preferred_csv_used_when_alone(openfield: Path):
    folder = openfield / "labeled-data" / "m4s1"
    csv = folder / "CollectedData_Pranav.csv"
    lines = csv.read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = "99.5"  # snout x of img0000 in the CSV only
    lines[3] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    first = (S.IMAGE, "labeled-data/m4s1/img0000.png")

    def snout_x(df: pd.DataFrame) -> float:
        return df[(df[first[0]] == first[1]) & (df[S.BODYPART] == "snout")][S.X].item()

    assert snout_x(ingest_project(openfield, None)) == 21.521  # from the .h5
    (folder / "CollectedData_Pranav.h5").unlink()
    assert snout_x(ingest_project(openfield, None)) == 99.5  # from the .csv


def test_no_metadata_warns_and_leaves_columns_empty(openfield: Path, caplog):
    with caplog.at_level(logging.WARNING):
        labels = ingest_project(openfield, openfield / "nope.csv")
    assert all(c in labels.columns for c in S.METADATA_COLUMNS)
    assert labels[S.METADATA_COLUMNS].isna().all().all()
    assert "no metadata file" in caplog.text


def test_unlisted_video_is_ingested_with_a_warning(demo_copy: Path, caplog):
    import yaml

    cfg_path = demo_copy / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["video_sets"] = {k: v for k, v in cfg["video_sets"].items() if "m3-s2" not in k}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with caplog.at_level(logging.WARNING):
        labels = ingest_project(demo_copy, None)
    assert "m3-s2" in set(labels[S.VIDEO])
    assert "not in config.yaml video_sets" in caplog.text and "m3-s2" in caplog.text


def test_extra_metadata_columns_kept(demo_copy: Path, tmp_path: Path):
    meta = pd.read_csv(tmp_path / "metadata" / "videos.csv")
    meta["weight_g"] = np.arange(len(meta)) + 20.0
    meta["cohort"] = "A"
    meta.to_csv(tmp_path / "meta2.csv", index=False)
    labels = ingest_project(demo_copy, tmp_path / "meta2.csv")
    assert list(labels.columns[-7:]) == [*S.METADATA_COLUMNS, "weight_g", "cohort"]
    m = meta.set_index(S.VIDEO)["weight_g"]
    assert (labels["weight_g"].to_numpy() == labels[S.VIDEO].map(m).to_numpy()).all()


def test_cli_writes_parquet(demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "interim" / "labels.parquet"
    meta = tmp_path / "metadata" / "videos.csv"
    rc = main(["ingest", "--project", str(demo_copy), "--metadata", str(meta), "--out", str(out)])
    assert rc == 0
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, ingest_project(demo_copy, meta))
    assert [p.name for p in out.parent.iterdir()] == ["labels.parquet"]  # no temp files left


def test_cli_reads_params_yaml(demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               repo_root: Path):
    """Without arguments, paths come from params.yaml (project.path, project.metadata, ingest.out)."""
    from poseops.config.loader import update_params

    monkeypatch.chdir(tmp_path)
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    update_params({"project": {"path": "demo", "metadata": "metadata/videos.csv"},
                   "ingest": {"out": "out/labels.parquet"}})
    assert main(["ingest"]) == 0
    got = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    assert got[S.CONDITION].notna().all() and got[S.SCORER].nunique() == 3
