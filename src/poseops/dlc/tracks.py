"""DeepLabCut's tracked multi-animal output: individuals with an identity across frames.

``analyze_videos(..., auto_track=True)`` (or ``convert_detections2tracklets`` +
``stitch_tracklets`` run by hand) writes ``<video><DLCscorer>_<tracker>.h5``: the tracker suffix
is ``_el`` (ellipse, DLC's default), ``_bx`` (box), ``_sk`` (skeleton) or ``_tr`` (transformer);
DLC's ``TrackletStitcher.write_tracks`` stores it under the key ``tracks`` (DLC's
``filterpredictions`` writes ``<...>_el_filtered.h5`` under ``df_with_missing``). Columns
``scorer / individuals / bodyparts / coords`` (x, y, likelihood); the individuals are the config's
``individuals`` (``n_tracks`` of them), unique bodyparts under ``single``; a frame an individual
is not tracked in holds NaN.

:func:`predictions_from_tracks` turns it into the tidy table ``video, frame, individual,
bodypart, x, y, likelihood, scorer`` (one row per frame x individual x bodypart, NaN = not
tracked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.dlc.inference import predictions_from_dlc, stack_individuals

# DLC's ``deeplabcut.core.trackingutils.TRACK_METHODS`` suffixes of tracked files (ctd writes an
# untracked-layout file under another prefix and is not read here)
TRACKER_SUFFIXES = {"ellipse": "_el", "box": "_bx", "skeleton": "_sk", "transformer": "_tr"}
TRACK_LEVELS = ["scorer", "individuals", "bodyparts", "coords"]
TRACK_COLUMNS = [S.VIDEO, S.FRAME, S.INDIVIDUAL, S.BODYPART, S.X, S.Y, S.LIKELIHOOD, S.SCORER]


def tracked_h5(folder: str | Path, video: str, scorer: str) -> Path | None:
    """The tracked file DLC wrote for ``video`` (its stem) and ``scorer`` in ``folder``
    (``<video><scorer>_<tracker>.h5``, not a ``_filtered`` one); None when there is none. DLC's
    default tracker (ellipse) wins when several trackers were run."""
    folder = Path(folder)
    for suffix in TRACKER_SUFFIXES.values():
        p = folder / f"{video}{scorer}{suffix}.h5"
        if p.is_file():
            return p
    return None


def read_tracks(h5: str | Path) -> pd.DataFrame:
    """DLC's tracked frame (any key: ``tracks`` as stitching writes it, ``df_with_missing`` as
    its filter writes it), checked to have the 4 tracked column levels."""
    h5 = Path(h5)
    if not h5.is_file():
        raise PoseopsError("tracked predictions (.h5) not found", file=h5)
    df = pd.read_hdf(h5)
    if not isinstance(df, pd.DataFrame) or df.columns.nlevels != 4:
        raise PoseopsError(f"not DLC's tracked multi-animal output (columns {TRACK_LEVELS})",
                           file=h5)
    return df


def predictions_from_tracks(df: pd.DataFrame, video: str) -> pd.DataFrame:
    """DLC's tracked frame (index = frame, columns scorer/individuals/bodyparts/coords) -> tidy
    predictions: video, frame, individual (``single``: unique bodyparts), bodypart, x, y,
    likelihood, scorer (individuals in DLC's column order); a frame in which an individual is
    not tracked keeps NaN."""
    if df.columns.nlevels != 4:
        raise PoseopsError(f"expected DLC's tracked output with 4 column levels {TRACK_LEVELS} "
                           f"for {video}, got {df.columns.nlevels}")
    out = stack_individuals(df, video)  # NaN rows kept: frames the individual is not tracked in
    out[S.INDIVIDUAL] = out.pop("_ind").astype(str)
    order = {ind: k for k, ind in enumerate(dict.fromkeys(df.columns.get_level_values(1)))}
    out = out.assign(_k=out[S.INDIVIDUAL].map(order))  # DLC's order: the config's individuals
    out = out.sort_values([S.FRAME, "_k"], kind="stable")[TRACK_COLUMNS].reset_index(drop=True)
    return out.rename_axis(columns=None)


def read_analyzed(folder: str | Path, video: str | Path, scorer: str,
                  tracked: bool = False) -> pd.DataFrame:
    """Tidy predictions of one video DLC's ``analyze_videos`` wrote into ``folder``:
    ``tracked`` (multi-animal, ``auto_track=True``): its tracked ``<video><scorer>_el.h5`` per
    individual (:func:`predictions_from_tracks`), else ``<video><scorer>.h5``
    (:func:`poseops.dlc.inference.predictions_from_dlc`). A missing file names the video."""
    video = Path(video)
    if tracked:
        h5 = tracked_h5(folder, video.stem, scorer)
        if h5 is None:
            raise PoseopsError("DeepLabCut's tracking (tracklets + stitching) wrote no tracked "
                               f"<video>{scorer}_el.h5 for this video (too short to track?)",
                               file=video)
        full = Path(folder) / f"{video.stem}{scorer}_full.pickle"  # this analysis' detections
        if full.is_file() and h5.stat().st_mtime < full.stat().st_mtime:
            raise PoseopsError("DeepLabCut's tracking did not rewrite the tracked file after this "
                               "analysis (a stale one from an earlier run)", file=h5)
        return predictions_from_tracks(read_tracks(h5), video.stem)
    h5 = Path(folder) / f"{video.stem}{scorer}.h5"
    if not h5.is_file():
        raise PoseopsError("DeepLabCut wrote no predictions for this video", file=video)
    return predictions_from_dlc(pd.read_hdf(h5, "df_with_missing"), video.stem)


# what DLC's stitching raises when there is nothing to stitch (a weak model, a short video)
_NOTHING_TO_TRACK = ("Tracklets are empty", "at least be one track", "minimal length")


def tracking_errors(analyze: Callable[..., Any]) -> Callable[..., Any]:
    """``analyze`` (DLC's ``analyze_videos``) with the errors its tracking raises when it finds
    nothing to track turned into one line (PoseopsError)."""

    @functools.wraps(analyze)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return analyze(*args, **kwargs)
        except (OSError, ValueError) as e:
            if not kwargs.get("auto_track") or not any(m in str(e) for m in _NOTHING_TO_TRACK):
                raise
            videos = args[1] if len(args) > 1 else kwargs.get("videos")
            raise PoseopsError(f"DeepLabCut's tracking found no tracklet to stitch in {videos} "
                               f"({e}): the model detects too few animals for long enough (train"
                               " it longer) or the video is too short; analyze.track: false "
                               "gives untracked assemblies") from e

    return run
