"""`poseops extract`: pick frames to label from videos, condition-balanced and appearance-diverse.

k-means on downsampled grayscale frames (as DLC's ``extract_frames(algo="kmeans")``), with a quota
per condition (from the metadata CSV) so every condition gets its share; writes the frames as
``labeled-data/<video>/imgNNNN.png`` (DLC's naming), a manifest and a coverage table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.refine import ExtractParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.metadata import read_metadata
from poseops.refine import common as R

log = logging.getLogger(__name__)

COVERAGE_COLUMNS = ["stratum_type", "stratum", "n_frames", "n_videos", "share"]


# ---------------------------------------------------------------- pure
def select_frames(
    candidates: pd.DataFrame, features: np.ndarray, n_frames: int, seed: int, balance_by: str | None
) -> pd.DataFrame:
    """Frames to label: per-``balance_by`` quotas, k-means diversity within each stratum.

    candidates: one row per frame (video, frame, + metadata) aligned with features (n, d).
    Returns the picked rows + ``cluster``, ``quota``.
    """
    if balance_by:
        S.require_columns(candidates, [balance_by], "extract candidates")
    return R.balanced_select(candidates, features, n_frames, seed, balance_by)


def coverage_table(selected: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Frames (and videos) per value of each column in ``by``: columns COVERAGE_COLUMNS.
    ``share`` = n_frames / all selected frames."""
    rows = []
    total = max(len(selected), 1)
    for col in [c for c in by if c in selected.columns]:
        g = selected.groupby(selected[col].astype(str))
        for value, part in g:
            rows.append((col, value, len(part), part[S.VIDEO].nunique(), len(part) / total))
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)


# ---------------------------------------------------------------- edges
def gather_candidates(
    project: Path, videos: list[Path], size: list[int], step: int, skip_labeled: bool
) -> tuple[pd.DataFrame, np.ndarray]:
    """(candidates: video, frame, video_path, n_video_frames; features (n, w*h)) over all videos."""
    frames, feats = [], []
    for vp in videos:
        n, _, _ = R.probe_video(vp)
        idx, f = R.video_features(vp, size, step=step)
        keep = np.ones(len(idx), bool)
        if skip_labeled:
            done = R.labeled_frames(project, vp.stem)
            keep = ~np.isin(idx, list(done))
        frames.append(
            pd.DataFrame(
                {S.VIDEO: vp.stem, S.FRAME: idx[keep], "video_path": str(vp), "n_video_frames": n}
            )
        )
        feats.append(f[keep])
        log.info("extract: %s: %d candidate frames", vp.name, int(keep.sum()))
    return pd.concat(frames, ignore_index=True), np.vstack(feats)


def extract_frames(
    params: ExtractParams, project: str | Path, metadata: str | Path, videos: list[str] | None = None
) -> pd.DataFrame:
    """Pick frames, write PNGs + manifest + coverage. Returns the manifest (one row per frame).

    ``videos``: video files or names (default ``params.videos``, else the config's video_sets)."""
    from poseops.core.fileio import write_csv

    project = Path(project)
    cfg = R.read_config(project)
    names = videos or params.videos
    if names:
        paths = [Path(v) if Path(v).is_file() else R.find_video(Path(v).stem, cfg, project)
                 for v in names]
    else:
        paths = [R.find_video(Path(v).stem, cfg, project) for v in cfg.get("video_sets") or {}]
    if not paths:
        raise PoseopsError("no videos given and config video_sets is empty", file=project)
    meta = read_metadata(metadata, required=[S.VIDEO])
    cand, feats = gather_candidates(project, paths, params.resize, params.step, params.skip_labeled)
    cand = R.attach_metadata(cand, meta, [params.balance_by] if params.balance_by else [], metadata)
    chosen = select_frames(cand, feats, params.n_frames, params.seed, params.balance_by)
    images = []
    for video, part in chosen.groupby(S.VIDEO, sort=True):
        folder = project / "labeled-data" / str(video)
        width = R.folder_name_width(folder) or R.dlc_name_width(int(part["n_video_frames"].iloc[0]))
        if params.write_frames:
            R.write_frame_pngs(part["video_path"].iloc[0], part[S.FRAME].tolist(), folder, width)
        images += [(video, f, R.image_path(str(video), f, width)) for f in part[S.FRAME]]
    img = pd.DataFrame(images, columns=[S.VIDEO, S.FRAME, S.IMAGE])
    manifest = chosen.merge(img, on=[S.VIDEO, S.FRAME]).assign(reason="kmeans")
    first = [S.IMAGE, S.VIDEO, S.FRAME, R.CLUSTER, "quota", "reason"]
    manifest = manifest[first + [c for c in manifest.columns if c not in first]]
    write_csv(manifest, params.manifest)
    cov = coverage_table(manifest, [params.balance_by or S.CONDITION, S.ANIMAL, S.SESSION, S.VIDEO])
    write_csv(cov, params.coverage)
    log.info("extract: %d frames from %d videos -> %s", len(manifest), len(paths), params.manifest)
    return manifest
