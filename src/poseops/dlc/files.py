"""DeepLabCut file formats, read and written exactly as DeepLabCut does.

- ``config.yaml``: single-animal (``bodyparts``) and multi-animal projects
  (``multianimalproject: true``, ``individuals``, ``multianimalbodyparts``, ``uniquebodyparts``,
  ``bodyparts: MULTI!``); ``is_multianimal`` / ``config_bodyparts`` / ``config_individuals`` /
  ``config_unique_bodyparts`` read both kinds the same way.
- ``labeled-data/<video>/CollectedData_<scorer>.h5`` (pandas HDF5, key ``df_with_missing``) and
  the ``.csv`` twin. The frame ("wide" layout) has a 3-level column index
  ``scorer / bodyparts / coords`` (coords ``x``, ``y``) and one row per image; a multi-animal
  project's has 4 levels ``scorer / individuals / bodyparts / coords``: each config individual
  with the multi-animal bodyparts, then the individual ``single`` with the unique bodyparts
  (the CSV then has 4 header rows). The row index is
  either DLC 2.0's flat image path ``labeled-data/<video>/img0042.png`` or DLC >= 2.2's 3-level
  MultiIndex ``("labeled-data", <video>, "img0042.png")``; both are read.
- Lightning Pose's CSV (same 3-row header; index ``labeled-data/img03.png`` without a video
  sub-folder; no config.yaml).

The tidy labels table (``poseops.core.schema.LABEL_COLUMNS``, plus ``individual`` for multi-animal
frames) is the long form of these frames: ``wide_to_long`` and ``labels_to_wide`` convert between
the two.
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

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import atomic_path

log = logging.getLogger(__name__)

HEADER_LEVELS = ["scorer", "bodyparts", "coords"]
MA_HEADER_LEVELS = ["scorer", "individuals", "bodyparts", "coords"]  # multi-animal projects
H5_KEY = "df_with_missing"
_FRAME_RE = re.compile(r"(\d+)$")


# --------------------------------------------------------------------------- config.yaml
def read_config(project: Path) -> dict[str, Any]:
    """Read ``<project>/config.yaml`` (or a config.yaml path) of a DLC project.

    Checks what poseops relies on: ``scorer`` (str), ``video_sets`` (mapping, may be empty) and
    the bodyparts: single-animal ``bodyparts`` (non-empty list of str); multi-animal
    (``multianimalproject: true``) ``individuals`` (non-empty list of names, not ``single``),
    ``multianimalbodyparts`` (non-empty list) and ``uniquebodyparts`` (list, may be empty), no
    name in both. The returned dict keeps DLC's keys as they are (``bodyparts: MULTI!`` too, so it
    can be written back for DLC), with ``uniquebodyparts`` normalised to a list: read bodyparts
    through ``config_bodyparts`` / ``config_individuals`` / ``config_unique_bodyparts``.
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
    scorer = cfg.get("scorer")
    if not isinstance(scorer, str) or not scorer:
        raise PoseopsError("'scorer' must be a non-empty string", file=path)
    if is_multianimal(cfg):
        _check_multianimal_config(cfg, path)
    else:
        _check_names(cfg.get("bodyparts"), "bodyparts", path, "")
    video_sets = cfg.get("video_sets") or {}
    if not isinstance(video_sets, dict):
        raise PoseopsError("'video_sets' must be a mapping video path -> {crop: ...}", file=path)
    cfg["video_sets"] = video_sets
    return cfg


def _check_names(names: Any, key: str, path: Path, what: str, allow_empty: bool = False) -> None:
    if (
        not isinstance(names, list)
        or (not names and not allow_empty)
        or not all(isinstance(b, str) and b for b in names)
    ):
        kind = "a list of names" if allow_empty else "a non-empty list of names"
        raise PoseopsError(f"{what}'{key}' must be {kind}, found {names!r}", file=path)
    if len(set(names)) != len(names):
        raise PoseopsError(f"{what}'{key}' has duplicates: {names}", file=path)


def _check_multianimal_config(cfg: dict[str, Any], path: Path) -> None:
    what = "multi-animal project (multianimalproject: true): "
    _check_names(cfg.get("individuals"), "individuals", path, what)
    if S.SINGLE in cfg["individuals"]:
        raise PoseopsError(
            f"{what}'individuals' must not list {S.SINGLE!r} (DLC's name for the unique "
            "bodyparts' individual)",
            file=path,
        )
    _check_names(cfg.get("multianimalbodyparts"), "multianimalbodyparts", path, what)
    if cfg.get("uniquebodyparts") is None:
        cfg["uniquebodyparts"] = []
    _check_names(cfg["uniquebodyparts"], "uniquebodyparts", path, what, allow_empty=True)
    both = [b for b in cfg["uniquebodyparts"] if b in cfg["multianimalbodyparts"]]
    if both:
        raise PoseopsError(
            f"{what}bodyparts {both} are in both 'multianimalbodyparts' and 'uniquebodyparts'",
            file=path,
        )


def read_config_unchecked(path: Path) -> dict[str, Any]:
    """A DLC config.yaml path as it is, unchecked (``{}`` when empty): for reading one setting
    (``pcutoff``, ``individuals``) of a config :func:`read_config` might refuse as partial."""
    return yaml.safe_load(Path(path).read_text()) or {}


def read_pytorch_config(path: Path) -> dict[str, Any]:
    """Read DLC's ``pytorch_config.yaml`` (a model's settings: ``metadata`` with ``bodyparts``,
    ``individuals``, ``unique_bodyparts``; ``method``, ...) as it is, unchecked."""
    path = Path(path)
    if not path.is_file():
        raise PoseopsError("pytorch_config.yaml not found", file=path)
    return yaml.safe_load(path.read_text()) or {}


def is_multianimal(cfg: dict[str, Any]) -> bool:
    """True for a multi-animal DLC project (``multianimalproject: true``)."""
    return bool(cfg.get("multianimalproject"))


def config_bodyparts(cfg: dict[str, Any]) -> list[str]:
    """All bodyparts in DLC's order: ``bodyparts`` (single-animal), or ``multianimalbodyparts``
    then ``uniquebodyparts`` (multi-animal, as DLC's merge_annotateddatasets orders them)."""
    if is_multianimal(cfg):
        return [*cfg["multianimalbodyparts"], *(cfg.get("uniquebodyparts") or [])]
    return list(cfg["bodyparts"])


def config_multianimal_bodyparts(cfg: dict[str, Any]) -> list[str]:
    """Bodyparts every individual has: ``multianimalbodyparts`` (single-animal: ``bodyparts``)."""
    return list(cfg["multianimalbodyparts"]) if is_multianimal(cfg) else list(cfg["bodyparts"])


def config_unique_bodyparts(cfg: dict[str, Any]) -> list[str]:
    """``uniquebodyparts`` of a multi-animal project (labeled under individual ``single``); []
    for single-animal projects."""
    return list(cfg.get("uniquebodyparts") or []) if is_multianimal(cfg) else []


def config_individuals(cfg: dict[str, Any]) -> list[str]:
    """The config's ``individuals`` (animals, without ``single``); [] for single-animal projects."""
    return list(cfg["individuals"]) if is_multianimal(cfg) else []


def video_set_paths(cfg: dict[str, Any]) -> dict[Any, PurePosixPath]:
    """Config ``video_sets`` key -> its path (Windows separators made POSIX)."""
    return {key: PurePosixPath(str(key).replace("\\", "/")) for key in cfg.get("video_sets") or {}}


def video_set_names(cfg: dict[str, Any]) -> list[str]:
    """Video names (stems) listed in config ``video_sets``, as DLC's merge derives them."""
    return list(dict.fromkeys(p.stem for p in video_set_paths(cfg).values()))


# --------------------------------------------------------------------------- CollectedData
def read_collected_data(path: Path, cfg: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a ``CollectedData_<scorer>.h5`` or ``.csv`` (or a Lightning Pose CSV).

    Returns the wide frame as DLC stores it (columns ``scorer/bodyparts/coords``, or
    ``scorer/individuals/bodyparts/coords`` for multi-animal labels; float64 values, row index
    flat or 3-level as in the file), after checking: readable file, the header levels, x and y
    per bodypart, numeric coordinates, no duplicate rows. With ``cfg`` (a ``read_config`` dict)
    the frame is also checked against the project: 4 levels in a multi-animal project and 3 in
    a single-animal one, individuals listed in the config, unique bodyparts only under
    ``single`` and multi-animal bodyparts only under an animal. Errors name the file, and the
    row and bodypart where they apply (a CSV's line number, an HDF5 file's image path; header
    problems: the CSV header line, or "header" in an HDF5 file).
    """
    path = Path(path)
    if not path.is_file():
        raise PoseopsError("file not found", file=path)
    if path.suffix == ".h5":
        df = _read_h5(path)
        df = _check_wide(df, path, row_names=None)
        line_of_row: dict[Any, int] | None = None
    elif path.suffix == ".csv":
        df, line_of_row = _read_csv(path)
        df = _check_wide(df, path, row_names=line_of_row)
    else:
        raise PoseopsError("expected a .h5 or .csv CollectedData file", file=path)
    if cfg is not None:
        check_against_config(df, cfg, path, line_of_row)
    return df


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
    # A multi-animal CSV has a 4th header row: scorer, individuals, bodyparts, coords.
    levels = MA_HEADER_LEVELS if len(rows) > 3 and head[1] == "individuals" else HEADER_LEVELS
    n_head = len(levels)
    if head[:n_head] != levels:
        raise PoseopsError(
            f"wrong header levels: first column of rows 1-{n_head} is {head[:n_head]}, "
            f"expected {levels}",
            file=path,
        )
    # DLC >= 2.2 writes a 3-column row index (labeled-data, video, image): header rows then
    # start with "scorer,,," and data rows with "labeled-data,<video>,<img>".
    n_index = 1
    while n_index < len(rows[0]) and rows[0][n_index] == "" and rows[1][n_index] == "":
        n_index += 1
    width = len(rows[0])
    for i in range(1, n_head):
        if len(rows[i]) != width:
            raise PoseopsError(
                f"header row has {len(rows[i])} fields, row 1 has {width}", file=path, row=i + 1
            )
    columns = pd.MultiIndex.from_arrays(
        [[r[j] for j in range(n_index, width)] for r in rows[:n_head]], names=levels
    )
    data_rows = rows[n_head:]
    first_line = n_head + 1
    # pandas writes an extra line of index names when the row index is named: skip it.
    if data_rows and _is_index_names_line(data_rows[0], n_index):
        data_rows, first_line = data_rows[1:], n_head + 2
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
                    f"non-numeric {columns[j][-1]} coordinate {cell!r} "
                    f"({_individual_str(columns[j])}image {_image_str(key)})",
                    file=path,
                    row=line,
                    bodypart=columns[j][-2],
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


def _individual_str(col: tuple[Any, ...]) -> str:
    """"individual 'mouse1', " for a 4-level column key, "" for a 3-level one (error messages)."""
    return f"individual {col[1]!r}, " if len(col) == 4 else ""


def _check_wide(df: pd.DataFrame, path: Path, row_names: dict[Any, int] | None) -> pd.DataFrame:
    def where(key: Any) -> Any:
        return row_names.get(key, _image_str(key)) if row_names else _image_str(key)

    cols = df.columns
    if not isinstance(cols, pd.MultiIndex) or cols.nlevels not in (3, 4):
        n = cols.nlevels if isinstance(cols, pd.MultiIndex) else 1
        raise PoseopsError(
            f"wrong header levels: {n} column level(s), expected 3 {HEADER_LEVELS} "
            f"(or 4 {MA_HEADER_LEVELS} in a multi-animal project)",
            file=path,
        )
    levels = HEADER_LEVELS if cols.nlevels == 3 else MA_HEADER_LEVELS
    if list(cols.names) != levels:
        raise PoseopsError(f"wrong header levels {list(cols.names)}, expected {levels}", file=path)
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
    # one keypoint = (bodypart) or (individual, bodypart): the column key without scorer/coords
    keys = [k[1:-1] for k in cols]
    for kp in dict.fromkeys(keys):
        have = sorted(c[-1] for c, k in zip(cols, keys, strict=True) if k == kp)
        if have != ["x", "y"]:
            who = f"individual {kp[0]!r}: " if len(kp) == 2 else ""
            raise PoseopsError(
                f"{who}coords must be exactly x and y for each bodypart, found {have}",
                file=path,
                bodypart=kp[-1],
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
                f"non-numeric {col[-1]} coordinate {df[col][bad].iloc[0]!r} "
                f"({_individual_str(col)}image {_image_str(key)})",
                file=path,
                row=where(key),
                bodypart=col[-2],
            )
    if any(df[c].dtype != np.float64 for c in df.columns):
        df = df.astype(np.float64)
    return df


def check_against_config(
    df_wide: pd.DataFrame,
    cfg: dict[str, Any],
    path: Path,
    line_of_row: dict[Any, int] | None = None,
) -> None:
    """Check a (``_check_wide``-checked) CollectedData frame against its project's config.

    Multi-animal project: 4 header levels, every individual in config ``individuals`` (or
    ``single`` for the unique bodyparts), unique bodyparts only under ``single``, multi-animal
    bodyparts only under an animal, no bodypart outside the config. Single-animal project: 3
    header levels (bodyparts are checked by ingest, which keeps its own messages). The row named
    is the first image labeling the culprit (CSV line or image path), else the header.
    """
    path = Path(path)
    csv_file = path.suffix == ".csv"
    ma = is_multianimal(cfg)
    nlev = df_wide.columns.nlevels
    if ma and nlev != 4:
        raise PoseopsError(
            f"{nlev}-level header {list(df_wide.columns.names)} in a multi-animal project "
            f"(multianimalproject: true): expected 4 levels {MA_HEADER_LEVELS}",
            file=path,
            row=2 if csv_file else "header",
        )
    if not ma and nlev != 3:
        raise PoseopsError(
            f"{nlev}-level header {list(df_wide.columns.names)} (individuals) in a single-animal "
            f"project: expected 3 levels {HEADER_LEVELS}, or set multianimalproject: true",
            file=path,
            row=2 if csv_file else "header",
        )
    if not ma:
        return
    individuals = config_individuals(cfg)
    multi = set(config_multianimal_bodyparts(cfg))
    unique = set(config_unique_bodyparts(cfg))
    labeled = np.isfinite(df_wide.to_numpy(float))

    def row_of(col: Any) -> Any:
        hits = np.flatnonzero(labeled[:, df_wide.columns.get_loc(col)])
        if not len(hits):  # never labeled: point at the header row naming it
            return 2 if csv_file else "header"
        key = df_wide.index[hits[0]]
        if line_of_row is not None:
            return line_of_row.get(key, _image_str(key))
        return _image_str(key)

    for col in df_wide.columns:
        ind, bp = str(col[1]), str(col[2])
        if ind != S.SINGLE and ind not in individuals:
            raise PoseopsError(
                f"individual {ind!r} is not in config.yaml individuals {individuals}",
                file=path, row=row_of(col), bodypart=bp,
            )
        if ind == S.SINGLE and bp in multi:
            raise PoseopsError(
                f"multi-animal bodypart under individual {S.SINGLE!r}: only uniquebodyparts "
                f"{sorted(unique)} belong there",
                file=path, row=row_of(col), bodypart=bp,
            )
        if ind != S.SINGLE and bp in unique:
            raise PoseopsError(
                f"unique bodypart under individual {ind!r}: uniquebodyparts are labeled under "
                f"{S.SINGLE!r}",
                file=path, row=row_of(col), bodypart=bp,
            )
        if bp not in multi and bp not in unique:
            raise PoseopsError(
                f"bodypart (individual {ind!r}) not in config.yaml multianimalbodyparts "
                f"{sorted(multi)} / uniquebodyparts {sorted(unique)}",
                file=path, row=row_of(col), bodypart=bp,
            )


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


def lightning_pose_files(project: Path) -> list[Path]:
    """CSV files at a Lightning Pose project's root that carry DLC's 3-row header."""
    out = []
    for f in sorted(Path(project).glob("*.csv")):
        try:
            with f.open() as fh:
                first = fh.readline()
        except (OSError, UnicodeDecodeError):
            continue
        if first.split(",", 1)[0].strip() == "scorer":
            out.append(f)
    return out


def lightning_pose_bodyparts(project: Path) -> list[str]:
    """A Lightning Pose folder's bodyparts in the order of its CSV header(s): the order the user
    chose, which DLC's outputs and the MLflow model keep."""
    names: list[str] = []
    for f in lightning_pose_files(project):
        names += list(read_collected_data(f).columns.get_level_values("bodyparts"))
    return list(dict.fromkeys(str(n) for n in names))


def dlc_image_path(image: str, video: str) -> str:
    """The image's path in a DLC project: ``labeled-data/<video>/<name>``. Lightning Pose keeps
    images directly in ``labeled-data/`` (flat): those move under the ``video`` folder; a path
    that already has a video folder is returned unchanged."""
    parts = PurePosixPath(str(image).replace("\\", "/")).parts
    if len(parts) == 2:
        return f"{parts[0]}/{video}/{parts[1]}"
    return str(image)


def wide_to_long(df_wide: pd.DataFrame, default_video: str | None = None) -> pd.DataFrame:
    """DLC wide frame -> tidy labels (columns image, video, frame, scorer, bodypart, x, y, labeled).

    One row per (image, bodypart), images in file order, bodyparts in column order. A
    multi-animal frame (4 levels) gives one row per (image, individual, bodypart) and the column
    ``individual`` after ``scorer`` (unique bodyparts under ``single``), in column order.
    """
    scorer = str(df_wide.columns.get_level_values("scorer")[0]) if df_wide.shape[1] else ""
    ma = df_wide.columns.nlevels == 4
    # keypoints in column order: (individual, bodypart) or (bodypart,)
    keys = list(dict.fromkeys(k[1:-1] for k in df_wide.columns))
    images = image_paths(df_wide)
    n_img, n_kp = len(images), len(keys)
    xs = np.empty((n_img, n_kp))
    ys = np.empty((n_img, n_kp))
    for j, kp in enumerate(keys):
        xs[:, j] = df_wide[(scorer, *kp, "x")].to_numpy(float)
        ys[:, j] = df_wide[(scorer, *kp, "y")].to_numpy(float)
    img_col = np.repeat(np.array(images, dtype=object), n_kp)
    cols: dict[str, Any] = {
        S.IMAGE: img_col,
        S.VIDEO: [video_from_image(i, default_video) for i in img_col],
        S.FRAME: np.repeat(np.array([frame_from_image(i) for i in images], dtype=np.int64), n_kp),
        S.SCORER: scorer,
    }
    if ma:
        cols[S.INDIVIDUAL] = np.tile(np.array([str(k[0]) for k in keys], dtype=object), n_img)
    cols[S.BODYPART] = np.tile(np.array([str(k[-1]) for k in keys], dtype=object), n_img)
    cols[S.X] = xs.ravel()
    cols[S.Y] = ys.ravel()
    out = pd.DataFrame(cols)
    out[S.LABELED] = np.isfinite(out[S.X].to_numpy()) & np.isfinite(out[S.Y].to_numpy())
    return out


def labels_to_wide(
    labels_long: pd.DataFrame,
    scorer: str | None = None,
    bodyparts: list[str] | None = None,
    index: str = "multi",
    individuals: list[str] | None = None,
    unique_bodyparts: list[str] | None = None,
) -> pd.DataFrame:
    """Tidy labels -> DLC's wide CollectedData frame for one scorer.

    ``labels_long`` needs columns image, bodypart, x, y (and scorer when it holds several).
    ``scorer`` selects the rows (when the table has a scorer column) and names the column level
    (default: the table's only scorer). ``bodyparts`` fixes the column order (config order; parts
    missing from the table become NaN columns). ``index``: ``"multi"`` = DLC >= 2.2's
    ("labeled-data", video, image) row index, ``"flat"`` = one path string (DLC 2.0,
    Lightning Pose). Rows are sorted by image path, as DLC's merge does.

    A table with an ``individual`` column gives DLC's multi-animal frame (4 levels
    ``scorer/individuals/bodyparts/coords``), columns in the order DLC writes them: each of
    ``individuals`` (config order; default: the table's, without ``single``) with the
    multi-animal bodyparts, then ``single`` with ``unique_bodyparts`` (omitted when there are
    none, as in DLC). ``bodyparts`` may be the multi-animal bodyparts or all of them
    (``config_bodyparts``): the unique ones are taken out. Defaults come from the table.
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
    ma = S.INDIVIDUAL in df.columns
    keys = [S.IMAGE, S.INDIVIDUAL, S.BODYPART] if ma else [S.IMAGE, S.BODYPART]
    if df.duplicated(keys).any():
        dup = df[df.duplicated(keys)].iloc[0]
        who = f" (individual {dup[S.INDIVIDUAL]!r})" if ma else ""
        raise PoseopsError(
            f"duplicate label for scorer {scorer!r}{who}", row=dup[S.IMAGE], bodypart=dup[S.BODYPART]
        )
    images = sorted(dict.fromkeys(df[S.IMAGE]))
    if ma:
        columns = _ma_columns(df, scorer, bodyparts, individuals, unique_bodyparts)
        kp_cols: list[Any] = [(c[1], c[2]) for c in columns[0::2]]
        pivot_cols: Any = [S.INDIVIDUAL, S.BODYPART]
        kp_index: pd.Index = pd.MultiIndex.from_tuples(kp_cols)
    else:
        bps = list(bodyparts) if bodyparts is not None else list(dict.fromkeys(df[S.BODYPART]))
        columns = pd.MultiIndex.from_product([[scorer], bps, ["x", "y"]], names=HEADER_LEVELS)
        pivot_cols, kp_index = S.BODYPART, pd.Index(bps)
    x = df.pivot(index=S.IMAGE, columns=pivot_cols, values=S.X).reindex(index=images, columns=kp_index)
    y = df.pivot(index=S.IMAGE, columns=pivot_cols, values=S.Y).reindex(index=images, columns=kp_index)
    values = np.empty((len(images), 2 * len(kp_index)))
    values[:, 0::2] = x.to_numpy(float)
    values[:, 1::2] = y.to_numpy(float)
    if index == "multi":
        row_index: pd.Index = pd.MultiIndex.from_tuples([_split_image(i) for i in images])
    else:
        row_index = pd.Index(images, dtype=object)
    return pd.DataFrame(values, index=row_index, columns=columns)


def _ma_columns(
    df: pd.DataFrame,
    scorer: str,
    bodyparts: list[str] | None,
    individuals: list[str] | None,
    unique_bodyparts: list[str] | None,
) -> pd.MultiIndex:
    """DLC's multi-animal column index: individuals x multi-animal bodyparts, then single x
    unique bodyparts (deeplabcut's dlcloader.build_dlc_dataframe_columns order)."""
    is_single = df[S.INDIVIDUAL] == S.SINGLE
    if unique_bodyparts is None:
        unique_bodyparts = list(dict.fromkeys(df.loc[is_single, S.BODYPART]))
    if bodyparts is None:
        bodyparts = list(dict.fromkeys(df.loc[~is_single, S.BODYPART]))
    multi = [b for b in bodyparts if b not in set(unique_bodyparts)]
    if individuals is None:
        individuals = [i for i in dict.fromkeys(df[S.INDIVIDUAL]) if i != S.SINGLE]
    individuals = [i for i in individuals if i != S.SINGLE]
    extra = sorted(set(df[S.INDIVIDUAL]) - {*individuals, S.SINGLE})
    if extra:
        raise PoseopsError(f"labels hold individuals {extra} not in individuals={individuals}")
    tuples = [(scorer, i, b, c) for i in individuals for b in multi for c in ("x", "y")]
    tuples += [(scorer, S.SINGLE, b, c) for b in unique_bodyparts for c in ("x", "y")]
    return pd.MultiIndex.from_tuples(tuples, names=MA_HEADER_LEVELS)


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
