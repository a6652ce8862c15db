"""The behaviour stage's edges: the analyze stage's predictions in, DLC's filter, the user's
manual scoring and arena files, and every output written under ``params.out`` (atomic files).

Outputs (``reports/behaviour/`` by default): ``video_quality.csv``, ``behaviour.csv``,
``agreement.csv``, ``position_error.csv``, ``effects.csv`` (the last three with a manual scoring),
``quality.png``, ``trajectories.png``, ``bland_altman.png``, ``effects.png``, ``worst_frames.csv``
and ``worst_frames.png`` (the worst frames of each video with the predictions drawn: a contact
sheet), ``summary.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from poseops.behaviour import figures as F
from poseops.behaviour.inputs import read_arena, read_manual, video_units
from poseops.behaviour.quality import animal_count_share
from poseops.behaviour.sheet import contact_sheet, worst_frames
from poseops.behaviour.tables import CENTROID, BehaviourTables, behaviour_tables
from poseops.config.behaviour import FILTER_TYPES, BehaviourParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.parquet"


@dataclass
class Model:
    """The DLC model that analyzed the videos (DLC's filter finds the .h5 by its scorer)."""

    config: Path
    shuffle: int


def load_predictions(analyzed: str | Path) -> pd.DataFrame:
    """The analyze stage's tidy predictions. Multi-animal: tracked individuals (an
    ``individual`` column, ``analyze.track: true``) are used as they are; untracked assemblies
    are replaced by DLC's tracked ``<video><scorer>_el.h5`` when the folder holds one for every
    video (tracklets + stitching run by hand), else refused (one line)."""
    path = Path(analyzed) / PREDICTIONS
    if not path.is_file():
        raise PoseopsError("no analyzed predictions: run `poseops analyze` first", file=path)
    preds = pd.read_parquet(path)
    if S.ASSEMBLY in preds.columns:
        tracked = _tracked_from_dlc(preds, Path(analyzed))
        if tracked is None:
            raise PoseopsError("multi-animal predictions are untracked assemblies (no identity "
                               "across frames): per-animal trajectories need tracked individuals"
                               " (analyze.track: true, or DLC's stitch_tracklets)", file=path)
        return tracked
    if S.INDIVIDUAL in preds.columns:
        preds = preds.assign(**{S.INDIVIDUAL: preds[S.INDIVIDUAL].astype(str)})
    return preds


def _tracked_from_dlc(preds: pd.DataFrame, analyzed: Path) -> pd.DataFrame | None:
    """DLC's tracked files of every analyzed video as tidy per-individual predictions, or None
    when a video has none."""
    from poseops.dlc.tracks import predictions_from_tracks, read_tracks, tracked_h5

    parts = []
    for video, g in preds.groupby(S.VIDEO, sort=True):
        h5 = tracked_h5(analyzed, str(video), str(g[S.SCORER].iloc[0]))
        if h5 is None:
            return None
        p = predictions_from_tracks(read_tracks(h5), str(video))
        if "video_path" in g.columns:
            p = p.assign(video_path=g["video_path"].iloc[0])
        parts.append(p)
    return pd.concat(parts, ignore_index=True) if parts else None


def filtered_predictions(preds: pd.DataFrame, analyzed: Path, model: Model,
                         params: BehaviourParams) -> pd.DataFrame:
    """DLC's ``filterpredictions`` (params.filter) on every analyzed video -> tidy predictions
    (tracked multi-animal predictions: DLC's tracked ``_el.h5`` filtered per individual)."""
    from poseops.dlc.filtering import filter_predictions
    from poseops.dlc.inference import predictions_from_dlc
    from poseops.dlc.tracks import predictions_from_tracks, tracked_h5

    tracked = S.INDIVIDUAL in preds.columns
    parts = []
    for video, g in preds.groupby(S.VIDEO, sort=True):
        scorer = str(g[S.SCORER].iloc[0])
        h5 = (tracked_h5(analyzed, str(video), scorer) if tracked else None) or \
            analyzed / f"{video}{scorer}.h5"
        df = filter_predictions(model.config, model.shuffle, h5, g["video_path"].iloc[0],
                                str(params.filter), Path(params.workdir),
                                params.filter_windowlength, params.filter_p_bound)
        tidy = predictions_from_tracks(df, str(video)) if tracked else \
            predictions_from_dlc(df, str(video))
        parts.append(tidy.assign(video_path=g["video_path"].iloc[0]))
    return pd.concat(parts, ignore_index=True)


def check_manual(manual: pd.DataFrame, preds: pd.DataFrame, path: str | Path) -> None:
    """Tracked multi-animal predictions need a manual scoring per individual, naming
    individuals the predictions have (one-line errors naming the file)."""
    if S.INDIVIDUAL not in preds.columns:
        if S.INDIVIDUAL in manual.columns:
            raise PoseopsError("the manual scoring has an 'individual' column but the predictions"
                               " are single-animal (no individuals): drop the column", file=path)
        return
    if S.INDIVIDUAL not in manual.columns:
        raise PoseopsError("the predictions are per individual (multi-animal): the manual scoring "
                           "needs an 'individual' column (video, individual, frame, x, y)",
                           file=path)
    known = set(preds[S.INDIVIDUAL]) - {S.SINGLE}
    unknown = sorted(set(manual[S.INDIVIDUAL]) - known)
    if unknown:
        raise PoseopsError(f"manual scoring individual(s) {unknown} not in the predictions "
                           f"(individuals: {sorted(known)})", file=path)


def run_behaviour(params: BehaviourParams, meta: pd.DataFrame | None,
                  model: Model | None) -> BehaviourTables:
    """Read, filter, compute, write; returns the tables (see :mod:`poseops.behaviour.tables`)."""
    analyzed = Path(params.analyzed)
    preds = load_predictions(analyzed)
    filtered = None
    if params.filter is not None and params.filter not in FILTER_TYPES:
        raise PoseopsError(f"behaviour.filter must be one of {list(FILTER_TYPES)} or null, got "
                           f"{params.filter!r}")
    if params.filter is not None:
        if model is None:
            raise PoseopsError("behaviour.filter needs the model that analyzed the videos "
                               "(train run.json or analyze.config / analyze.shuffle)")
        filtered = filtered_predictions(preds, analyzed, model, params)
    arena = read_arena(params.arena)
    units = {str(v): video_units(arena, str(v), params.fps, params.px_per_cm)
             for v in preds[S.VIDEO].unique()}
    manual = read_manual(params.manual) if params.manual is not None else None
    if manual is not None:
        check_manual(manual, preds, str(params.manual))
    control = params.control
    if control is None and meta is not None and S.CONDITION in meta.columns:
        seen = meta.loc[meta[S.VIDEO].isin(set(preds[S.VIDEO])), S.CONDITION]
        control = str(seen.iloc[0]) if len(seen) else None
    if params.control is not None and (meta is None or S.CONDITION not in meta.columns
                                       or params.control not in set(meta[S.CONDITION])):
        raise PoseopsError(f"behaviour.control {params.control!r} is not a condition of the "
                           "metadata CSV (project.metadata)")
    t = behaviour_tables(preds, filtered, meta, units, manual, params, control)
    if S.INDIVIDUAL in preds.columns:  # tracked multi-animal: are all animals there?
        t.animal_count = animal_count_table(preds, params, model)
        t.summary["expected_animals"] = int(t.animal_count["expected_animals"].iloc[0])
        t.summary["expected_animals_share"] = float(
            t.animal_count["expected_animals_share"].mean())
    files = write_outputs(t, Path(params.out), manual)
    _write_sheet(preds if filtered is None else filtered, t, params, files)
    return t


def animal_count_table(preds: pd.DataFrame, params: BehaviourParams,
                       model: Model | None) -> pd.DataFrame:
    """Per video, the share of frames in which exactly the expected number of tracked animals
    has a keypoint at or above pcutoff (``behaviour.expected_animals``; null: the DLC config's
    individuals, or without the model's config the individuals the predictions name)."""
    expected = params.expected_animals
    if expected is None and model is not None and Path(model.config).is_file():
        from poseops.dlc.files import config_individuals, read_config_unchecked

        expected = len(config_individuals(read_config_unchecked(Path(model.config)))) or None
    if expected is None:
        expected = int(preds.loc[preds[S.INDIVIDUAL] != S.SINGLE, S.INDIVIDUAL].nunique())
    return animal_count_share(preds, int(expected), params.pcutoff, animal=S.INDIVIDUAL)


def _write_sheet(preds: pd.DataFrame, t: BehaviourTables, params: BehaviourParams,
                 files: list[Path]) -> None:
    """worst_frames.csv + worst_frames.png (the contact sheet), listed in summary.json."""
    out = Path(params.out)
    worst = worst_frames(preds, t.reference)
    files.append(write_csv(worst, out / "worst_frames.csv", index=False))
    png = contact_sheet(worst, preds, params.pcutoff, out / "worst_frames.png")
    if png is not None:
        files.append(png)
    elif (out / "worst_frames.png").exists():
        (out / "worst_frames.png").unlink()
    t.summary["files"] = sorted(p.name for p in files if p.name != "summary.json")
    write_json(t.summary, out / "summary.json")


def write_outputs(t: BehaviourTables, out: Path, manual: pd.DataFrame | None) -> list[Path]:
    """Tables, figures and summary.json under ``out``; stale optional files removed."""
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(t.quality, out / "video_quality.csv", index=False),
             write_csv(t.behaviour, out / "behaviour.csv", index=False),
             F.fig_quality(t.quality, CENTROID, out / "quality.png"),
             F.fig_trajectories(t.reference, manual, out / "trajectories.png")]
    optional = {"agreement.csv": t.agreement, "position_error.csv": t.position_error,
                "effects.csv": t.effects, "animal_count.csv": t.animal_count}
    for name, df in optional.items():
        if df is not None:
            files.append(write_csv(df, out / name, index=False))
        elif (out / name).exists():
            (out / name).unlink()
    if t.agreement is not None:
        files.append(F.fig_bland_altman(t.behaviour, t.agreement, out / "bland_altman.png"))
    if t.effects is not None and len(t.effects):
        files.append(F.fig_effects(t.effects, out / "effects.png"))
    for name in ("bland_altman.png", "effects.png"):
        if out / name not in files and (out / name).exists():
            (out / name).unlink()
    t.summary["files"] = sorted(p.name for p in files)
    files.append(write_json(t.summary, out / "summary.json"))
    log.info("behaviour: %d videos -> %s", t.summary["n_videos"], out)
    return files
