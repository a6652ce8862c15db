"""Shared pieces of the refinement loop (extract, analyze, outliers, merge): DLC image names and
config.yaml updates, the metadata join, video frames, appearance features, condition quotas and
k-means diversity sampling.

Not a stage (no command of its own). cv2 and sklearn are imported inside the functions that
need them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

CLUSTER = "cluster"
_IMG_RE = re.compile(r"^img(\d+)\.png$")


# ---------------------------------------------------------------- DLC project bits
def read_config(config: str | Path) -> dict:
    """config.yaml of a DLC project (a folder or the yaml path; single- or multi-animal: use
    dlcio.config_bodyparts etc., never cfg["bodyparts"]) as a dict."""
    from poseops.dlc.files import read_config as _read

    return _read(Path(config))


def write_config_updates(config: str | Path, updates: dict) -> None:
    """Set top-level keys of config.yaml atomically, keeping DLC's comments (ruamel round trip)."""
    import io

    from ruamel.yaml import YAML

    from poseops.core.fileio import write_text

    p = Path(config)
    ry = YAML()
    ry.preserve_quotes = True
    data = ry.load(p.read_text())
    for k, v in updates.items():
        data[k] = v
    buf = io.StringIO()
    ry.dump(data, buf)
    write_text(buf.getvalue(), p)


def frame_image_name(frame: int, width: int) -> str:
    """DLC's image name of a video frame: ``img`` + zero-padded index + ``.png``."""
    return f"img{int(frame):0{int(width)}d}.png"


def dlc_name_width(n_frames: int) -> int:
    """DLC's padding rule (extract_frames / extract_outlier_frames): ceil(log10(n_frames))."""
    return max(1, int(math.ceil(math.log10(max(n_frames, 2)))))


def folder_name_width(folder: Path) -> int | None:
    """Padding width used by the images already in a labeled-data folder (None if empty)."""
    if not folder.is_dir():
        return None
    widths = {len(m.group(1)) for f in folder.iterdir() if (m := _IMG_RE.match(f.name))}
    return max(widths) if widths else None


def image_path(video: str, frame: int, width: int) -> str:
    """DLC's relative image path ``labeled-data/<video>/imgNNNN.png``."""
    return f"labeled-data/{video}/{frame_image_name(frame, width)}"


def frame_of(image: str) -> int:
    m = _IMG_RE.match(Path(image).name)
    if not m:
        raise PoseopsError("image name is not DLC's imgNNNN.png", file=image)
    return int(m.group(1))


def labeled_frames(project: Path, video: str) -> set[int]:
    """Frame indices that already have an image in ``labeled-data/<video>/``."""
    folder = Path(project) / "labeled-data" / video
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for f in folder.iterdir() if (m := _IMG_RE.match(f.name))}


# ---------------------------------------------------------------- Lightning Pose folders
LP_ITERATION_FILE = "poseops_iteration.yaml"  # a Lightning Pose folder has no config.yaml


def lightning_pose_labels(project: Path) -> Path:
    """The labels CSV of a Lightning Pose folder (``CollectedData.csv`` when there are several)."""
    from poseops.dlc.files import lightning_pose_files

    files = lightning_pose_files(Path(project))
    if not files:
        raise PoseopsError("no Lightning Pose labels CSV (DLC's 3-row header) at the project root",
                           file=project)
    named = [f for f in files if f.name == "CollectedData.csv"]
    return named[0] if named else files[0]


def lightning_pose_flat(project: Path) -> bool:
    """True when the folder's labeled images sit directly in ``labeled-data/`` (Lightning Pose's
    flat layout), False for per-video sub-folders (``labeled-data/<video>/``)."""
    from poseops.dlc.files import image_paths, read_collected_data

    images = image_paths(read_collected_data(lightning_pose_labels(project)))
    return any(len(Path(i).parts) == 2 for i in images)


def lightning_pose_image(video: str, frame: int, width: int, flat: bool) -> str:
    """Where an extracted frame goes in a Lightning Pose folder: ``labeled-data/<video>/imgNNNN.png``
    (sub-folders) or ``labeled-data/<video>_imgNNNN.png`` (flat: the video in the name, so frames
    of two videos never share a file)."""
    if flat:
        return f"labeled-data/{video}_{frame_image_name(frame, width)}"
    return image_path(video, frame, width)


def lightning_pose_frames(project: Path, video: str, flat: bool) -> set[int]:
    """Frames of ``video`` that already have an image in a Lightning Pose folder."""
    if not flat:
        return labeled_frames(project, video)
    folder = Path(project) / "labeled-data"
    pat = re.compile(rf"^{re.escape(video)}_img(\d+)\.png$")
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for f in folder.iterdir() if (m := pat.match(f.name))}


def lightning_pose_iteration(project: Path) -> int:
    """The refinement iteration of a Lightning Pose folder (``poseops_iteration.yaml``; 0 if none)."""
    import yaml

    p = Path(project) / LP_ITERATION_FILE
    if not p.is_file():
        return 0
    data = yaml.safe_load(p.read_text()) or {}
    it = data.get("iteration", 0) if isinstance(data, dict) else None
    if not isinstance(it, int) or it < 0:
        raise PoseopsError(f"'iteration' must be a whole number >= 0, found {it!r}", file=p)
    return it


# ---------------------------------------------------------------- metadata
def attach_metadata(
    frames: pd.DataFrame, meta: pd.DataFrame, required: Sequence[str], where: str | Path
) -> pd.DataFrame:
    """Left-join per-video metadata on ``video``; every video must be known, with ``required``."""
    missing_cols = [c for c in required if c not in meta.columns]
    if missing_cols:
        raise PoseopsError(f"metadata lacks column(s) {missing_cols}", file=where)
    unknown = sorted(set(frames[S.VIDEO]) - set(meta[S.VIDEO]))
    if unknown:
        raise PoseopsError(f"video(s) {unknown} not in the metadata CSV", file=where)
    cols = [c for c in meta.columns if c not in frames.columns or c == S.VIDEO]
    return frames.merge(meta[cols], on=S.VIDEO, how="left", validate="many_to_one")


# ---------------------------------------------------------------- video reading
def probe_video(path: str | Path) -> tuple[int, int, int]:
    """(n_frames, width, height) of a video; PoseopsError naming the file if it cannot be decoded."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise PoseopsError("video not found", file=p)
    cap = cv2.VideoCapture(str(p))
    try:
        ok, img = cap.read() if cap.isOpened() else (False, None)
        if not ok or img is None:
            raise PoseopsError("video cannot be decoded (no frame could be read)", file=p)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = img.shape[:2]
    finally:
        cap.release()
    if n <= 0:
        n = sum(1 for _ in iter_frames(p))
    return n, w, h


def iter_frames(path: str | Path, wanted: Iterable[int] | None = None):
    """Yield (frame_index, BGR uint8 array of shape (H, W, 3)) reading the video sequentially."""
    import cv2

    want = None if wanted is None else set(int(f) for f in wanted)
    last = max(want) if want else None
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PoseopsError("video cannot be decoded", file=path)
    try:
        i = 0
        while True:
            if last is not None and i > last:
                break
            ok, img = cap.read()
            if not ok:
                break
            if want is None or i in want:
                yield i, img
            i += 1
    finally:
        cap.release()


def appearance(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Downsampled grayscale frame as a flat float32 vector in [0, 1] (length size[0]*size[1])."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    small = cv2.resize(gray, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).ravel() / 255.0


def video_features(
    path: str | Path, size: Sequence[int], frames: Iterable[int] | None = None, step: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Appearance features of a video's frames: (frame indices (n,), features (n, w*h))."""
    idx, feats = [], []
    want = None if frames is None else sorted(set(int(f) for f in frames))
    for i, img in iter_frames(path, want):
        if want is None and i % max(step, 1):
            continue
        idx.append(i)
        feats.append(appearance(img, size))
    if not idx:
        raise PoseopsError("video cannot be decoded (no frame could be read)", file=path)
    if want is not None and len(idx) < len(want):
        missing = sorted(set(want) - set(idx))[:5]
        raise PoseopsError(f"frames {missing} are beyond the end of the video", file=path)
    return np.asarray(idx, dtype=int), np.vstack(feats)


def write_frame_pngs(
    video: str | Path, frames: Sequence[int], folder: Path, width: int, prefix: str = ""
) -> list[Path]:
    """Write the given frames of a video as DLC-named PNGs into ``folder`` (atomic per file);
    ``prefix`` goes before DLC's name (a flat Lightning Pose folder: ``<video>_imgNNNN.png``)."""
    import cv2

    from poseops.core.fileio import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in iter_frames(video, frames):
        target = folder / f"{prefix}{frame_image_name(i, width)}"
        with atomic_path(target) as tmp:
            ok, buf = cv2.imencode(".png", img)
            if not ok:
                raise PoseopsError(f"could not encode frame {i} as PNG", file=video)
            tmp.write_bytes(buf.tobytes())
        out.append(target)
    if len(out) < len(set(frames)):
        raise PoseopsError("some frames could not be read", file=video)
    return out


# ---------------------------------------------------------------- selection science
def allocate_quotas(available: dict[str, int], total: int) -> dict[str, int]:
    """Condition-balanced quotas: equal shares of ``total`` (remainder to the first keys in sorted
    order), capped by what each condition has; a capped condition's unused share is re-divided among
    the others (water filling). Sum = min(total, sum(available))."""
    keys = sorted(available, key=str)
    quota = {k: 0 for k in keys}
    remaining = min(int(total), sum(int(available[k]) for k in keys))
    open_keys = [k for k in keys if available[k] > 0]
    while remaining > 0 and open_keys:
        share, extra = divmod(remaining, len(open_keys))
        for j, k in enumerate(open_keys):
            give = min(share + (1 if j < extra else 0), available[k] - quota[k])
            quota[k] += give
            remaining -= give
        open_keys = [k for k in open_keys if quota[k] < available[k]]
    return quota


def kmeans_pick(features: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` diverse rows: k-means with n clusters (seeded), then per cluster the row nearest
    its centre. Returns (row positions (n,), cluster id of each picked row (n,)), ordered by cluster.
    With n >= rows, every row is picked (cluster = its position)."""
    m = len(features)
    if n <= 0 or m == 0:
        return np.empty(0, int), np.empty(0, int)
    if n >= m:
        return np.arange(m), np.arange(m)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n, random_state=seed, n_init=10).fit(features)
    picks, clusters = [], []
    d = ((features - km.cluster_centers_[km.labels_]) ** 2).sum(axis=1)
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:  # empty cluster (duplicate points): skip
            continue
        picks.append(members[np.argmin(d[members])])
        clusters.append(c)
    picks_a = np.asarray(picks, int)
    if len(picks_a) < n:  # fill from unpicked rows, farthest from what is picked
        rest = np.setdiff1d(np.arange(m), picks_a)
        extra = rest[: n - len(picks_a)]
        picks_a = np.concatenate([picks_a, extra])
        clusters += [-1] * len(extra)
    return picks_a, np.asarray(clusters, int)


def balanced_select(
    candidates: pd.DataFrame, features: np.ndarray, total: int, seed: int, by: str | None
) -> pd.DataFrame:
    """Diversity sampling with per-stratum quotas.

    candidates: one row per frame, aligned with ``features`` (n, d); column ``by`` (e.g. condition).
    Returns the picked rows (original columns + ``cluster`` = k-means cluster within the stratum,
    ``quota`` = that stratum's quota), sorted by video and frame.
    """
    if len(candidates) != len(features):
        raise ValueError("candidates and features must align")
    cand = candidates.reset_index(drop=True)
    groups = {"all": np.arange(len(cand))} if not by else {
        str(k): np.flatnonzero((cand[by].astype(str) == str(k)).to_numpy())
        for k in cand[by].astype(str).unique()
    }
    quotas = allocate_quotas({k: len(v) for k, v in groups.items()}, total)
    parts = []
    for k, rows in groups.items():
        pos, clusters = kmeans_pick(features[rows], quotas[k], seed)
        part = cand.iloc[rows[pos]].copy()
        part[CLUSTER] = clusters
        part["quota"] = quotas[k]
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else cand.iloc[:0].assign(cluster=0, quota=0)
    return out.sort_values([S.VIDEO, S.FRAME]).reset_index(drop=True)


def find_video(video: str, config: dict, project: Path, extra_dirs: Sequence[Path] = ()) -> Path:
    """Path of a video by stem: <project>/videos first (a moved project keeps stale absolute
    paths in video_sets), then config video_sets, then extra_dirs."""
    for f in _videos_in(Path(project) / "videos"):
        if f.stem == video:
            return f
    for v in config.get("video_sets") or {}:
        if Path(v).stem == video and Path(v).is_file():
            return Path(v)
    for d in extra_dirs:
        for f in _videos_in(Path(d)):
            if f.stem == video:
                return f
    raise PoseopsError(f"video {video!r} not found (config video_sets, {project / 'videos'})")


def _videos_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []


def rmse(x: np.ndarray) -> float:
    """True root-mean-square of errors (NaN ignored); DLC's 'rmse' is the plain mean instead."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x**2))) if len(x) else np.nan
