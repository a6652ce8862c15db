"""`poseops hardest`: the labeled frames with the highest error, for a relabeling check.

Labels can be wrong too: a frame where the model is far from the label is either a hard frame or
a wrong label. From evaluate's errors table (one row per labeled image and bodypart), each frame
is scored by the mean error of the chosen bodyparts (``hardest.bodyparts``; empty: all) over its
labeled keypoints, optionally only frames of some conditions / splits; the ``n_frames`` highest
are written in DeepLabCut's refine layout, as ``poseops outliers`` does: the model's predictions
as ``labeled-data/<video>/machinelabels-iter<N>.h5`` beside the frames (which are already there,
with their labels in ``CollectedData_<scorer>.h5``) and a manifest (``hardest.manifest``) naming
each frame's error, worst bodypart and split. Open them in DLC's refine GUI, fix the labels that
are wrong, save. Single-animal DLC projects.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.refine import HardestParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine import common as R

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [S.IMAGE, S.VIDEO, S.FRAME, S.SPLIT, "score_px", "max_error_px",
                    "worst_bodypart", "n_keypoints", "rank"]


def _check_names(errors: pd.DataFrame, col: str, wanted: list[str], what: str,
                 source: str | Path) -> None:
    if not wanted:
        return
    if col not in errors.columns:
        raise PoseopsError(f"hardest.{what}: the errors table has no {col!r} column", file=source)
    have = set(errors[col].dropna().astype(str))
    for w in wanted:
        if w not in have:
            kw = {"bodypart": w} if col == S.BODYPART else {}
            msg = f"hardest.{what}: {'' if kw else repr(w) + ' '}not in the errors table"
            raise PoseopsError(f"{msg} (have {sorted(have)})", file=source, **kw)


def hardest_frames(errors: pd.DataFrame, n: int, bodyparts: list[str] | None = None,
                   conditions: list[str] | None = None, splits: list[str] | None = None,
                   source: str | Path = "errors table") -> pd.DataFrame:
    """The ``n`` labeled frames with the highest mean error over ``bodyparts`` (columns
    MANIFEST_COLUMNS + the frame's condition when the table has one), highest first; ties by
    image. Only keypoints with a finite error count (a label and a prediction)."""
    if S.INDIVIDUAL in errors.columns:
        raise PoseopsError("poseops hardest is for single-animal projects (this errors table has"
                           " individuals)", file=source)
    S.require_columns(errors, [S.IMAGE, S.BODYPART, S.VIDEO, S.ERROR_PX], str(source))
    bodyparts, conditions, splits = bodyparts or [], conditions or [], splits or []
    _check_names(errors, S.BODYPART, bodyparts, "bodyparts", source)
    _check_names(errors, S.CONDITION, conditions, "conditions", source)
    _check_names(errors, S.SPLIT, splits, "splits", source)
    e = errors[np.isfinite(errors[S.ERROR_PX].to_numpy(float))]
    if bodyparts:
        e = e[e[S.BODYPART].astype(str).isin(bodyparts)]
    if conditions:
        e = e[e[S.CONDITION].astype(str).isin(conditions)]
    if splits:
        e = e[e[S.SPLIT].astype(str).isin(splits)]
    if e.empty:
        raise PoseopsError("no labeled keypoint with a prediction matches the bodyparts/"
                           "conditions/splits asked for", file=source)
    keep = [c for c in (S.VIDEO, S.SPLIT, S.CONDITION) if c in e.columns]
    g = e.groupby(S.IMAGE, sort=True)
    worst = e.loc[g[S.ERROR_PX].idxmax(), [S.IMAGE, S.BODYPART, S.ERROR_PX]].set_index(S.IMAGE)
    out = g.agg(score_px=(S.ERROR_PX, "mean"), n_keypoints=(S.ERROR_PX, "size"),
                **{c: (c, "first") for c in keep})
    out["max_error_px"] = worst[S.ERROR_PX]
    out["worst_bodypart"] = worst[S.BODYPART]
    out = out.reset_index().sort_values(["score_px", S.IMAGE], ascending=[False, True])
    out = out.head(int(n)).reset_index(drop=True)
    out[S.FRAME] = [R.frame_of(str(i)) for i in out[S.IMAGE]]
    out["rank"] = np.arange(1, len(out) + 1)
    if S.SPLIT not in out.columns:
        out[S.SPLIT] = ""
    cols = MANIFEST_COLUMNS + ([S.CONDITION] if S.CONDITION in out.columns else [])
    return out[cols]


def prediction_rows(errors: pd.DataFrame, images: list[str]) -> pd.DataFrame:
    """The model's predictions of ``images`` as outliers' predictions table (video, frame,
    bodypart, x, y, likelihood), every bodypart (the annotator sees the whole pose)."""
    S.require_columns(errors, ["pred_x", "pred_y", S.LIKELIHOOD], "errors table")
    e = errors[errors[S.IMAGE].isin(images)]
    return pd.DataFrame({
        S.VIDEO: e[S.VIDEO].astype(str).to_numpy(),
        S.FRAME: [R.frame_of(str(i)) for i in e[S.IMAGE]],
        S.BODYPART: e[S.BODYPART].to_numpy(), S.X: e["pred_x"].to_numpy(float),
        S.Y: e["pred_y"].to_numpy(float), S.LIKELIHOOD: e[S.LIKELIHOOD].to_numpy(float),
    })


def export_hardest(params: HardestParams, project: str | Path) -> pd.DataFrame:
    """Read the errors table, pick the hardest frames, write machinelabels + the manifest.
    Returns the manifest."""
    from poseops.core.fileio import write_csv
    from poseops.dlc.files import is_multianimal
    from poseops.refine.outliers import machinelabels_frame, write_machinelabels

    project = Path(project)
    path = Path(params.errors)
    if not path.is_file():
        raise PoseopsError("errors table not found (run `poseops evaluate` first)", file=path)
    errors = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    cfg = R.read_config(project)
    if is_multianimal(cfg):
        raise PoseopsError("poseops hardest is for single-animal projects", file=project)
    manifest = hardest_frames(errors, params.n_frames, params.bodyparts, params.conditions,
                              params.splits, path)
    iteration = int(cfg.get("iteration", 0))
    manifest = manifest.assign(iteration=iteration)
    if params.write_frames:
        preds = prediction_rows(errors, manifest[S.IMAGE].tolist())
        for video, part in manifest.groupby(S.VIDEO, sort=True):
            folder = project / "labeled-data" / str(video)
            for img in part[S.IMAGE]:
                if not (project / img).is_file():
                    raise PoseopsError("labeled image of the errors table is missing",
                                       file=project / img)
            width = len(Path(str(part[S.IMAGE].iloc[0])).stem) - len("img")
            ml = machinelabels_frame(preds, str(video), part[S.FRAME].astype(int).tolist(),
                                     width, "machine", list(cfg["bodyparts"]))
            write_machinelabels(ml, folder, iteration)
    write_csv(manifest, params.manifest)
    log.info("hardest: %d frames (mean error %.1f-%.1f px) -> %s", len(manifest),
             manifest["score_px"].min(), manifest["score_px"].max(), params.manifest)
    return manifest
