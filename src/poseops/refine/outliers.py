"""`poseops outliers`: frames the model struggles with, picked for relabeling.

Candidates (per video frame, from ``poseops analyze`` predictions):
- ``low_likelihood``: any bodypart (or the mean over bodyparts) below ``p_bound``;
- ``jump``: a bodypart moved more than ``epsilon`` px since the previous frame;
- ``uncertain``: among the ``uncertain_fraction`` of frames with the lowest mean likelihood;
- ``disagreement`` (seed ensemble, ``ensemble``: other seeds' predictions of the same frames): the
  largest per-keypoint SD of the members' positions (``ensemble_sd_px`` in the manifest,
  :mod:`poseops.refine.ensemble`) above ``ensemble_sd_px``.
Then diversity sampling within the candidates (k-means on appearance) with per-condition quotas.
The picked frames go to ``labeled-data/<video>/`` with the model's predictions as starting labels,
DLC's refine convention (``machinelabels-iter<N>.h5``, N = config iteration), plus a manifest
saying why each frame was picked. A Lightning Pose folder (no config.yaml) gets them in its own
convention: PNGs in ``labeled-data/<video>/`` (or ``labeled-data/<video>_imgNNNN.png`` in the flat
layout) and ``machinelabels-iter<N>.csv`` with the header of the folder's labels CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.refine import LIKELIHOOD_MODES, LikelihoodMode, OutliersParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.metadata import read_metadata
from poseops.refine import common as R
from poseops.refine.ensemble import ensemble_disagreement, frame_disagreement

log = logging.getLogger(__name__)

SD = "ensemble_sd_px"  # a frame's largest per-keypoint SD across the ensemble's members (px)


def _low_likelihood(f: pd.DataFrame, t: Mapping[str, Any]) -> pd.Series:
    col = "min_likelihood" if t["likelihood_mode"] == "any" else "mean_likelihood"
    return f[col] < t["p_bound"]


def _jump(f: pd.DataFrame, t: Mapping[str, Any]) -> pd.Series:
    return f["jump_px"] > t["epsilon"]


def _uncertain(f: pd.DataFrame, t: Mapping[str, Any]) -> pd.Series:
    rank = f.groupby(S.VIDEO)["mean_likelihood"].rank(method="first")
    n_video = f.groupby(S.VIDEO)[S.FRAME].transform("size")
    return rank <= np.ceil(t["uncertain_fraction"] * n_video)


def _disagreement(f: pd.DataFrame, t: Mapping[str, Any]) -> pd.Series:
    return f[SD] > t["ensemble_sd_px"]  # NaN (no ensemble, < 2 members): never


# the rule registry: name -> frame flags from the frame scores and the thresholds
RULE_REGISTRY: dict[str, Callable[[pd.DataFrame, Mapping[str, Any]], pd.Series]] = {
    "low_likelihood": _low_likelihood,
    "jump": _jump,
    "uncertain": _uncertain,
    "disagreement": _disagreement,
}
RULES = tuple(RULE_REGISTRY)
FRAME_COLUMNS = [S.VIDEO, S.FRAME, "mean_likelihood", "min_likelihood", "jump_px", SD, *RULES,
                 "rule"]


# ---------------------------------------------------------------- pure
def frame_scores(preds: pd.DataFrame) -> pd.DataFrame:
    """Per (video, frame): mean/min likelihood over bodyparts and the largest bodypart displacement
    since the previous frame of the same video (``jump_px``; NaN for a video's first frame or a
    gap in frame numbers).

    preds: one row per (video, frame, bodypart) with x, y, likelihood. Multi-animal predictions
    (``poseops analyze`` on a maDLC model: an ``assembly`` column, untracked animals) are scored
    over every animal of the frame (:func:`frame_scores_multianimal`).
    """
    if S.ASSEMBLY in preds.columns:
        return frame_scores_multianimal(preds)
    S.require_columns(preds, [S.VIDEO, S.FRAME, S.BODYPART, S.X, S.Y, S.LIKELIHOOD], "predictions")
    p = preds.sort_values([S.VIDEO, S.BODYPART, S.FRAME])
    g = p.groupby([S.VIDEO, S.BODYPART], sort=False)
    step = np.hypot(g[S.X].diff(), g[S.Y].diff())
    consecutive = g[S.FRAME].diff() == 1
    p = p.assign(_jump=step.where(consecutive))
    out = p.groupby([S.VIDEO, S.FRAME]).agg(
        mean_likelihood=(S.LIKELIHOOD, "mean"),
        min_likelihood=(S.LIKELIHOOD, "min"),
        jump_px=("_jump", "max"),
    )
    return out.reset_index()


def frame_scores_multianimal(preds: pd.DataFrame) -> pd.DataFrame:
    """:func:`frame_scores` for untracked multi-animal predictions (one row per (video, frame,
    assembly, bodypart); assembly -1 = unique bodyparts). Likelihoods over all predicted
    keypoints of the frame (every animal; NaN = empty assembly slot, left out). Assemblies
    carry no identity between frames, so ``jump_px`` is, per keypoint, the distance to the
    nearest same-bodypart prediction of the previous frame (any animal), maxed over the frame:
    a keypoint with no counterpart nearby jumped, whichever animal it belongs to."""
    S.require_columns(preds, [S.VIDEO, S.FRAME, S.ASSEMBLY, S.BODYPART, S.X, S.Y, S.LIKELIHOOD],
                      "predictions")
    ok = preds[S.X].notna() & preds[S.Y].notna() & (preds[S.LIKELIHOOD] >= 0)
    out = preds.assign(_lik=preds[S.LIKELIHOOD].where(ok)).groupby([S.VIDEO, S.FRAME]).agg(
        mean_likelihood=("_lik", "mean"), min_likelihood=("_lik", "min"))
    jumps: dict[tuple, float] = {}
    p = preds[ok]
    for (video, _bp), part in p.groupby([S.VIDEO, S.BODYPART], sort=False):
        by_frame = {int(f): g[[S.X, S.Y]].to_numpy(float) for f, g in part.groupby(S.FRAME)}
        for f, xy in by_frame.items():
            prev = by_frame.get(f - 1)
            if prev is None:
                continue
            d = np.hypot(xy[:, None, 0] - prev[None, :, 0], xy[:, None, 1] - prev[None, :, 1])
            key = (video, f)
            jumps[key] = max(jumps.get(key, -np.inf), float(d.min(axis=1).max()))
    out = out.reset_index()
    out["jump_px"] = [jumps.get((v, int(f)), np.nan)
                      for v, f in zip(out[S.VIDEO], out[S.FRAME], strict=True)]
    return out


Members = Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame]


def _keyed(preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions keyed by (video as str, frame as int, bodypart as str): a CSV member and a
    parquet one pair up."""
    return preds.drop(columns=[S.IMAGE], errors="ignore").assign(**{
        S.VIDEO: preds[S.VIDEO].astype(str), S.FRAME: preds[S.FRAME].astype(int),
        S.BODYPART: preds[S.BODYPART].astype(str)})


def ensemble_frame_sd(preds: pd.DataFrame, members: Members) -> pd.DataFrame:
    """Per (video, frame) of ``preds``: ``ensemble_sd_px``, the largest SD of a keypoint's
    position across the members (``preds`` and ``members``: other seeds' predictions of the same
    frames, a list or name (file) -> table), over the bodyparts and frames of ``preds`` only."""
    named = dict(members) if isinstance(members, Mapping) else {
        f"member {k + 1}": m for k, m in enumerate(members)}
    tables = {n: _keyed(m) for n, m in ({"predictions": preds} | named).items()}
    keys = tables["predictions"][[S.VIDEO, S.FRAME, S.BODYPART]].drop_duplicates()
    tables = {n: m.merge(keys, on=list(keys.columns)) for n, m in tables.items()}
    fd = frame_disagreement(ensemble_disagreement(tables))
    return fd[[S.VIDEO, S.FRAME, "max_sd_px"]].rename(columns={"max_sd_px": SD})


def candidate_frames(
    preds: pd.DataFrame,
    p_bound: float,
    epsilon: float,
    uncertain_fraction: float,
    likelihood_mode: LikelihoodMode = "any",
    ensemble: Members = (),
    ensemble_sd_px: float = np.inf,
) -> pd.DataFrame:
    """Every frame with its scores and rule flags (columns FRAME_COLUMNS); ``rule`` joins the rules
    that fired with '+' ('' = not a candidate). ``uncertain`` marks the ceil(fraction * n) frames of
    each video with the lowest mean likelihood; ``disagreement`` the frames whose
    ``ensemble_sd_px`` (:func:`ensemble_frame_sd` over ``preds`` and the ``ensemble`` members'
    predictions of the same frames; NaN without members) exceeds ``ensemble_sd_px``."""
    if likelihood_mode not in LIKELIHOOD_MODES:
        raise PoseopsError(f"outliers.likelihood_mode must be 'any' or 'mean', not {likelihood_mode!r}")
    f = frame_scores(preds)
    f[SD] = np.nan
    if len(ensemble):
        sd = ensemble_frame_sd(preds, ensemble).set_index([S.VIDEO, S.FRAME])[SD]
        at = pd.MultiIndex.from_arrays([f[S.VIDEO].astype(str), f[S.FRAME].astype(int)])
        f[SD] = sd.reindex(at).to_numpy()
    t = {"p_bound": p_bound, "epsilon": epsilon, "uncertain_fraction": uncertain_fraction,
         "likelihood_mode": likelihood_mode, "ensemble_sd_px": ensemble_sd_px}
    for name, rule in RULE_REGISTRY.items():
        f[name] = rule(f, t).to_numpy(bool)
    flags = f[list(RULES)].to_numpy()
    f["rule"] = ["+".join(r for r, on in zip(RULES, row, strict=True) if on) for row in flags]
    return f[FRAME_COLUMNS]


def select_outliers(
    candidates: pd.DataFrame, features: np.ndarray, n_frames: int, seed: int, balance_by: str | None
) -> pd.DataFrame:
    """Diversity sampling (k-means on appearance) within candidate frames, per-``balance_by``
    quotas. candidates and features (n, d) align row by row; returns picked rows + cluster, quota."""
    if balance_by:
        S.require_columns(candidates, [balance_by], "outlier candidates")
    return R.balanced_select(candidates, features, n_frames, seed, balance_by)


def machinelabels_frame(
    preds: pd.DataFrame, video: str, frames: list[int], width: int, scorer: str, bodyparts: list[str]
) -> pd.DataFrame:
    """DLC's machinelabels table: index (labeled-data, video, imgNNNN.png), columns
    (scorer, bodyparts, coords) with coords x, y, likelihood, bodyparts in config order."""
    p = preds[(preds[S.VIDEO] == video) & preds[S.FRAME].isin(frames)]
    wide = p.pivot_table(index=S.FRAME, columns=S.BODYPART, values=[S.X, S.Y, S.LIKELIHOOD])
    cols = pd.MultiIndex.from_product(
        [[scorer], bodyparts, [S.X, S.Y, S.LIKELIHOOD]], names=["scorer", "bodyparts", "coords"]
    )
    data = np.full((len(frames), len(cols)), np.nan)
    for j, (_, bp, coord) in enumerate(cols):
        if (coord, bp) in wide.columns:
            data[:, j] = wide[(coord, bp)].reindex(frames).to_numpy()
    index = pd.MultiIndex.from_tuples(
        [("labeled-data", video, R.frame_image_name(f, width)) for f in frames]
    )
    return pd.DataFrame(data, index=index, columns=cols)


def machinelabels_frame_multianimal(
    preds: pd.DataFrame, video: str, frames: list[int], width: int, scorer: str,
    individuals: list[str], bodyparts: list[str], unique_bodyparts: list[str],
) -> pd.DataFrame:
    """DLC's multi-animal machinelabels table (columns scorer, individuals, bodyparts, coords):
    untracked assembly k as the k-th config individual (a starting point the annotator
    corrects in the GUI; identities are not tracked), the unique bodyparts (assembly -1) under
    ``single``; empty slots NaN."""
    p = preds[(preds[S.VIDEO] == video) & preds[S.FRAME].isin(frames)]
    p = p[p[S.LIKELIHOOD] >= 0]  # DLC: score < 0 is "not predicted"
    names = {k: ind for k, ind in enumerate(individuals)} | {-1: S.SINGLE}
    p = p.assign(_ind=p[S.ASSEMBLY].astype(int).map(names)).dropna(subset=["_ind"])
    tuples = [(scorer, i, b, c) for i in individuals for b in bodyparts
              for c in (S.X, S.Y, S.LIKELIHOOD)]
    tuples += [(scorer, S.SINGLE, b, c) for b in unique_bodyparts
               for c in (S.X, S.Y, S.LIKELIHOOD)]
    cols = pd.MultiIndex.from_tuples(tuples, names=["scorer", "individuals", "bodyparts", "coords"])
    wide = p.pivot_table(index=S.FRAME, columns=["_ind", S.BODYPART],
                         values=[S.X, S.Y, S.LIKELIHOOD], dropna=False)
    data = np.full((len(frames), len(cols)), np.nan)
    for j, (_, ind, bp, coord) in enumerate(cols):
        if (coord, ind, bp) in wide.columns:
            data[:, j] = wide[(coord, ind, bp)].reindex(frames).to_numpy()
    index = pd.MultiIndex.from_tuples(
        [("labeled-data", video, R.frame_image_name(f, width)) for f in frames]
    )
    return pd.DataFrame(data, index=index, columns=cols)


def target_predictions(
    preds: pd.DataFrame, meta: pd.DataFrame, bodyparts: list[str], conditions: list[str],
    ppath: Path, metadata: str | Path,
) -> pd.DataFrame:
    """Targeted refinement: only the predictions of ``bodyparts`` (every rule then scores those
    bodyparts only) in the videos of ``conditions`` (so the quotas go to those conditions only);
    empty lists keep everything. A name that is not there is an error naming it."""
    if bodyparts:
        have = set(preds[S.BODYPART].astype(str))
        for bp in bodyparts:
            if bp not in have:
                raise PoseopsError(f"outliers.bodyparts: not in the predictions (have "
                                   f"{sorted(have)})", file=ppath, bodypart=bp)
        preds = preds[preds[S.BODYPART].astype(str).isin(bodyparts)]
    if conditions:
        S.require_columns(meta, [S.CONDITION], str(metadata))
        have = set(meta[S.CONDITION].astype(str))
        for c in conditions:
            if c not in have:
                raise PoseopsError(f"outliers.conditions: condition {c!r} is not in the metadata"
                                   f" (have {sorted(have)})", file=metadata)
        videos = set(meta.loc[meta[S.CONDITION].astype(str).isin(conditions), S.VIDEO].astype(str))
        preds = preds[preds[S.VIDEO].astype(str).isin(videos)]
        if preds.empty:
            raise PoseopsError(f"no analyzed video of condition(s) {conditions} (analyze one"
                               " first)", file=ppath)
    return preds


def with_pending(manifest: pd.DataFrame, pending: Path) -> pd.DataFrame:
    """The manifest plus the frames a ``merge --skip-unrefined`` left (``pending``: rule
    ``pending``, their scores empty): the next merge takes them once they are relabeled."""
    if not pending.is_file():
        return manifest
    old = pd.read_csv(pending)
    old = old[~old[S.IMAGE].isin(manifest[S.IMAGE])].assign(rule="pending")
    if old.empty:
        return manifest
    log.info("outliers: %d frames still waiting for relabeling from %s", len(old), pending)
    return pd.concat([manifest, old.reindex(columns=manifest.columns)], ignore_index=True)


# ---------------------------------------------------------------- edges
def read_predictions(path: Path, missing: str) -> pd.DataFrame:
    """A tidy predictions table (parquet or CSV, ``poseops analyze``'s format); ``missing``: the
    error when the file is not there."""
    if not path.is_file():
        raise PoseopsError(missing, file=path)
    preds = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    S.require_columns(preds, [S.VIDEO, S.FRAME, S.BODYPART, S.X, S.Y, S.LIKELIHOOD], str(path))
    if S.INDIVIDUAL in preds.columns and S.ASSEMBLY not in preds.columns:
        # tracked multi-animal (analyze.track: true): scored and written like assemblies, the
        # k-th individual in DLC's order (the config's individuals) as assembly k
        from poseops.dlc.inference import assembly_slots

        ind = preds[S.INDIVIDUAL].astype(str)
        slot = assembly_slots(list(dict.fromkeys(ind)))
        preds = preds.drop(columns=S.INDIVIDUAL).assign(**{S.ASSEMBLY: ind.map(slot).to_numpy()})
    return preds


def _cover(df: pd.DataFrame) -> dict[str, set[int]]:
    return {str(v): set(g.astype(int)) for v, g in df.groupby(df[S.VIDEO].astype(str))[S.FRAME]}


def check_member(member: pd.DataFrame, preds: pd.DataFrame, mpath: Path, ppath: Path) -> None:
    """A seed-ensemble member predicts exactly the videos, frames and bodyparts of ``preds``;
    otherwise a one-line error naming the member's file and what differs."""
    have, want = _cover(member), _cover(preds)
    if set(have) != set(want):
        raise PoseopsError(f"outliers.ensemble: this member covers other videos than {ppath}: "
                           f"missing {sorted(set(want) - set(have))}, extra "
                           f"{sorted(set(have) - set(want))}", file=mpath)
    for v in sorted(want):
        missing, extra = sorted(want[v] - have[v]), sorted(have[v] - want[v])
        if missing or extra:
            raise PoseopsError(f"outliers.ensemble: this member covers other frames of video {v!r}"
                               f" than {ppath}: missing frames {missing[:10]}, extra frames "
                               f"{extra[:10]}{' ...' if max(len(missing), len(extra)) > 10 else ''}",
                               file=mpath)
    bp_have, bp_want = set(member[S.BODYPART].astype(str)), set(preds[S.BODYPART].astype(str))
    for bp in sorted(bp_want - bp_have):
        raise PoseopsError(f"outliers.ensemble: this member lacks a bodypart of {ppath}",
                           file=mpath, bodypart=bp)
    for bp in sorted(bp_have - bp_want):
        raise PoseopsError(f"outliers.ensemble: this member has a bodypart {ppath} lacks",
                           file=mpath, bodypart=bp)


def read_ensemble(paths: Sequence[str], preds: pd.DataFrame, ppath: Path) -> dict[str, pd.DataFrame]:
    """The ensemble's other members (file -> predictions), each checked by :func:`check_member`."""
    if paths and S.ASSEMBLY in preds.columns:
        raise PoseopsError("outliers.ensemble needs single-animal predictions: multi-animal "
                           "assemblies are unordered, so members cannot be paired", file=ppath)
    members: dict[str, pd.DataFrame] = {}
    for p in map(Path, paths):
        if p.resolve() == ppath.resolve() or str(p) in members:
            raise PoseopsError("outliers.ensemble lists this file twice (or it is "
                               "outliers.predictions, already a member)", file=p)
        members[str(p)] = read_predictions(p, "outliers.ensemble: member not found")
        check_member(members[str(p)], preds, p, ppath)
    return members


def write_machinelabels(df: pd.DataFrame, folder: Path, iteration: int) -> Path:
    """Write/extend ``machinelabels-iter<N>.h5`` (+ machinelabels.csv) as DLC does (atomic)."""
    from poseops.core.fileio import atomic_path, write_csv

    target = folder / f"machinelabels-iter{iteration}.h5"
    if target.is_file():
        old = pd.read_hdf(target, "df_with_missing")
        if old.columns.equals(df.columns):
            df = pd.concat([old, df])
            df = df[~df.index.duplicated(keep="last")].sort_index()
    with atomic_path(target) as tmp:
        df.to_hdf(tmp, key="df_with_missing", mode="w")
    write_csv(df, folder / "machinelabels.csv", index=True)
    return target


def pick_outliers(
    params: OutliersParams, project: str | Path, metadata: str | Path,
    videos_dir: str | Path | None = None, fmt: str = "dlc",
) -> pd.DataFrame:
    """Score frames, pick outliers, write frames + machinelabels + manifest. Returns the manifest.

    ``fmt="lightning-pose"``: a Lightning Pose folder (no config.yaml): the frames go where its
    user relabels them (:func:`write_lightning_pose_frames`)."""
    from poseops.core.fileio import write_csv

    project = Path(project)
    lp = fmt == "lightning-pose"
    cfg = {} if lp else R.read_config(project)
    flat = R.lightning_pose_flat(project) if lp else False
    ppath = Path(params.predictions)
    preds = read_predictions(ppath, "predictions not found (run `poseops analyze` first)")
    members = read_ensemble(params.ensemble, preds, ppath)
    meta = read_metadata(metadata, required=[S.VIDEO])
    all_preds = preds  # machinelabels keep every bodypart: the annotator corrects them all
    preds = target_predictions(preds, meta, params.bodyparts, params.conditions, ppath, metadata)
    scores = candidate_frames(preds, params.p_bound, params.epsilon, params.uncertain_fraction,
                              params.likelihood_mode, members, params.ensemble_sd_px)
    cand = scores[scores["rule"] != ""]
    done = {(v, f) for v in cand[S.VIDEO].unique() for f in (
        R.lightning_pose_frames(project, str(v), flat) if lp else R.labeled_frames(project, str(v)))}
    keep = [(v, f) not in done for v, f in zip(cand[S.VIDEO], cand[S.FRAME], strict=True)]
    cand = cand[np.asarray(keep, bool)].reset_index(drop=True)  # labeled frames: not re-picked
    log.info("outliers: %d candidate frames of %d", len(cand), len(scores))
    need = [params.balance_by] if params.balance_by else []
    cand = R.attach_metadata(cand, meta, need, metadata)
    extra = [Path(videos_dir)] if videos_dir else []
    if "video_path" in preds.columns:
        extra += sorted({Path(v).parent for v in preds["video_path"].dropna().unique()})
    paths = {v: R.find_video(v, cfg, project, extra) for v in cand[S.VIDEO].unique()}
    feats = np.zeros((len(cand), params.resize[0] * params.resize[1]), np.float32)
    for v, vp in paths.items():
        rows = np.flatnonzero(cand[S.VIDEO].to_numpy() == v)
        idx, f = R.video_features(vp, params.resize, frames=cand[S.FRAME].iloc[rows])
        pos = pd.Series(np.arange(len(idx)), index=idx)
        feats[rows] = f[pos.loc[cand[S.FRAME].iloc[rows]].to_numpy()]
    chosen = select_outliers(cand, feats, params.n_frames, params.seed, params.balance_by)
    iteration = R.lightning_pose_iteration(project) if lp else int(cfg.get("iteration", 0))
    images = []
    for v, part in chosen.groupby(S.VIDEO, sort=True):
        frames = part[S.FRAME].astype(int).tolist()
        if lp:
            names = write_lightning_pose_frames(all_preds, project, str(v), paths[v], frames, flat,
                                                iteration, params.write_frames)
        else:
            names = _write_dlc_frames(all_preds, project, cfg, str(v), paths[v], frames, iteration,
                                      params.write_frames)
        images += [(v, f, name) for f, name in zip(frames, names, strict=True)]
    img = pd.DataFrame(images, columns=[S.VIDEO, S.FRAME, S.IMAGE])
    manifest = chosen.merge(img, on=[S.VIDEO, S.FRAME]).assign(iteration=iteration)
    first = [S.IMAGE, S.VIDEO, S.FRAME, "rule", "mean_likelihood", "min_likelihood", "jump_px",
             SD, R.CLUSTER, "quota", "iteration"]
    manifest = manifest[first + [c for c in manifest.columns if c not in first]]
    manifest = with_pending(manifest, Path(params.pending))
    write_csv(manifest, params.manifest)
    write_csv(scores, Path(params.manifest).with_name("frame_scores.csv"))
    log.info("outliers: picked %d frames -> %s", len(manifest), params.manifest)
    return manifest


def _write_dlc_frames(preds: pd.DataFrame, project: Path, cfg: dict, video: str, path: Path,
                      frames: list[int], iteration: int, write: bool) -> list[str]:
    """DLC's refine convention: PNGs + machinelabels-iter<N>.h5 in labeled-data/<video>/."""
    from poseops.dlc.files import (
        config_individuals,
        config_multianimal_bodyparts,
        config_unique_bodyparts,
        is_multianimal,
    )

    folder = project / "labeled-data" / video
    n, _, _ = R.probe_video(path)
    width = R.folder_name_width(folder) or R.dlc_name_width(n)
    if write:
        R.write_frame_pngs(path, frames, folder, width)
        if is_multianimal(cfg):
            ml = machinelabels_frame_multianimal(
                preds, video, frames, width, _scorer(preds), config_individuals(cfg),
                config_multianimal_bodyparts(cfg), config_unique_bodyparts(cfg))
        else:
            ml = machinelabels_frame(preds, video, frames, width, _scorer(preds), cfg["bodyparts"])
        write_machinelabels(ml, folder, iteration)
    return [R.image_path(video, f, width) for f in frames]


def write_lightning_pose_frames(preds: pd.DataFrame, project: Path, video: str, path: Path,
                                frames: list[int], flat: bool, iteration: int,
                                write: bool = True) -> list[str]:
    """Lightning Pose's convention: PNGs in ``labeled-data/<video>/`` (sub-folder layout) or
    ``labeled-data/`` as ``<video>_imgNNNN.png`` (flat), and the model's predictions as starting
    labels in ``machinelabels-iter<N>.csv`` beside them, with the header of the project's labels
    CSV (its scorer, its bodyparts in its order, x and y) and the image paths as the project
    uses them. Relabel them and save as ``CollectedData_<scorer>.csv`` in that folder for
    ``poseops merge``. Returns the image paths."""
    from poseops.core.fileio import atomic_path
    from poseops.dlc.files import read_collected_data

    root = read_collected_data(R.lightning_pose_labels(project))
    n, _, _ = R.probe_video(path)
    folder = project / "labeled-data" / ("" if flat else video)
    width = (None if flat else R.folder_name_width(folder)) or R.dlc_name_width(n)
    names = [R.lightning_pose_image(video, f, width, flat) for f in frames]
    if not write:
        return names
    R.write_frame_pngs(path, frames, folder, width, prefix=f"{video}_" if flat else "")
    p = preds[(preds[S.VIDEO] == video) & preds[S.FRAME].isin(frames)]
    ml = pd.DataFrame(np.nan, index=pd.Index(names, dtype=object), columns=root.columns)
    for col in root.columns:  # (scorer, bodypart, x|y)
        vals = p[p[S.BODYPART] == col[1]].set_index(S.FRAME)[col[2]]
        ml[col] = vals.reindex(frames).to_numpy(float)
    target = folder / f"machinelabels-iter{iteration}.csv"
    if target.is_file():  # another video's frames of this iteration (flat layout) stay
        old = read_collected_data(target)
        if old.columns.equals(ml.columns):
            ml = pd.concat([old[~old.index.isin(ml.index)], ml]).sort_index()
    with atomic_path(target) as tmp:
        ml.to_csv(tmp)
    return names


def _scorer(preds: pd.DataFrame) -> str:
    if S.SCORER in preds.columns and preds[S.SCORER].notna().any():
        return str(preds[S.SCORER].dropna().iloc[0])
    return "machine"
