"""The demo's inputs of the behaviour stage (issue 23), written next to the project by
``poseops demo`` (single-animal demos):

- ``manual_scoring.csv`` (video, frame, x, y): a simulated manual scoring of the animal's centroid
  (mean of the four bodyparts of ``ground_truth_tracks.csv``) every ``SCORE_EVERY``-th frame, as
  a human scorer clicking the animal in BORIS would give it: truth + N(0, ``SCORER_NOISE_PX``)
  per coordinate, seeded by the demo's seed (its own stream: the other demo files do not change).
- ``arena.csv`` (video, shape, x0, y0, x1, y1, px_per_cm, fps): the rectangular floor inside the
  walls, ``ARENA_WIDTH_CM`` wide, and the videos' frame rate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core import schema as S
from poseops.core.fileio import write_csv
from poseops.demo.simulate import design, wall_px

log = logging.getLogger(__name__)

MANUAL_FILE = "manual_scoring.csv"
ARENA_FILE = "arena.csv"
SCORE_EVERY = 10  # frames between two manually scored frames
SCORER_NOISE_PX = 1.0  # sd per coordinate of the simulated scorer's clicks
ARENA_WIDTH_CM = 40.0  # the floor's width inside the walls
_STREAM = 23  # the scorer's random stream: SeedSequence([seed, _STREAM])


def arena_table(p: DemoParams) -> pd.DataFrame:
    """One row per video: the floor inside the walls (px), px_per_cm, fps."""
    wall = wall_px(p)
    x0, y0, x1, y1 = wall, wall, p.width - wall, p.height - wall
    return pd.DataFrame([{S.VIDEO: v.name, "shape": "rectangle", "x0": x0, "y0": y0, "x1": x1,
                          "y1": y1, "px_per_cm": (x1 - x0) / ARENA_WIDTH_CM, "fps": p.fps}
                         for v in design(p)])


def manual_scoring(p: DemoParams, tracks: pd.DataFrame) -> pd.DataFrame:
    """The simulated scorer: centroid of the true keypoints every SCORE_EVERY-th frame + noise."""
    t = tracks[tracks[S.BODYPART].isin(BODYPARTS) & (tracks[S.FRAME] % SCORE_EVERY == 0)]
    c = t.groupby([S.VIDEO, S.FRAME], sort=True)[[S.X, S.Y]].mean().reset_index()
    rng = np.random.default_rng([p.seed, _STREAM])
    noise = rng.normal(0.0, SCORER_NOISE_PX, (len(c), 2))
    return c.assign(x=c[S.X] + noise[:, 0], y=c[S.Y] + noise[:, 1])


def write_behaviour_inputs(project: Path, p: DemoParams, out: Path | None = None) -> list[Path]:
    """Write manual_scoring.csv and arena.csv of the demo ``project`` (after
    :func:`poseops.demo.project.generate_demo`) into ``out`` (default: the project); a
    multi-animal demo gets none (its animals have no identities across frames in the analysis)
    and stale ones are removed."""
    out = Path(project if out is None else out)
    files = [out / MANUAL_FILE, out / ARENA_FILE]
    if p.multi:
        for f in files:
            f.unlink(missing_ok=True)
        return []
    tracks = pd.read_csv(Path(project) / "ground_truth_tracks.csv")
    write_csv(manual_scoring(p, tracks), files[0], float_format="%.4f")
    write_csv(arena_table(p), files[1], float_format="%.4f")
    log.info("demo: manual scoring (every %d frames) and arena written to %s", SCORE_EVERY, out)
    return files
