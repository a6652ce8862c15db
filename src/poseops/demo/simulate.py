"""The demo's simulated world: the crossover design, the animals' walks and keypoints, and the
labelers (noise, bias, hidden keypoints, identity swaps). Pure numpy, seeded by the caller's
generators; nothing is drawn or written here (:mod:`poseops.demo.render`,
:mod:`poseops.demo.project`).

Shapes: a body pose track is (frames, 4) = cx, cy, heading, head yaw; keypoints (frames,
bodyparts, 2) in BODYPARTS order; a frame's keypoints in :func:`keypoint_layout` order (every
animal's BODYPARTS, then the unique bodyparts).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core import schema as S

log = logging.getLogger(__name__)

def individuals(p: DemoParams) -> list[str]:
    """DLC individuals of the multi-animal demo (animal1, animal2, ...); [] for single-animal."""
    return [f"animal{k + 1}" for k in range(p.animals_per_video)] if p.multi else []


def keypoint_layout(p: DemoParams) -> tuple[list[str] | None, list[str]]:
    """(individual, bodypart) of each keypoint of a frame, in the order of the arrays: every
    animal's BODYPARTS, then the unique bodyparts under DLC's ``single``. Individuals are None
    for a single-animal project."""
    if not p.multi:
        return None, list(BODYPARTS)
    inds = [i for i in individuals(p) for _ in BODYPARTS] + [S.SINGLE] * len(p.unique_bodyparts)
    return inds, list(BODYPARTS) * p.animals_per_video + list(p.unique_bodyparts)


@dataclass
class VideoSpec:
    name: str
    animal: str
    session: str
    condition: str
    dose: float
    speed: float
    labeled: bool


def design(p: DemoParams) -> list[VideoSpec]:
    """Videos of the crossover design (labeled ones first, then the unlabeled extras)."""
    n = len(p.conditions)
    # single-animal: one video per animal m<a> and session; multi-animal: per group (cage) g<a>
    tag = "g" if p.multi else "m"
    specs = []
    for a in range(p.animals):
        for s in range(p.sessions):
            c = (a + s) % n
            specs.append(
                VideoSpec(f"{tag}{a + 1}-s{s + 1}", f"{tag}{a + 1}", f"s{s + 1}", p.conditions[c],
                          float(p.doses[c]), float(p.speeds[c]), True)
            )
    for k in range(p.unlabeled_videos):
        a, c = k % p.animals, k % n
        s = p.sessions + 1 + k // p.animals
        specs.append(
            VideoSpec(f"{tag}{a + 1}-s{s}", f"{tag}{a + 1}", f"s{s}", p.conditions[c],
                      float(p.doses[c]), float(p.speeds[c]), False)
        )
    return specs


# --------------------------------------------------------------------------- motion
def simulate_track(
    p: DemoParams,
    speed: float,
    rng: np.random.Generator,
    start: tuple[np.ndarray, float] | None = None,
    n: int | None = None,
) -> np.ndarray:
    """Smooth random walk of one animal: body pose (frames, 4) = cx, cy, heading, head yaw.
    Speed is an Ornstein-Uhlenbeck process around ``speed`` px/frame; heading turns smoothly and
    steers away from the walls. ``start`` = (position, heading) (default: random), ``n`` frames
    (default ``frames_per_video``)."""
    n = p.frames_per_video if n is None else n
    lo, hi = walk_bounds(p)
    if start is None:
        pos = lo + rng.random(2) * (hi - lo)
        theta = rng.uniform(-math.pi, math.pi)
    else:
        pos, theta = np.clip(np.asarray(start[0], float), lo, hi), float(start[1])
    v_dev, omega, yaw = 0.0, 0.0, 0.0
    pose = np.empty((n, 4))
    for t in range(n):
        pose[t] = (pos[0], pos[1], theta, yaw)
        v_dev = 0.85 * v_dev + rng.normal(0, 0.25)
        omega = 0.8 * omega + rng.normal(0, 0.06)
        yaw = 0.85 * yaw + rng.normal(0, 0.08)
        yaw = float(np.clip(yaw, -0.6, 0.6))
        v = speed * max(0.0, 1.0 + v_dev)
        ahead = pos + 12.0 * np.array([math.cos(theta), math.sin(theta)])
        if np.any(ahead < lo) or np.any(ahead > hi):  # steer towards the arena centre
            centre = np.array([p.width / 2, p.height / 2])
            want = math.atan2(centre[1] - pos[1], centre[0] - pos[0])
            theta += 0.35 * _angle_diff(want, theta)
        theta += omega
        pos = np.clip(pos + v * np.array([math.cos(theta), math.sin(theta)]), lo, hi)
    return pose


def walk_bounds(p: DemoParams) -> tuple[np.ndarray, np.ndarray]:
    wall = wall_px(p)
    lo = np.array([wall + 14.0, wall + 14.0])
    hi = np.array([p.width - wall - 14.0, p.height - wall - 14.0])
    return lo, hi


MEET_OFFSET_PX = (3.0, 6.0)  # body centres' side offset when two animals cross (bodies ~12 px wide)


def simulate_group(
    p: DemoParams, speed: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """Tracks of ``animals_per_video`` animals, shape (animals, frames, 4), that cross: animal
    k >= 1 passes over or under an earlier animal, about head-on, at a random meeting frame (body
    centres within ~2 px). It is walked forward from the meeting point and, for the frames before, walked
    backward from it and reversed in time, so the whole track is one smooth walk. Returns the
    tracks and the meeting frames (one per animal k >= 1)."""
    n = p.frames_per_video
    tracks = [simulate_track(p, speed, rng)]
    meets: list[int] = []
    for k in range(1, p.animals_per_video):
        t_c = int(rng.integers(n // 4, max(n // 4 + 1, (3 * n) // 4)))
        partner = int(rng.integers(k))
        # about head-on, a few px to one side: they approach, pass over each other's flank and part
        th_p = float(tracks[partner][t_c, 2])
        side = rng.choice([-1.0, 1.0]) * rng.uniform(*MEET_OFFSET_PX)
        centre = tracks[partner][t_c, :2] + side * np.array([-math.sin(th_p), math.cos(th_p)])
        theta = float(th_p + math.pi + rng.normal(0, 0.4))
        fwd = simulate_track(p, speed, rng, start=(centre, theta), n=n - t_c)
        back = simulate_track(p, speed, rng, start=(centre, theta + math.pi), n=t_c + 1)
        back = back[::-1].copy()
        back[:, 2] += math.pi  # walking backward in reversed time = walking forward
        tracks.append(np.concatenate([back[:-1], fwd]))
        meets.append(t_c)
    return np.stack(tracks), meets


def _angle_diff(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


def wall_px(p: DemoParams) -> int:
    return max(4, round(min(p.width, p.height) * 0.06))


def keypoints(pose: np.ndarray) -> np.ndarray:
    """Body pose (frames, 4: cx, cy, heading, yaw) -> keypoints (frames, 4 bodyparts, 2) in
    BODYPARTS order. Left/right are the animal's own (image y axis points down)."""
    c = pose[:, :2]
    th, yaw = pose[:, 2], pose[:, 3]
    u = np.stack([np.cos(th), np.sin(th)], axis=1)
    psi = th + yaw
    h = np.stack([np.cos(psi), np.sin(psi)], axis=1)
    left = np.stack([h[:, 1], -h[:, 0]], axis=1)
    neck = c + 8.0 * u
    snout = neck + 8.0 * h
    leftear = neck + 1.5 * h + 3.8 * left
    rightear = neck + 1.5 * h - 3.8 * left
    tailbase = c - 9.5 * u
    return np.stack([snout, leftear, rightear, tailbase], axis=1)


def frame_keypoints(kps: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """Every keypoint of every frame in :func:`keypoint_layout` order, (frames, keypoints, 2):
    the animals' keypoints ``kps`` (animals, frames, bodyparts, 2), then the floor markers
    ``marks`` (markers, 2), the same in every frame."""
    n_fr = kps.shape[1]
    return np.concatenate(
        [kps.transpose(1, 0, 2, 3).reshape(n_fr, -1, 2),
         np.broadcast_to(marks, (n_fr, len(marks), 2))], axis=1)


# --------------------------------------------------------------------------- labelers
SWAP_MIN_PX = 12.0  # swaps only where the two animals' body centres are this far apart


@dataclass
class LabelerFrames:
    """One labeler's labels of a video's labeled frames: ``rows`` (indices into the labeled
    frames), ``xy`` (rows, keypoints, 2; NaN = not labeled), ``swaps`` (row, animal a,
    animal b) where two animals' labels were swapped."""

    labeler: str
    rows: np.ndarray
    xy: np.ndarray
    swaps: list[tuple[int, int, int]]


def bedding_occlusions(p: DemoParams, n_kp: int, n_videos: int,
                       seq: np.random.SeedSequence) -> np.ndarray:
    """Keypoints hidden under bedding, bool (labeled videos, labeled frames, keypoints):
    ``occlusion_rate`` of all labeled keypoints of the project, drawn without replacement."""
    n_lab = p.labeled_per_video
    n_occl_total = round(p.occlusion_rate * n_lab * n_kp * n_videos)
    occl_rng = np.random.default_rng(seq)
    occl_flat = occl_rng.choice(n_lab * n_kp * n_videos, n_occl_total, replace=False)
    occl_mask_all = np.zeros(n_lab * n_kp * n_videos, bool)
    occl_mask_all[occl_flat] = True
    return occl_mask_all.reshape(-1, n_lab, n_kp)


def pick_frames(p: DemoParams, meets: list[int], rng: np.random.Generator) -> np.ndarray:
    """Labeled frames (sorted). Multi-animal: every meeting frame (animals crossing, hiding each
    other: the frames a labeler must get right), the rest at random."""
    if not meets:
        return np.sort(rng.choice(p.frames_per_video, p.labeled_per_video, replace=False))
    forced = sorted(set(meets))
    rest = np.setdiff1d(np.arange(p.frames_per_video), forced)
    extra = rng.choice(rest, p.labeled_per_video - len(forced), replace=False)
    return np.sort(np.concatenate([forced, extra]).astype(int))


def simulate_labels(p: DemoParams, truth: np.ndarray, occl: np.ndarray, poses: np.ndarray,
                    rng: np.random.Generator) -> list[LabelerFrames]:
    """Every labeler's labels of one video's labeled frames. The first labeler labels all of
    them, the others the same ``multi_labeled_fraction``; each label = truth (frames,
    keypoints, 2) + N(0, ``labeler_noise_px``), + ``bias_px`` on ``biased_bodypart`` for
    ``biased_labeler``, rounded to 0.01 px; ``occl`` (frames, keypoints) hidden keypoints are
    NaN. Multi-animal: ``swap_labeler`` swaps two animals on some frames (``poses``: the true
    poses (animals, frames, 4) of the labeled frames)."""
    n_lab = p.labeled_per_video
    _, kp_bps = keypoint_layout(p)
    bias_idx = [k for k, b in enumerate(kp_bps) if b == p.biased_bodypart]
    n_multi = round(p.multi_labeled_fraction * n_lab)
    multi = np.sort(rng.choice(n_lab, n_multi, replace=False))
    out = []
    for li, labeler in enumerate(p.labelers):
        rows = np.arange(n_lab) if li == 0 else multi
        lab = truth[rows] + rng.normal(0, p.labeler_noise_px, truth[rows].shape)
        if labeler == p.biased_labeler:
            lab[:, bias_idx] += np.asarray(p.bias_px, float)
        lab = np.round(lab, 2)
        lab[occl[rows]] = np.nan
        swaps: list[tuple[int, int, int]] = []
        if p.multi and labeler == p.swap_labeler and p.swap_fraction > 0:
            swaps = swap_identities(p, lab, poses[:, rows], rng)
        out.append(LabelerFrames(labeler, rows, lab, swaps))
    return out


def swap_identities(
    p: DemoParams, lab: np.ndarray, poses: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Swap two animals' labels (all their bodyparts) in place on ``swap_fraction`` of the rows
    (at least one) of ``lab`` (rows, keypoints, 2); ``poses`` (animals, rows, 4) are the rows'
    true poses. Only pairs whose body centres are >= SWAP_MIN_PX apart are swapped, so a swap
    is a real identity error and not a crossing. Returns (row, animal a, animal b) per swap."""
    nb = len(BODYPARTS)
    n_an = poses.shape[0]
    pairs = [(a, b) for a in range(n_an) for b in range(a + 1, n_an)]
    ok = {
        r: [ab for ab in pairs
            if np.hypot(*(poses[ab[0], r, :2] - poses[ab[1], r, :2])) >= SWAP_MIN_PX]
        for r in range(lab.shape[0])
    }
    cand = [r for r in ok if ok[r]]
    n = min(len(cand), max(1, round(p.swap_fraction * lab.shape[0])))
    out = []
    for r in sorted(int(x) for x in rng.choice(cand, n, replace=False)) if n else []:
        a, b = ok[r][int(rng.integers(len(ok[r])))]
        blk_a, blk_b = slice(a * nb, (a + 1) * nb), slice(b * nb, (b + 1) * nb)
        lab[r, blk_a], lab[r, blk_b] = lab[r, blk_b].copy(), lab[r, blk_a].copy()
        out.append((r, a, b))
    return out
