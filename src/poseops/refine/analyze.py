"""`poseops analyze VIDEO...`: run the current model on new videos (DeepLabCut's video analysis).

Uses the working DLC project that ``poseops train`` built (``<train.workdir>/run.json``: config
path and shuffle) and ``deeplabcut.analyze_videos``, called once for all the videos (the model
is loaded once; videos sharing a file stem go to separate calls). Multi-animal models give untracked
per-frame assemblies (no tracklets / stitching): an ``assembly`` column instead of identities. Writes DLC's own ``<video><DLCscorer>.h5`` per
video, a tidy predictions table (video, frame, bodypart, x, y, likelihood, scorer, video_path) and
a per-frame likelihood summary; logged to MLflow when a run is active (or ``log_mlflow``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from poseops.config.refine import AnalyzeParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine import common as R

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [S.VIDEO, S.FRAME, "mean_likelihood", "min_likelihood", "n_below_pcutoff",
                   "n_bodyparts"]


# ---------------------------------------------------------------- pure
def likelihood_summary(preds: pd.DataFrame, pcutoff: float) -> pd.DataFrame:
    """Per (video, frame): mean and min likelihood over bodyparts, bodyparts below pcutoff.
    Multi-animal predictions: over the predicted keypoints of every animal (empty assembly
    slots, score < 0, left out)."""
    if S.ASSEMBLY in preds.columns:
        preds = preds[preds[S.LIKELIHOOD] >= 0]
    g = preds.assign(_low=preds[S.LIKELIHOOD] < pcutoff).groupby([S.VIDEO, S.FRAME])
    out = g.agg(mean_likelihood=(S.LIKELIHOOD, "mean"), min_likelihood=(S.LIKELIHOOD, "min"),
                n_below_pcutoff=("_low", "sum"), n_bodyparts=(S.BODYPART, "size"))
    return out.reset_index()[SUMMARY_COLUMNS]


def stem_batches(paths: list[Path]) -> list[list[int]]:
    """Positions of ``paths`` in batches that DeepLabCut can analyze in one call (its model
    loaded once): DLC names its outputs ``<stem><scorer>.h5`` in one folder, so two different
    videos with one stem go to different batches (the same path repeated stays in one batch).
    One batch in the usual case; the order of ``paths`` is kept within each batch."""
    batches: list[tuple[dict[str, Path], list[int]]] = []
    for i, p in enumerate(paths):
        for owner, members in batches:
            if owner.get(p.stem, p) == p:
                owner[p.stem] = p
                members.append(i)
                break
        else:
            batches.append(({p.stem: p}, [i]))
    return [members for _, members in batches]


# ---------------------------------------------------------------- edges
def resolve_model(params: AnalyzeParams) -> tuple[Path, int]:
    """(config path, shuffle) of the model to use; PoseopsError if it is missing or untrained."""
    config, shuffle = params.config, params.shuffle
    run_json = Path(params.train_workdir) / "run.json"
    if config is None or shuffle is None:
        if not run_json.is_file():
            raise PoseopsError("no trained model: run `poseops train` first (or set analyze.config"
                               " and analyze.shuffle)", file=run_json)
        info = json.loads(run_json.read_text())
        config = config or info.get("config_path")
        shuffle = shuffle if shuffle is not None else info.get("shuffle")
    cfg_path = Path(str(config))
    cfg = R.read_config(cfg_path)
    it = int(cfg.get("iteration", 0))
    models = cfg_path.parent / "dlc-models-pytorch" / f"iteration-{it}"
    folders = sorted(models.glob(f"*shuffle{int(shuffle)}")) if models.is_dir() else []
    snaps = [s for f in folders for s in (f / "train").glob("snapshot-*.pt")]
    if not snaps:
        raise PoseopsError(f"model missing: no snapshot-*.pt for shuffle {shuffle} (iteration {it})",
                           file=models)
    return cfg_path, int(shuffle)


def analyze_videos(params: AnalyzeParams, videos: list[str | Path]) -> pd.DataFrame:
    """Analyze videos; write <out>/<video><scorer>.h5 (DLC), predictions.parquet, likelihood.csv.
    Returns the tidy predictions."""
    if not videos:
        raise PoseopsError("no videos to analyze")
    paths = [Path(v).resolve() for v in videos]
    for p in paths:  # fail before loading the model: an undecodable video is named
        R.probe_video(p)
    cfg_path, shuffle = resolve_model(params)
    cfg = R.read_config(cfg_path)
    pcutoff = params.pcutoff if params.pcutoff is not None else float(cfg.get("pcutoff", 0.6))
    out = Path(params.out)
    out.mkdir(parents=True, exist_ok=True)
    import deeplabcut

    from poseops.dlc.files import is_multianimal
    from poseops.dlc.tracks import read_analyzed, tracking_errors

    # multi-animal: DLC's per-frame assemblies, untracked (auto_track=False: no tracklets or
    # stitching; save_as_df writes them as DLC's 4-level <video><scorer>.h5 next to its
    # _full.pickle / _assemblies.pickle). Identities across frames are not claimed.
    # analyze.track: DLC's tracklets + stitching as well (<video><scorer>_el.h5: individuals)
    ma = {"auto_track": params.track, "save_as_df": True} if is_multianimal(cfg) else {}
    parts: dict[int, pd.DataFrame] = {}
    for batch in stem_batches(paths):  # one DLC call (one model load) per batch of videos
        log.info("analyze: %s (shuffle %d, %s)", ", ".join(paths[i].name for i in batch),
                 shuffle, params.device)
        scorer = tracking_errors(deeplabcut.analyze_videos)(  # one line if nothing to track
            str(cfg_path), sorted({str(paths[i]) for i in batch}), shuffle=shuffle,
            device=params.device, destfolder=str(out.resolve()),
            snapshot_index=params.snapshot_index, batch_size=params.batch_size, overwrite=True,
            save_as_csv=True, **ma,
        )
        for i in batch:  # tracked: an individual column (dlc.tracks)
            parts[i] = (read_analyzed(out, paths[i], scorer, tracked=bool(ma.get("auto_track")))
                        .assign(video_path=str(paths[i])))
    preds = pd.concat([parts[i] for i in range(len(paths))], ignore_index=True)
    summary = likelihood_summary(preds, pcutoff)
    from poseops.core.fileio import write_csv, write_parquet

    write_parquet(preds, out / "predictions.parquet")
    write_csv(summary, out / "likelihood.csv")
    _log_mlflow(params, summary, pcutoff, out)
    log.info("analyze: %d frames, mean likelihood %.3f -> %s", len(summary),
             float(summary["mean_likelihood"].mean()), out)
    return preds


def _log_mlflow(params: AnalyzeParams, summary: pd.DataFrame, pcutoff: float, out: Path) -> None:
    import mlflow

    active = mlflow.active_run() is not None
    if not (active or params.log_mlflow):
        return
    with mlflow.start_run(run_name="analyze", nested=active):
        mlflow.set_tag("poseops.stage", "analyze")
        mlflow.log_metrics({
            "analyze.mean_likelihood": float(summary["mean_likelihood"].mean()),
            "analyze.share_frames_below_pcutoff": float((summary["n_below_pcutoff"] > 0).mean()),
            "analyze.n_frames": float(len(summary)),
        })
        mlflow.log_param("analyze.pcutoff", pcutoff)
        mlflow.log_artifact(str(out / "likelihood.csv"), artifact_path="analyze")
