"""Seed ensembles: how much N models of one config (``ablation.seeds``, or ``train.seed`` varied)
disagree about a keypoint. Pure functions over predictions tables.

Disagreement of a keypoint = the variance of its predicted position across the members: the mean
squared distance of the members' predictions to their mean position, ``var_x + var_y``
(population variance, ddof 0, as Lightning Pose's ensemble variance), in px²; ``sd_px`` is its
square root (px). A frame's score is its largest keypoint disagreement (``max_sd_px``) and the
mean over its keypoints: a model's likelihood is a poorly calibrated outlier signal, the spread
of independently trained models is a better one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

MEMBER = "member"


def _keys(preds: pd.DataFrame) -> list[str]:
    if S.ASSEMBLY in preds.columns:
        raise PoseopsError("ensemble disagreement needs single-animal (or tracked) predictions: "
                           "multi-animal assemblies are unordered, so members cannot be paired")
    if S.IMAGE in preds.columns:
        return [S.IMAGE, S.BODYPART]
    S.require_columns(preds, [S.VIDEO, S.FRAME, S.BODYPART], "predictions")
    return [S.VIDEO, S.FRAME, S.BODYPART]


def stack_members(members: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table of every member's predictions with a ``member`` column."""
    if len(members) < 2:
        raise PoseopsError(f"an ensemble needs >= 2 members, got {len(members)}")
    return pd.concat([df.assign(**{MEMBER: str(name)}) for name, df in members.items()],
                     ignore_index=True)


def ensemble_disagreement(preds: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per keypoint ((image, bodypart) or (video, frame, bodypart)): ``n_members`` (members with
    a finite prediction), ``mean_x``, ``mean_y``, ``var_x``, ``var_y``, ``variance_px2`` (var_x +
    var_y) and ``sd_px``; NaN below two members. ``preds``: member -> predictions table, or one
    table with a ``member`` column; each member predicts each keypoint at most once."""
    long = stack_members(preds) if isinstance(preds, Mapping) else preds
    S.require_columns(long, [MEMBER, S.X, S.Y], "predictions")
    keys = _keys(long)
    dup = long.duplicated([*keys, MEMBER])
    if dup.any():
        row = long[dup].iloc[0]
        raise PoseopsError(f"member {row[MEMBER]!r} predicts a keypoint twice",
                           row=str(row[keys[0]]), bodypart=row[S.BODYPART])
    ok = np.isfinite(long[S.X].to_numpy(float)) & np.isfinite(long[S.Y].to_numpy(float))
    g = long[ok].groupby(keys, sort=True)
    out = g.agg(n_members=(MEMBER, "size"), mean_x=(S.X, "mean"), mean_y=(S.Y, "mean"))
    out["var_x"] = g[S.X].var(ddof=0)
    out["var_y"] = g[S.Y].var(ddof=0)
    few = out["n_members"] < 2
    out.loc[few, ["var_x", "var_y"]] = np.nan
    out["variance_px2"] = out["var_x"] + out["var_y"]
    out["sd_px"] = np.sqrt(out["variance_px2"])
    return out.reset_index()


def frame_disagreement(disagreement: pd.DataFrame) -> pd.DataFrame:
    """Per frame (image, or video + frame): ``max_sd_px`` and ``mean_sd_px`` over its keypoints
    (the outlier score: a frame where the members disagree about any keypoint)."""
    keys = [k for k in (S.IMAGE, S.VIDEO, S.FRAME) if k in disagreement.columns]
    keys = [S.IMAGE] if S.IMAGE in keys else keys
    g = disagreement.groupby(keys, sort=True)["sd_px"]
    return pd.DataFrame({"max_sd_px": g.max(), "mean_sd_px": g.mean()}).reset_index()
