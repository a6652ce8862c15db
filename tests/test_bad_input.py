"""Bad input to `poseops ingest`: exit 2, one line naming the culprit, and no output written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from poseops.cli import main

H5 = Path("labeled-data/m4s1/CollectedData_Pranav.h5")
CSV = H5.with_suffix(".csv")


def _run(project: Path, tmp_path: Path, capsys, metadata: Path | None = None) -> str:
    out = tmp_path / "out" / "labels.parquet"
    argv = ["ingest", "--project", str(project), "--out", str(out)]
    if metadata is not None:
        argv += ["--metadata", str(metadata)]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no half-written temp file
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poseops ingest: error: "), err
    return lines[0]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: only the CLI arguments count


def _csv_only(project: Path) -> Path:
    (project / H5).unlink()
    return project / CSV


def _edit_csv_line(path: Path, line: int, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = ",".join(edit(lines[line - 1].split(",")))
    path.write_text("\n".join(lines) + "\n")


def test_truncated_h5(openfield: Path, tmp_path: Path, capsys):
    data = (openfield / H5).read_bytes()
    (openfield / H5).write_bytes(data[: len(data) // 2])
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "truncated or corrupt" in msg


def test_corrupt_h5_not_hdf5(openfield: Path, tmp_path: Path, capsys):
    (openfield / H5).write_bytes(b"\x00garbage" * 100)
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "HDF5" in msg


def test_truncated_csv(openfield: Path, tmp_path: Path, capsys):
    csv = _csv_only(openfield)
    text = csv.read_text()
    cut = text.index("labeled-data/m4s1/img0010.png") + 40  # mid-row
    csv.write_text(text[:cut])
    msg = _run(openfield, tmp_path, capsys)
    assert str(csv) in msg and "row 14" in msg and "truncated" in msg


def test_wrong_header_levels_csv(openfield: Path, tmp_path: Path, capsys):
    csv = _csv_only(openfield)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], lines[2], *lines[3:]]) + "\n")  # no bodyparts row
    msg = _run(openfield, tmp_path, capsys)
    assert str(csv) in msg and "wrong header levels" in msg


def test_wrong_header_levels_h5(openfield: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(openfield / H5)
    df.columns = df.columns.droplevel("scorer")
    df.to_hdf(openfield / H5, key="df_with_missing", mode="w")
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "wrong header levels" in msg


def test_bodypart_absent_from_config(openfield: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(openfield / H5)
    df = df.rename(columns={"leftear": "left_ear"}, level="bodyparts")
    df.to_hdf(openfield / H5, key="df_with_missing", mode="w")
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "bodypart 'left_ear'" in msg and "config.yaml" in msg


def test_missing_image(openfield: Path, tmp_path: Path, capsys):
    (openfield / "labeled-data" / "m4s1" / "img0005.png").unlink()
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "labeled-data/m4s1/img0005.png" in msg
    assert "row 6" in msg and "missing" in msg


def test_non_numeric_coordinate_csv(openfield: Path, tmp_path: Path, capsys):
    csv = _csv_only(openfield)
    # line 9 = image img0005; field 6 = rightear x
    _edit_csv_line(csv, 9, lambda f: f[:5] + ["twelve"] + f[6:])
    msg = _run(openfield, tmp_path, capsys)
    assert str(csv) in msg and "row 9" in msg and "bodypart 'rightear'" in msg
    assert "'twelve'" in msg


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # object column in h5
def test_non_numeric_coordinate_h5(openfield: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(openfield / H5).astype(object)
    df.iloc[7, 6] = "n/a"  # img0007, tailbase x
    df.to_hdf(openfield / H5, key="df_with_missing", mode="w")
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "labeled-data/m4s1/img0007.png" in msg
    assert "bodypart 'tailbase'" in msg and "non-numeric" in msg


def test_duplicate_rows(openfield: Path, tmp_path: Path, capsys):
    df = pd.read_hdf(openfield / H5)
    df = pd.concat([df, df.iloc[[3]]])
    df.to_hdf(openfield / H5, key="df_with_missing", mode="w")
    msg = _run(openfield, tmp_path, capsys)
    assert str(openfield / H5) in msg and "duplicate" in msg and "img0003.png" in msg


def test_duplicate_rows_csv(openfield: Path, tmp_path: Path, capsys):
    csv = _csv_only(openfield)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[5]]) + "\n")
    msg = _run(openfield, tmp_path, capsys)
    assert str(csv) in msg and "duplicate" in msg and "row 6" in msg


@pytest.mark.parametrize("column", ["video", "animal", "session", "condition", "dose", "camera"])
def test_metadata_missing_column(demo_copy: Path, tmp_path: Path, capsys, column: str):
    meta = pd.read_csv(tmp_path / "metadata" / "videos.csv").drop(columns=[column])
    path = tmp_path / "bad_meta.csv"
    meta.to_csv(path, index=False)
    msg = _run(demo_copy, tmp_path, capsys, metadata=path)
    assert str(path) in msg and f"'{column}'" in msg and "missing column" in msg


def test_metadata_duplicate_video(demo_copy: Path, tmp_path: Path, capsys):
    meta = pd.read_csv(tmp_path / "metadata" / "videos.csv")
    meta = pd.concat([meta, meta.iloc[[2]]], ignore_index=True)
    path = tmp_path / "dup_meta.csv"
    meta.to_csv(path, index=False)
    msg = _run(demo_copy, tmp_path, capsys, metadata=path)
    # data row index len(meta)-1 -> line len(meta)+1 (after the header line)
    assert str(path) in msg and f"row {len(meta) + 1}" in msg and "m1-s3" in msg


def test_empty_project(openfield: Path, tmp_path: Path, capsys):
    for f in (openfield / "labeled-data" / "m4s1").glob("CollectedData_*"):
        f.unlink()
    msg = _run(openfield, tmp_path, capsys)
    assert "empty project" in msg and str(openfield / "labeled-data") in msg


def test_not_a_project(tmp_path: Path, capsys):
    (tmp_path / "proj").mkdir()
    msg = _run(tmp_path / "proj", tmp_path, capsys)
    assert "config.yaml not found" in msg and str(tmp_path / "proj" / "config.yaml") in msg


def test_multianimal_project_refused(openfield: Path, tmp_path: Path, capsys):
    cfg = openfield / "config.yaml"
    cfg.write_text(cfg.read_text().replace("multianimalproject: null", "multianimalproject: true"))
    msg = _run(openfield, tmp_path, capsys)
    assert "multi-animal" in msg and str(cfg) in msg


def test_previous_output_kept_when_input_turns_bad(openfield: Path, tmp_path: Path, capsys):
    out = tmp_path / "labels.parquet"
    assert main(["ingest", "--project", str(openfield), "--out", str(out)]) == 0
    before = out.read_bytes()
    (openfield / H5).write_bytes(b"broken")
    assert main(["ingest", "--project", str(openfield), "--out", str(out)]) == 2
    assert out.read_bytes() == before
