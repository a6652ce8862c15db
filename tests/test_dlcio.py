"""DLC file formats: read, convert and write back so that DeepLabCut's own reader sees the same."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.ingest import ingest_project
from poseops.dlc import files as dlcio

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def _h5(project: Path) -> Path:
    return project / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"


def test_openfield_roundtrip_identical_for_pandas_and_deeplabcut(openfield: Path, tmp_path: Path):
    original = pd.read_hdf(_h5(openfield))
    labels = ingest_project(openfield, None)
    assert len(labels) == 116 * 4  # 116 frames x 4 bodyparts, as PROVENANCE.md states

    # Back to DLC's flat-index layout (as this project stores it): identical frame.
    wide = dlcio.labels_to_wide(labels, "Pranav", BODYPARTS, index="flat")
    out_h5 = tmp_path / "CollectedData_Pranav.h5"
    dlcio.write_collected_data(wide, out_h5)
    pd.testing.assert_frame_equal(pd.read_hdf(out_h5, key="df_with_missing"), original)
    from_csv = pd.read_csv(
        out_h5.with_suffix(".csv"), header=[0, 1, 2], index_col=0, float_precision="round_trip"
    )
    pd.testing.assert_frame_equal(from_csv, original, check_names=False)

    # DeepLabCut's own loader: write the labels into the project and merge as
    # create_training_dataset does; compare with the merge of the untouched original.
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(str(openfield / "config.yaml"))
    cfg["video_sets"] = {str(openfield / "videos" / "m4s1.mp4"): {"crop": "0, 640, 0, 480"}}
    (openfield / "ts").mkdir()
    merged_orig = merge_annotateddatasets(cfg, openfield / "ts")
    for style in ("flat", "multi"):
        w = dlcio.labels_to_wide(labels, "Pranav", BODYPARTS, index=style)
        dlcio.write_collected_data(w, _h5(openfield))
        merged = merge_annotateddatasets(cfg, openfield / "ts")
        pd.testing.assert_frame_equal(merged, merged_orig)
        assert merged.shape == (116, 8)


def test_read_csv_equals_h5_and_dlc_multiindex_layout(openfield: Path, tmp_path: Path):
    from_h5 = dlcio.read_collected_data(_h5(openfield))
    from_csv = dlcio.read_collected_data(_h5(openfield).with_suffix(".csv"))
    pd.testing.assert_frame_equal(from_csv, from_h5)
    # DLC >= 2.2 layout: row index ("labeled-data", video, image), as convertcsv2h5 writes it.
    from deeplabcut.utils.conversioncode import guarantee_multiindex_rows

    multi = from_h5.copy()
    guarantee_multiindex_rows(multi)
    p = tmp_path / "CollectedData_Pranav.h5"
    multi.to_hdf(p, key="df_with_missing", mode="w")
    multi.to_csv(p.with_suffix(".csv"))
    for f in (p, p.with_suffix(".csv")):
        got = dlcio.read_collected_data(f)
        assert isinstance(got.index, pd.MultiIndex) and got.index.nlevels == 3
        pd.testing.assert_frame_equal(got, multi, check_index_type=False)
        assert dlcio.image_paths(got) == list(from_h5.index)


def test_wide_long_conversion_against_hand_values():
    cols = pd.MultiIndex.from_product([["ann"], ["nose", "tail"], ["x", "y"]],
                                      names=dlcio.HEADER_LEVELS)
    idx = pd.MultiIndex.from_tuples([("labeled-data", "v1", "img007.png"),
                                     ("labeled-data", "v2", "img120.png")])
    wide = pd.DataFrame([[1.0, 2.0, np.nan, np.nan], [3.5, 4.5, 5.0, 6.0]], index=idx, columns=cols)
    long = dlcio.wide_to_long(wide)
    assert list(long[S.IMAGE]) == ["labeled-data/v1/img007.png"] * 2 + ["labeled-data/v2/img120.png"] * 2
    assert list(long[S.VIDEO]) == ["v1", "v1", "v2", "v2"]
    assert list(long[S.FRAME]) == [7, 7, 120, 120]
    assert list(long[S.BODYPART]) == ["nose", "tail", "nose", "tail"]
    assert list(long[S.LABELED]) == [True, False, True, True]
    assert long.loc[3, S.X] == 5.0 and long.loc[3, S.Y] == 6.0
    back = dlcio.labels_to_wide(long, "ann", ["nose", "tail"])
    pd.testing.assert_frame_equal(back, wide)
    # config order wins; a bodypart missing from the table becomes NaN columns
    three = dlcio.labels_to_wide(long, "ann", ["tail", "ear", "nose"])
    assert list(three.columns.get_level_values("bodyparts")[::2]) == ["tail", "ear", "nose"]
    assert three.xs("ear", axis=1, level="bodyparts").isna().all().all()


def test_lightning_pose_csv(tmp_path: Path):
    """Lightning Pose: CSV at the project root, images in labeled-data/ with no video folder."""
    proj = tmp_path / "lp-project"
    (proj / "labeled-data").mkdir(parents=True)
    sizes = {"img03.png": (64, 48), "img11.png": (80, 60)}
    for name, (w, h) in sizes.items():
        _write_png(proj / "labeled-data" / name, w, h)
    (proj / "CollectedData.csv").write_text(
        "scorer,rick,rick,rick,rick\n"
        "bodyparts,paw,paw,nose,nose\n"
        "coords,x,y,x,y\n"
        "labeled-data/img03.png,10.5,20.25,,\n"
        "labeled-data/img11.png,1,2,3,4\n"
    )
    labels = ingest_project(proj, None, fmt="lightning-pose")
    assert len(labels) == 4
    assert set(labels[S.VIDEO]) == {"lp-project"}  # documented: project folder name
    assert list(labels[S.FRAME].unique()) == [3, 11]
    assert list(labels[S.BODYPART][:2]) == ["paw", "nose"]  # header order
    assert labels[S.LABELED].sum() == 3
    row = labels[(labels[S.IMAGE] == "labeled-data/img11.png") & (labels[S.BODYPART] == "nose")]
    assert (row[S.X].item(), row[S.Y].item(), row[S.WIDTH].item(), row[S.HEIGHT].item()) == (3, 4, 80, 60)


def test_image_size_reads_header_only(tmp_path: Path):
    from PIL import Image

    p = tmp_path / "a.png"
    _write_png(p, 37, 19)
    assert dlcio.image_size(p) == (37, 19) == Image.open(p).size
    j = tmp_path / "b.jpg"
    Image.new("RGB", (21, 13)).save(j)
    assert dlcio.image_size(j) == (21, 13)
    bad = tmp_path / "c.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(PoseopsError, match="c.png"):
        dlcio.image_size(bad)


def test_read_config_rejects_multianimal_and_missing(tmp_path: Path, openfield: Path):
    cfg = dlcio.read_config(openfield)
    assert cfg["scorer"] == "Pranav" and cfg["bodyparts"] == BODYPARTS
    with pytest.raises(PoseopsError, match="config.yaml not found"):
        dlcio.read_config(tmp_path)
    text = (openfield / "config.yaml").read_text().replace("multianimalproject:", "multianimalproject: true")
    (openfield / "config.yaml").write_text(text)
    with pytest.raises(PoseopsError, match="multi-animal"):
        dlcio.read_config(openfield)


def test_dlc_frame_name_matches_deeplabcut_rule():
    # frame_extraction.py: "img" + str(index).zfill(ceil(log10(nframes)))
    assert dlcio.dlc_frame_name(42, 90) == "img42.png"
    assert dlcio.dlc_frame_name(7, 2330) == "img0007.png"
    assert dlcio.dlc_frame_name(5, 1000) == "img005.png"


def _write_png(path: Path, w: int, h: int) -> None:
    """A minimal valid grey PNG written by hand (independent of the code under test)."""
    raw = b"".join(b"\x00" + bytes([128]) * w for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)
