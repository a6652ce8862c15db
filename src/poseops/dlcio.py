"""DeepLabCut file formats, read and written exactly as DeepLabCut does.

- ``config.yaml`` (single-animal projects only).
- ``labeled-data/<video>/CollectedData_<scorer>.h5`` (pandas HDF5, key ``df_with_missing``) and
  the ``.csv`` twin. The frame ("wide" layout) has a 3-level column index
  ``scorer / bodyparts / coords`` (coords ``x``, ``y``) and one row per image. The row index is
  either DLC 2.0's flat image path ``labeled-data/<video>/img0042.png`` or DLC >= 2.2's 3-level
  MultiIndex ``("labeled-data", <video>, "img0042.png")``; both are read.
- Lightning Pose's CSV (same 3-row header; index ``labeled-data/img03.png`` without a video
  sub-folder; no config.yaml).

The tidy labels table (``poseops.schema.LABEL_COLUMNS``) is the long form of these frames:
``wide_to_long`` and ``labels_to_wide`` convert between the two.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from poseops import schema as S
from poseops.errors import PoseopsError
from poseops.fileio import atomic_path

log = logging.getLogger(__name__)

HEADER_LEVELS = ["scorer", "bodyparts", "coords"]
H5_KEY = "df_with_missing"
_FRAME_RE = re.compile(r"(\d+)$")


# --------------------------------------------------------------------------- config.yaml
def read_config(project: Path) -> dict[str, Any]:
    """Read ``<project>/config.yaml`` (or a config.yaml path) of a single-animal DLC project.

    Checks what poseops relies on: ``scorer`` (str), ``bodyparts`` (non-empty list of str),
    ``video_sets`` (mapping, may be empty). Multi-animal projects are refused.
    """
    project = Path(project)
    path = project if project.suffix in (".yaml", ".yml") else project / "config.yaml"
    if not path.is_file():
        raise PoseopsError("config.yaml not found (is this a DeepLabCut project folder?)", file=path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PoseopsError(f"not valid YAML: {str(e).splitlines()[0]}", file=path) from e
    if not isinstance(cfg, dict):
        raise PoseopsError("expected a mapping of DeepLabCut settings", file=path)
    if cfg.get("multianimalproject"):
        raise PoseopsError(
            "multi-animal DeepLabCut projects (multianimalproject: true) are not supported; "
            "poseops handles single-animal projects",
            file=path,
        )
    scorer = cfg.get("scorer")
    if not isinstance(scorer, str) or not scorer:
        raise PoseopsError("'scorer' must be a non-empty string", file=path)
    bodyparts = cfg.get("bodyparts")
    if (
        not isinstance(bodyparts, list)
        or not bodyparts
        or not all(isinstance(b, str) and b for b in bodyparts)
    ):
        raise PoseopsError("'bodyparts' must be a non-empty list of names", file=path)
    if len(set(bodyparts)) != len(bodyparts):
        raise PoseopsError(f"'bodyparts' has duplicates: {bodyparts}", file=path)
    video_sets = cfg.get("video_sets") or {}
    if not isinstance(video_sets, dict):
        raise PoseopsError("'video_sets' must be a mapping video path -> {crop: ...}", file=path)
    cfg["video_sets"] = video_sets
    return cfg


def video_set_paths(cfg: dict[str, Any]) -> dict[Any, PurePosixPath]:
    """Config ``video_sets`` key -> its path (Windows separators made POSIX)."""
    return {key: PurePosixPath(str(key).replace("\\", "/")) for key in cfg.get("video_sets") or {}}


def video_set_names(cfg: dict[str, Any]) -> list[str]:
    """Video names (stems) listed in config ``video_sets``, as DLC's merge derives them."""
    return list(dict.fromkeys(p.stem for p in video_set_paths(cfg).values()))


# --------------------------------------------------------------------------- CollectedData
def read_collected_data(path: Path) -> pd.DataFrame:
    """Read a ``CollectedData_<scorer>.h5`` or ``.csv`` (or a Lightning Pose CSV).

    Returns the wide frame as DLC stores it (columns ``scorer/bodyparts/coords``, float64
    values, row index flat or 3-level as in the file), after checking: readable file, the three
    header levels, x and y per bodypart, numeric coordinates, no duplicate rows. Errors name the
    file, and the row and bodypart where they apply.
    """
    path = Path(path)
    if not path.is_file():
        raise PoseopsError("file not found", file=path)
    if path.suffix == ".h5":
        df = _read_h5(path)
        return _check_wide(df, path, row_names=None)
    if path.suffix == ".csv":
        df, line_of_row = _read_csv(path)
        return _check_wide(df, path, row_names=line_of_row)
    raise PoseopsError("expected a .h5 or .csv CollectedData file", file=path)


def _read_h5(path: Path) -> pd.DataFrame:
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            if not keys:
                raise PoseopsError("HDF5 file holds no table", file=path)
            key = f"/{H5_KEY}" if f"/{H5_KEY}" in keys else keys[0]
            df = store[key]
    except PoseopsError:
        raise
    except Exception as e:  # tables/h5py raise many types for truncated or non-HDF5 files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PoseopsError(
            f"cannot read HDF5 (truncated or corrupt?): {type(e).__name__}: {msg[:200]}", file=path
        ) from e
    if not isinstance(df, pd.DataFrame):
        raise PoseopsError("HDF5 file does not hold a DataFrame", file=path)
    return df


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict[Any, int]]:
    """Parse a DLC CSV by hand so that errors can name the line and bodypart."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise PoseopsError("not a text CSV file (corrupt?)", file=path) from e
    rows = list(csv.reader(text.splitlines()))
    if len(rows) < 3:
        raise PoseopsError(
            f"expected DLC's 3 header rows (scorer, bodyparts, coords), found {len(rows)} line(s)",
            file=path,
        )
    head = [r[0].strip() if r else "" for r in rows[:4]]
    if len(rows) > 3 and head[1] == "individuals":
        raise PoseopsError(
            "multi-animal CSV (header row 'individuals') is not supported", file=path, row=2
        )
    if head[:3] != HEADER_LEVELS:
        raise PoseopsError(
            f"wrong header levels: first column of rows 1-3 is {head[:3]}, expected {HEADER_LEVELS}",
            file=path,
        )
    # DLC >= 2.2 writes a 3-column row index (labeled-data, video, image): header rows then
    # start with "scorer,,," and data rows with "labeled-data,<video>,<img>".
    n_index = 1
    while n_index < len(rows[0]) and rows[0][n_index] == "" and rows[1][n_index] == "":
        n_index += 1
    width = len(rows[0])
    for i in (1, 2):
        if len(rows[i]) != width:
            raise PoseopsError(
                f"header row has {len(rows[i])} fields, row 1 has {width}", file=path, row=i + 1
            )
    columns = pd.MultiIndex.from_arrays(
        [[r[j] for j in range(n_index, width)] for r in rows[:3]], names=HEADER_LEVELS
    )
    data_rows = rows[3:]
    first_line = 4
    # pandas writes an extra line of index names when the row index is named: skip it.
    if data_rows and _is_index_names_line(data_rows[0], n_index):
        data_rows, first_line = data_rows[1:], 5
    index: list[Any] = []
    values = np.full((len(data_rows), width - n_index), np.nan)
    line_of_row: dict[Any, int] = {}
    for i, r in enumerate(data_rows):
        line = i + first_line
        if not r or all(c.strip() == "" for c in r):
            raise PoseopsError("empty line inside the data (truncated?)", file=path, row=line)
        if len(r) != width:
            raise PoseopsError(
                f"has {len(r)} fields, the header has {width} (truncated or corrupt?)",
                file=path,
                row=line,
            )
        key: Any = r[0] if n_index == 1 else tuple(r[:n_index])
        index.append(key)
        line_of_row.setdefault(key, line)
        for j, cell in enumerate(r[n_index:]):
            cell = cell.strip()
            if cell == "" or cell.lower() == "nan":
                continue
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise PoseopsError(
                    f"non-numeric {columns[j][2]} coordinate {cell!r} (image {_image_str(key)})",
                    file=path,
                    row=line,
                    bodypart=columns[j][1],
                ) from None
    idx = pd.MultiIndex.from_tuples(index) if n_index > 1 else pd.Index(index, dtype=object)
    if n_index > 1 and not index:
        idx = pd.MultiIndex.from_arrays([[]] * n_index)
    return pd.DataFrame(values, index=idx, columns=columns), line_of_row


def _is_index_names_line(r: list[str], n_index: int) -> bool:
    keys = [c for c in r[:n_index] if c]
    return bool(keys) and all(c.strip() == "" for c in r[n_index:]) and not any("." in k for k in keys)


def _image_str(key: Any) -> str:
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key)
    return str(key).replace("\\", "/")


def _check_wide(df: pd.DataFrame, path: Path, row_names: dict[Any, int] | None) -> pd.DataFrame:
    def where(key: Any) -> Any:
        return row_names.get(key, _image_str(key)) if row_names else _image_str(key)

    cols = df.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels != 3:
        if isinstance(cols, pd.MultiIndex) and "individuals" in (cols.names or []):
            raise PoseopsError("multi-animal labels (column level 'individuals') not supported", file=path)
        n = cols.nlevels if isinstance(cols, pd.MultiIndex) else 1
        raise PoseopsError(
            f"wrong header levels: {n} column level(s), expected 3 {HEADER_LEVELS}", file=path
        )
    if list(cols.names) != HEADER_LEVELS:
        raise PoseopsError(
            f"wrong header levels {list(cols.names)}, expected {HEADER_LEVELS}", file=path
        )
    if len(cols.get_level_values("scorer").unique()) != 1:
        raise PoseopsError(
            f"one scorer per file expected, found {list(cols.get_level_values('scorer').unique())}",
            file=path,
        )
    # DLC itself drops stray likelihood columns (napari-deeplabcut #204).
    coords = cols.get_level_values("coords")
    if "likelihood" in set(coords):
        df = df.loc[:, coords != "likelihood"]
        cols = df.columns
    for bp in cols.get_level_values("bodyparts").unique():
        have = sorted(cols[cols.get_level_values("bodyparts") == bp].get_level_values("coords"))
        if have != ["x", "y"]:
            raise PoseopsError(
                f"coords must be exactly x and y for each bodypart, found {have}",
                file=path,
                bodypart=bp,
            )
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise PoseopsError(f"duplicate row for image {_image_str(dup)}", file=path, row=where(dup))
    # Coordinates must be numbers (an h5 written from strings holds object columns).
    for col in df.columns:
        if df[col].dtype.kind in "fi":
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            key = df.index[bad.to_numpy()][0]
            raise PoseopsError(
                f"non-numeric {col[2]} coordinate {df[col][bad].iloc[0]!r} (image {_image_str(key)})",
                file=path,
                row=where(key),
                bodypart=col[1],
            )
    if any(df[c].dtype != np.float64 for c in df.columns):
        df = df.astype(np.float64)
    return df


def image_paths(df_wide: pd.DataFrame) -> list[str]:
    """The row index of a CollectedData frame as DLC-relative POSIX paths ("labeled-data/v/img1.png")."""
    return [_image_str(k) for k in df_wide.index]


def write_collected_data(df_wide: pd.DataFrame, path_h5: Path) -> tuple[Path, Path]:
    """Write ``CollectedData_<scorer>.h5`` (key ``df_with_missing``) and its ``.csv`` twin,
    as DeepLabCut does (``to_hdf(..., mode="w")`` and ``to_csv``), each atomically."""
    path_h5 = Path(path_h5)
    if path_h5.suffix != ".h5":
        raise ValueError(f"expected a .h5 path, got {path_h5}")
    path_csv = path_h5.with_suffix(".csv")
    with atomic_path(path_h5) as tmp:
        df_wide.to_hdf(tmp, key=H5_KEY, mode="w")
    with atomic_path(path_csv) as tmp:
        df_wide.to_csv(tmp)
    return path_h5, path_csv


# --------------------------------------------------------------------------- long <-> wide
def frame_from_image(image: str) -> int:
    """Frame index from an image name: trailing digits of the stem (img0042.png -> 42), else -1."""
    m = _FRAME_RE.search(PurePosixPath(image).stem)
    return int(m.group(1)) if m else -1


def video_from_image(image: str, default: str | None = None) -> str:
    """Video of an image path: the folder under labeled-data (DLC). Lightning Pose images sit
    directly in labeled-data/ (no video folder): then ``default`` (e.g. the project name)."""
    parts = PurePosixPath(image).parts
    if len(parts) >= 3:
        return parts[-2]
    return default if default is not None else (parts[0] if len(parts) > 1 else "")


def wide_to_long(df_wide: pd.DataFrame, default_video: str | None = None) -> pd.DataFrame:
    """DLC wide frame -> tidy labels (columns image, video, frame, scorer, bodypart, x, y, labeled).

    One row per (image, bodypart), images in file order, bodyparts in column order.
    """
    scorer = str(df_wide.columns.get_level_values("scorer")[0]) if df_wide.shape[1] else ""
    bodyparts = list(dict.fromkeys(df_wide.columns.get_level_values("bodyparts")))
    images = image_paths(df_wide)
    n_img, n_bp = len(images), len(bodyparts)
    xs = np.empty((n_img, n_bp))
    ys = np.empty((n_img, n_bp))
    for j, bp in enumerate(bodyparts):
        xs[:, j] = df_wide.xs((bp, "x"), axis=1, level=["bodyparts", "coords"]).iloc[:, 0].to_numpy(float)
        ys[:, j] = df_wide.xs((bp, "y"), axis=1, level=["bodyparts", "coords"]).iloc[:, 0].to_numpy(float)
    img_col = np.repeat(np.array(images, dtype=object), n_bp)
    out = pd.DataFrame(
        {
            S.IMAGE: img_col,
            S.VIDEO: [video_from_image(i, default_video) for i in img_col],
            S.FRAME: np.repeat(np.array([frame_from_image(i) for i in images], dtype=np.int64), n_bp),
            S.SCORER: scorer,
            S.BODYPART: np.tile(np.array(bodyparts, dtype=object), n_img),
            S.X: xs.ravel(),
            S.Y: ys.ravel(),
        }
    )
    out[S.LABELED] = np.isfinite(out[S.X].to_numpy()) & np.isfinite(out[S.Y].to_numpy())
    return out


def labels_to_wide(
    labels_long: pd.DataFrame,
    scorer: str | None = None,
    bodyparts: list[str] | None = None,
    index: str = "multi",
) -> pd.DataFrame:
    """Tidy labels -> DLC's wide CollectedData frame for one scorer.

    ``labels_long`` needs columns image, bodypart, x, y (and scorer when it holds several).
    ``scorer`` selects the rows (when the table has a scorer column) and names the column level
    (default: the table's only scorer). ``bodyparts`` fixes the column order (config order; parts
    missing from the table become NaN columns). ``index``: ``"multi"`` = DLC >= 2.2's
    ("labeled-data", video, image) row index, ``"flat"`` = one path string (DLC 2.0,
    Lightning Pose). Rows are sorted by image path, as DLC's merge does.
    """
    if index not in ("multi", "flat"):
        raise ValueError("index must be 'multi' or 'flat'")
    S.require_columns(labels_long, [S.IMAGE, S.BODYPART, S.X, S.Y], "labels")
    df = labels_long
    if S.SCORER in df.columns:
        scorers = list(dict.fromkeys(df[S.SCORER]))
        if scorer is None:
            if len(scorers) != 1:
                raise PoseopsError(f"labels hold several scorers {scorers}: choose one")
            scorer = str(scorers[0])
        else:
            df = df[df[S.SCORER] == scorer]
    elif scorer is None:
        raise PoseopsError("labels have no scorer column: pass scorer=")
    if df.duplicated([S.IMAGE, S.BODYPART]).any():
        dup = df[df.duplicated([S.IMAGE, S.BODYPART])].iloc[0]
        raise PoseopsError(
            f"duplicate label for scorer {scorer!r}", row=dup[S.IMAGE], bodypart=dup[S.BODYPART]
        )
    bps = list(bodyparts) if bodyparts is not None else list(dict.fromkeys(df[S.BODYPART]))
    images = sorted(dict.fromkeys(df[S.IMAGE]))
    x = df.pivot(index=S.IMAGE, columns=S.BODYPART, values=S.X).reindex(index=images, columns=bps)
    y = df.pivot(index=S.IMAGE, columns=S.BODYPART, values=S.Y).reindex(index=images, columns=bps)
    values = np.empty((len(images), 2 * len(bps)))
    values[:, 0::2] = x.to_numpy(float)
    values[:, 1::2] = y.to_numpy(float)
    columns = pd.MultiIndex.from_product([[scorer], bps, ["x", "y"]], names=HEADER_LEVELS)
    if index == "multi":
        row_index: pd.Index = pd.MultiIndex.from_tuples([_split_image(i) for i in images])
    else:
        row_index = pd.Index(images, dtype=object)
    return pd.DataFrame(values, index=row_index, columns=columns)


def _split_image(image: str) -> tuple[str, str, str]:
    parts = PurePosixPath(str(image).replace("\\", "/")).parts
    if len(parts) != 3:
        raise PoseopsError(
            f"image path {image!r} is not labeled-data/<video>/<image>: use index='flat'"
        )
    return parts[0], parts[1], parts[2]


# --------------------------------------------------------------------------- images
def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header only (PNG: IHDR; others: Pillow lazy open)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise PoseopsError("image file not found", file=path) from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as e:
        raise PoseopsError(f"not a readable image: {e}", file=path) from e


def dlc_frame_name(index: int, n_frames: int) -> str:
    """DLC's extracted-frame name: ``img`` + index zero-padded to ceil(log10(n_frames)) digits
    (deeplabcut/generate_training_dataset/frame_extraction.py)."""
    width = int(math.ceil(math.log10(n_frames))) if n_frames > 1 else 1
    return f"img{str(index).zfill(width)}.png"
