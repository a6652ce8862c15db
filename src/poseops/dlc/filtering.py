"""DeepLabCut's own trajectory filters (``deeplabcut.filterpredictions``: median, arima, spline)
on an analyzed video's ``<video><scorer>.h5``, run in a folder of the caller's choosing.

The analyzed .h5 is copied into ``workdir`` (so the analyze stage's folder, a DVC output of
another stage, is never written to), a stale ``_filtered.h5`` there is removed (DLC skips a video
it finds already filtered), and DLC writes ``<video><scorer>_filtered.h5`` next to the copy.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)


def filter_predictions(config: str | Path, shuffle: int, h5: str | Path, video: str | Path,
                       filtertype: str, workdir: str | Path, windowlength: int = 5,
                       p_bound: float = 0.001) -> pd.DataFrame:
    """Filter one analyzed video with DLC; returns DLC's filtered frame (same layout as ``h5``)
    and leaves ``<workdir>/<h5 stem>_filtered.h5``."""
    h5, video, workdir = Path(h5), Path(video), Path(workdir)
    if not h5.is_file():
        raise PoseopsError("analyzed predictions (.h5) not found: run `poseops analyze`", file=h5)
    if not video.is_file():
        raise PoseopsError("video of the analyzed predictions not found (DLC's filter needs it)",
                           file=video)
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob(f"{video.stem}DLC*_filtered.*"):
        stale.unlink()
    shutil.copy2(h5, workdir / h5.name)
    import deeplabcut

    log.info("behaviour: DLC %s filter on %s", filtertype, video.name)
    deeplabcut.filterpredictions(
        str(config), str(video), shuffle=shuffle, filtertype=filtertype,
        windowlength=windowlength, p_bound=p_bound, save_as_csv=False,
        destfolder=str(workdir.resolve()),
    )
    out = workdir / f"{h5.stem}_filtered.h5"
    if not out.is_file():
        raise PoseopsError(f"DeepLabCut's {filtertype} filter wrote no _filtered.h5 (the model's "
                           "scorer name does not match the analyzed file?)", file=h5)
    return pd.read_hdf(out)
