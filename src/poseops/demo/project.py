"""`poseops demo`: a seeded generator of a complete small DeepLabCut project (the bundled demo).

What it writes under ``out`` (default ``data/raw/demo``):

- ``config.yaml``: a single-animal DLC 3 project (Task ``demo``, scorer = first labeler, bodyparts
  snout, leftear, rightear, tailbase; ``video_sets`` = the labeled videos).
- ``videos/<video>.mp4``: top-view recordings (mp4v, ``width`` x ``height``, ``fps``) of a dark
  rodent-like animal (elliptical body, head with snout and two ears, tail) walking in a grey
  arena with walls. One video per animal x session, named ``m<animal>-s<session>``; a crossover
  design gives each animal each condition once (condition = (animal + session) mod n). The
  condition sets the mean walking speed (``speeds``, px/frame): a dose-dependent locomotor effect.
  ``unlabeled_videos`` extra recordings (``m<a>-s<sessions+k>``) are not labeled and not in
  ``video_sets``: material for video analysis and outlier extraction.
- ``labeled-data/<video>/imgNN.png``: the labeled frames, named as DLC's frame extraction does
  (``img`` + frame index zero-padded to ceil(log10(frames_per_video)) digits).
- ``labeled-data/<video>/CollectedData_<labeler>.h5/.csv``: three simulated labelers. The first
  (config scorer) labels every labeled frame; the others relabel the same ``multi_labeled_fraction``
  of them. Every label = truth + N(0, ``labeler_noise_px``) per coordinate; ``biased_labeler`` adds
  ``bias_px`` (dx, dy) on ``biased_bodypart``. ``occlusion_rate`` of the keypoints are hidden in
  the image (a patch of bedding is drawn over them) and left NaN by every labeler.
- ``ground_truth.csv``: image, video, frame, bodypart, x, y, occluded (true positions, occluded
  ones included); ``ground_truth_tracks.csv``: video, frame, bodypart, x, y for every video frame.
- ``demo_manifest.json``: seed, params, videos, labelers, bias.
- the metadata CSV (video, animal, session, condition, dose, camera) only where asked
  (``metadata=`` path; the CLI defaults to params ``project.metadata``).

Multi-animal (``animals_per_video`` >= 2, ``poseops demo --multi-animal``): a maDLC project as
``deeplabcut.create_new_project(multianimal=True)`` makes it (``multianimalproject: true``,
``identity: false``, ``individuals`` animal1.., ``multianimalbodyparts`` = the four bodyparts,
``uniquebodyparts`` = params ``unique_bodyparts``, pale floor markers labeled under DLC's
individual ``single``; ``bodyparts: MULTI!``). One video per group (cage) ``g<k>`` x session (same
crossover; metadata ``animal`` = the group). The animals look identical; each animal k >= 1
crosses an earlier one about head-on at a meeting frame (always labeled), and they are drawn in
a per-video depth order: a keypoint under the body of an animal drawn above it is hidden and NaN
for every labeler. CollectedData has DLC's 4-level header (scorer / individuals / bodyparts /
coords). ``swap_labeler`` swaps two animals' labels on ``swap_fraction`` of its frames (where
their bodies are >= SWAP_MIN_PX apart), listed in ``label_swaps.csv`` (image, video, frame,
scorer, individual_a, individual_b). ``ground_truth.csv`` and ``ground_truth_tracks.csv`` gain an
``individual`` column; ground truth also ``occluded_by`` ("" visible, "bedding", or the animal on
top). The manifest adds individuals, per-video depth order and meeting frames, occlusion counts.

CSV and PNG files are byte-for-byte identical for the same seed and params; a single-animal
demo's files are the same as before multi-animal projects existed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import atomic_path, write_csv, write_json, write_yaml
from poseops.dlc import files as dlcio

log = logging.getLogger(__name__)

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
TASK = "demo"


@dataclass
class DemoParams:
    """params.yaml ``demo``. ``DemoParams.small()`` is a fast variant for tests."""

    seed: int = 7
    out: str = "data/raw/demo"
    width: int = 160
    height: int = 120
    fps: int = 30
    frames_per_video: int = 90  # video length
    labeled_per_video: int = 10  # frames labeled (by the first labeler) per video
    animals: int = 4  # single-animal: animals; multi-animal: groups (cages) of animals_per_video
    sessions: int = 3  # crossover: each animal gets condition (animal + session) mod n
    conditions: list[str] = field(default_factory=lambda: ["vehicle", "low_dose", "high_dose"])
    doses: list[float] = field(default_factory=lambda: [0.0, 1.0, 3.0])
    speeds: list[float] = field(default_factory=lambda: [0.6, 1.0, 1.6])  # px/frame per condition
    unlabeled_videos: int = 1  # extra recordings with no labels (analysis / outliers)
    occlusion_rate: float = 0.04  # share of keypoints hidden in the image and left NaN
    labelers: list[str] = field(default_factory=lambda: ["alice", "bob", "carol"])
    multi_labeled_fraction: float = 0.4  # share of labeled frames relabeled by the others
    labeler_noise_px: float = 1.0  # sd per coordinate
    biased_labeler: str = "carol"
    biased_bodypart: str = "snout"
    bias_px: list[float] = field(default_factory=lambda: [4.0, 0.0])  # (dx, dy)
    camera: str = "top"
    date: str = "Jan1"  # DLC's config date (fixed for determinism)
    # multi-animal (maDLC) demo: animals_per_video > 1; the keys below are unused when it is 1
    animals_per_video: int = 1
    unique_bodyparts: list[str] = field(default_factory=list)  # fixed floor markers (DLC "single")
    swap_labeler: str = "bob"  # labels some frames with two animals' identities swapped
    swap_fraction: float = 0.25  # share of swap_labeler's frames that are swapped

    @classmethod
    def small(cls, **overrides: Any) -> DemoParams:
        """A tiny project for fast tests: 2 animals x 3 sessions, 30-frame videos, 6 labeled each."""
        base = dict(animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def small_multi(cls, **overrides: Any) -> DemoParams:
        """``small()`` as a multi-animal project: 2 groups x 3 sessions, 2 animals per video."""
        base: dict[str, Any] = dict(animals_per_video=2)
        base.update(overrides)
        return cls.small(**base)

    @property
    def multi(self) -> bool:
        return self.animals_per_video > 1

    def check(self) -> None:
        n = len(self.conditions)
        if not (len(self.doses) == n == len(self.speeds)):
            raise PoseopsError("demo: conditions, doses and speeds must have the same length")
        if self.labeled_per_video > self.frames_per_video:
            raise PoseopsError("demo: labeled_per_video > frames_per_video")
        if self.biased_labeler and self.biased_labeler not in self.labelers:
            raise PoseopsError(f"demo: biased_labeler {self.biased_labeler!r} not in labelers")
        if self.biased_bodypart not in BODYPARTS:
            raise PoseopsError(f"demo: biased_bodypart must be one of {BODYPARTS}")
        if self.width < 64 or self.height < 48:
            raise PoseopsError("demo: width/height too small (min 64x48)")
        if not 0 <= self.occlusion_rate < 1 or not 0 <= self.multi_labeled_fraction <= 1:
            raise PoseopsError("demo: occlusion_rate and multi_labeled_fraction must be in [0, 1)")
        if not 1 <= self.animals_per_video <= 4:
            raise PoseopsError("demo: animals_per_video must be 1 (single-animal) to 4")
        if self.multi:
            if self.swap_labeler and self.swap_labeler not in self.labelers:
                raise PoseopsError(f"demo: swap_labeler {self.swap_labeler!r} not in labelers")
            if not 0 <= self.swap_fraction <= 1:
                raise PoseopsError("demo: swap_fraction must be in [0, 1]")
            bad = [b for b in self.unique_bodyparts if b in BODYPARTS or b == S.SINGLE]
            if bad or len(set(self.unique_bodyparts)) != len(self.unique_bodyparts):
                raise PoseopsError(f"demo: unique_bodyparts must be new, distinct names (got {bad})")
            if self.labeled_per_video < self.animals_per_video - 1:
                raise PoseopsError("demo: labeled_per_video must cover every animals' crossing")


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
    lo, hi = _walk_bounds(p)
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


def _walk_bounds(p: DemoParams) -> tuple[np.ndarray, np.ndarray]:
    wall = _wall(p)
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


def _wall(p: DemoParams) -> int:
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


# --------------------------------------------------------------------------- rendering
_SHIFT = 4  # cv2 sub-pixel drawing: coordinates * 16
_ONE = 1 << _SHIFT


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]) * _ONE)), int(round(float(xy[1]) * _ONE))


def background(p: DemoParams, rng: np.random.Generator) -> np.ndarray:
    """Grey arena floor with a lighting gradient and texture, darker walls (BGR uint8, H x W x 3)."""
    import cv2

    h, w = p.height, p.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    level = rng.uniform(150, 175)
    floor = level * (1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5))
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)), (0, 0), 1.2)
    img = floor + texture
    wall = _wall(p)
    inner = np.zeros((h, w), bool)
    inner[wall:h - wall, wall:w - wall] = True
    img = np.where(inner, img, level * 0.45 + texture)
    # the walls' shadow on the floor
    dist = np.minimum.reduce([xx - wall, yy - wall, (w - wall - 1) - xx, (h - wall - 1) - yy])
    shadow = np.where(inner, np.clip(1 - dist / 4.0, 0, 1) * 25, 0)
    img = np.clip(img - shadow, 0, 255)
    tint = np.array([1.0, 1.0, 0.97])  # slightly warm grey (B, G, R scale)
    return np.clip(img[..., None] * tint[::-1], 0, 255).astype(np.uint8)


def render_frame(
    bg: np.ndarray,
    poses: np.ndarray,
    kps: np.ndarray,
    t: int,
    rng: np.random.Generator,
    patches: np.ndarray | None = None,
) -> np.ndarray:
    """Draw the animals (tail, body, head, ears) at poses[:, t] onto a copy of bg, bottom one
    first (poses (animals, frames, 4), kps (animals, frames, 4, 2), in depth order), then
    bedding patches centred on ``patches`` (m, 2) (the occluded keypoints), plus sensor noise.
    Returns BGR uint8."""
    import cv2

    img = bg.copy()
    for pose, kp in zip(poses, kps, strict=True):
        _draw_animal(img, pose[t], kp[t], t)
    for xy in patches if patches is not None else []:  # bedding kicked over the keypoint hides it
        x, y = xy
        col = tuple(int(v) for v in bg[int(np.clip(y, 0, bg.shape[0] - 1)),
                                       int(np.clip(x, 0, bg.shape[1] - 1))])
        cv2.ellipse(img, _pt(xy), (int(4.5 * _ONE), int(3.5 * _ONE)),
                    float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA, _SHIFT)
    noise = rng.normal(0, 2.5, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _draw_animal(img: np.ndarray, pose_t: np.ndarray, kps_t: np.ndarray, t: int,
                 mask: bool = False) -> None:
    """Draw one animal in place. ``mask``: its body outline (no tail: too thin to hide a
    keypoint) in 255 on a one-channel image, the area that hides what lies beneath."""
    import cv2

    cx, cy, th, yaw = pose_t
    u = np.array([math.cos(th), math.sin(th)])
    psi = th + yaw
    hd = np.array([math.cos(psi), math.sin(psi)])
    c = np.array([cx, cy])
    snout, leftear, rightear, tailbase = kps_t
    aa = cv2.LINE_8 if mask else cv2.LINE_AA
    body_col: tuple[int, ...] = (255,) if mask else (48, 46, 44)
    ear_col: tuple[int, ...] = (255,) if mask else (120, 128, 180)
    snout_col: tuple[int, ...] = (255,) if mask else (120, 125, 185)
    if not mask:  # tail: a wagging curve behind the tail base
        s = np.linspace(0, 1, 8)
        perp = np.array([-u[1], u[0]])
        wag = 2.5 * np.sin(2 * math.pi * (s * 0.8 + t * 0.07))
        tail = tailbase[None] - (s[:, None] * 18.0) * u[None] + (wag * s)[:, None] * perp[None]
        pts = np.array([_pt(q) for q in tail], np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, (95, 100, 130), 2, aa, _SHIFT)
    cv2.ellipse(img, _pt(c - 0.5 * u), (int(10.5 * _ONE), int(5.8 * _ONE)), math.degrees(th), 0, 360,
                body_col, -1, aa, _SHIFT)
    neck = c + 8.0 * u
    cv2.ellipse(img, _pt(neck + 3.0 * hd), (int(5.3 * _ONE), int(3.4 * _ONE)), math.degrees(psi),
                0, 360, body_col, -1, aa, _SHIFT)
    for ear in (leftear, rightear):
        cv2.circle(img, _pt(ear), int(2.4 * _ONE), ear_col, -1, aa, _SHIFT)
    cv2.circle(img, _pt(snout), int(1.2 * _ONE), snout_col, -1, aa, _SHIFT)


def body_mask(p: DemoParams, pose_t: np.ndarray, kps_t: np.ndarray) -> np.ndarray:
    """Pixels at least HIDE_DEPTH_PX inside one animal's body (bool, height x width): a keypoint
    there is hidden; one nearer the outline still shows enough to be labeled."""
    import cv2

    m = np.zeros((p.height, p.width), np.uint8)
    _draw_animal(m, pose_t, kps_t, 0, mask=True)
    k = 2 * HIDE_DEPTH_PX + 1
    return cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0


HIDE_DEPTH_PX = 2


def hidden_by_animals(p: DemoParams, poses: np.ndarray, kps: np.ndarray, marks: np.ndarray,
                      depth: np.ndarray, t: int) -> list[str]:
    """Which animal (name) hides each keypoint of frame t ("" = visible), keypoints in
    ``keypoint_layout`` order. A keypoint is hidden when its pixel lies under the body of an
    animal drawn above its own (``depth``: animal indices bottom to top); floor markers
    (``marks``) lie under every animal."""
    names = individuals(p)
    masks = {a: body_mask(p, poses[a, t], kps[a, t]) for a in range(len(poses))}
    level = {int(a): i for i, a in enumerate(depth)}
    pts = np.concatenate([kps[:, t].reshape(-1, 2), marks])
    owner = [a for a in range(len(poses)) for _ in BODYPARTS] + [-1] * len(marks)
    out = []
    for (x, y), a in zip(pts, owner, strict=True):
        r = int(np.clip(round(float(y)), 0, p.height - 1))
        c = int(np.clip(round(float(x)), 0, p.width - 1))
        above = [b for b in depth[::-1] if a < 0 or level[int(b)] > level[a]]  # top first
        out.append(next((names[int(b)] for b in above if masks[int(b)][r, c]), ""))
    return out


def draw_markers(p: DemoParams, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw the unique bodyparts (pale floor markers, one per name, at random places on the
    arena floor away from the walls) into bg; returns their positions (markers, 2)."""
    import cv2

    lo, hi = _walk_bounds(p)
    marks = lo + rng.random((len(p.unique_bodyparts), 2)) * (hi - lo)
    for xy in marks:
        cv2.circle(bg, _pt(xy), int(2.5 * _ONE), (205, 225, 235), -1, cv2.LINE_AA, _SHIFT)
    return marks


# --------------------------------------------------------------------------- project files
def dlc_config(p: DemoParams, out: Path, specs: list[VideoSpec]) -> dict[str, Any]:
    """config.yaml as DLC 3 writes it (same keys and order), single- or multi-animal."""
    out_abs = out.resolve()
    crop = f"0, {p.width}, 0, {p.height}"
    cfg = {
        "Task": TASK,
        "scorer": p.labelers[0],
        "date": p.date,
        "multianimalproject": False,
        "identity": None,
        "project_path": str(out_abs),
        "engine": "pytorch",
        "video_sets": {
            str(out_abs / "videos" / f"{v.name}.mp4"): {"crop": crop} for v in specs if v.labeled
        },
        "bodyparts": list(BODYPARTS),
        "start": 0,
        "stop": 1,
        "numframes2pick": p.labeled_per_video,
        "skeleton": [["snout", "leftear"], ["snout", "rightear"], ["leftear", "tailbase"],
                     ["rightear", "tailbase"]],
        "skeleton_color": "black",
        "pcutoff": 0.6,
        "dotsize": 3,
        "alphavalue": 0.7,
        "colormap": "rainbow",
        "TrainingFraction": [0.8],
        "iteration": 0,
        "default_net_type": "resnet_50",
        "default_augmenter": "default",
        "snapshotindex": -1,
        "detector_snapshotindex": -1,
        "batch_size": 8,
        "detector_batch_size": 1,
        "cropping": False,
        "x1": 0,
        "x2": p.width,
        "y1": 0,
        "y2": p.height,
        "corner2move2": [50, 50],
        "move2corner": True,
        "SuperAnimalConversionTables": None,
    }
    if not p.multi:
        return cfg
    # multi-animal keys as deeplabcut.create_new_project(multianimal=True) sets them (PyTorch)
    ma = {
        "multianimalproject": True,
        "identity": False,
        "bodyparts": "MULTI!",
        "individuals": individuals(p),
        "uniquebodyparts": list(p.unique_bodyparts),
        "multianimalbodyparts": list(BODYPARTS),
        "default_augmenter": "albumentations",
        "default_track_method": "ellipse",
    }
    out_cfg: dict[str, Any] = {}
    for k, v in cfg.items():
        out_cfg[k] = ma.get(k, v)
        if k == "bodyparts":  # DLC's key order: individuals etc. right after bodyparts
            out_cfg.update({key: ma[key] for key in
                            ("individuals", "uniquebodyparts", "multianimalbodyparts")})
        if k == "default_augmenter":
            out_cfg["default_track_method"] = ma["default_track_method"]
    return out_cfg


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")  # the writer picks the container from the suffix
        writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise PoseopsError("OpenCV cannot open an mp4v video writer", file=path)
        for f in frames:
            writer.write(f)
        writer.release()
        tmp_mp4.replace(tmp)


def _write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise PoseopsError("cannot encode PNG", file=path)
    path.write_bytes(buf.tobytes())


def generate_demo(
    out: Path | None = None,
    params: DemoParams | None = None,
    metadata: Path | None = None,
) -> Path:
    """Write the demo DLC project to ``out`` (default ``params.out``); returns ``out``.

    ``metadata``: where to write the per-video metadata CSV (not written when None).
    Overwrites a previous demo in ``out`` (config.yaml, videos/, labeled-data/, ground truth).
    """
    p = params or DemoParams()
    p.check()
    out = Path(out if out is not None else p.out)
    specs = design(p)
    if out.exists() and any(out.iterdir()) and not (out / "demo_manifest.json").exists():
        raise PoseopsError("refusing to overwrite a folder that is not a poseops demo", file=out)
    out.mkdir(parents=True, exist_ok=True)
    kp_inds, kp_bps = keypoint_layout(p)
    n_kp = len(kp_bps)
    root_ss = np.random.SeedSequence(p.seed)
    seqs = root_ss.spawn(len(specs))
    gt_rows: list[pd.DataFrame] = []
    track_rows: list[pd.DataFrame] = []
    label_parts: dict[str, list[pd.DataFrame]] = {name: [] for name in p.labelers}
    swap_rows: list[dict[str, Any]] = []
    video_extra: dict[str, dict[str, Any]] = {}
    n_lab = p.labeled_per_video
    n_lab_videos = sum(v.labeled for v in specs)
    n_occl_total = round(p.occlusion_rate * n_lab * n_kp * n_lab_videos)
    occl_rng = np.random.default_rng(root_ss.spawn(1)[0])
    occl_flat = occl_rng.choice(n_lab * n_kp * n_lab_videos, n_occl_total, replace=False)
    occl_mask_all = np.zeros(n_lab * n_kp * n_lab_videos, bool)
    occl_mask_all[occl_flat] = True
    occl_masks = occl_mask_all.reshape(-1, n_lab, n_kp)
    bias_idx = [k for k, b in enumerate(kp_bps) if b == p.biased_bodypart]
    n_hidden = 0
    i_lab = 0
    written: set[Path] = set()
    for i_video, (spec, ss) in enumerate(zip(specs, seqs, strict=True)):
        rng_motion, rng_img, rng_pick, rng_lab = (np.random.default_rng(s) for s in ss.spawn(4))
        if p.multi:
            poses, meets = simulate_group(p, spec.speed, rng_motion)
        else:
            poses, meets = simulate_track(p, spec.speed, rng_motion)[None], []
        kps = np.stack([keypoints(q) for q in poses])  # (animals, frames, bodyparts, 2)
        bg = background(p, rng_img)
        marks = draw_markers(p, bg, rng_img) if p.multi else np.zeros((0, 2))
        # depth order, bottom to top: rotated from video to video (each group's videos in turn),
        # so every animal is the hidden one equally often (no animal mostly unlabeled)
        depth = np.roll(np.arange(len(poses)), -i_video)
        # every keypoint of every frame in keypoint_layout order: (frames, keypoints, 2)
        n_fr = p.frames_per_video
        pts = np.concatenate(
            [kps.transpose(1, 0, 2, 3).reshape(n_fr, -1, 2),
             np.broadcast_to(marks, (n_fr, len(marks), 2))], axis=1)
        track_rows.append(_track_table(spec.name, pts, kp_inds, kp_bps))
        if spec.labeled:
            frames_l = _pick_frames(p, meets, rng_pick)
            occl = occl_masks[i_lab]
            i_lab += 1
        else:
            frames_l, occl = np.array([], int), np.zeros((0, n_kp), bool)
        occl_of = {int(f): list(np.flatnonzero(occl[k])) for k, f in enumerate(frames_l)}
        frames = [
            render_frame(bg, poses[depth], kps[depth], t, rng_img,
                         pts[t][occl_of[t]] if t in occl_of else None)
            for t in range(n_fr)
        ]
        _write_video(out / "videos" / f"{spec.name}.mp4", frames, p.fps)
        written.add(out / "videos" / f"{spec.name}.mp4")
        if p.multi:
            video_extra[spec.name] = {
                "depth_order": [individuals(p)[int(a)] for a in depth],
                "meeting_frames": [int(t) for t in meets],
            }
        if not spec.labeled:
            continue
        folder = out / "labeled-data" / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        images = [
            f"labeled-data/{spec.name}/{dlcio.dlc_frame_name(int(f), p.frames_per_video)}"
            for f in frames_l
        ]
        for img_rel, f in zip(images, frames_l, strict=True):
            _write_png(out / img_rel, frames[int(f)])
            written.add(out / img_rel)
        truth = pts[frames_l]  # (n_lab, keypoints, 2)
        hidden_by: np.ndarray | None = None
        if p.multi:  # keypoints under another animal's body: hidden in the image, like bedding
            hidden_by = np.array(
                [hidden_by_animals(p, poses, kps, marks, depth, int(t)) for t in frames_l], object
            ).reshape(len(frames_l), n_kp)
            hidden_by = np.where(occl, "bedding", hidden_by)
            n_hidden += int(((hidden_by != "") & (hidden_by != "bedding")).sum())
            occl = occl | (hidden_by != "")
        gt_rows.append(_truth_table(spec.name, images, frames_l, truth, occl, kp_inds, kp_bps,
                                    hidden_by))
        n_multi = round(p.multi_labeled_fraction * n_lab)
        multi = np.sort(rng_lab.choice(n_lab, n_multi, replace=False))
        for li, labeler in enumerate(p.labelers):
            rows = np.arange(n_lab) if li == 0 else multi
            lab = truth[rows] + rng_lab.normal(0, p.labeler_noise_px, truth[rows].shape)
            if labeler == p.biased_labeler:
                lab[:, bias_idx] += np.asarray(p.bias_px, float)
            lab = np.round(lab, 2)
            lab[occl[rows]] = np.nan
            if p.multi and labeler == p.swap_labeler and p.swap_fraction > 0:
                for r, a, b in _swap_identities(p, lab, poses[:, frames_l[rows]], rng_lab):
                    swap_rows.append({S.IMAGE: images[rows[r]], S.VIDEO: spec.name,
                                      S.FRAME: int(frames_l[rows[r]]), S.SCORER: labeler,
                                      "individual_a": individuals(p)[a],
                                      "individual_b": individuals(p)[b]})
            label_parts[labeler].append(
                _labels_table(labeler, [images[r] for r in rows], lab, kp_inds, kp_bps))
    # labels: one CollectedData file per (video, labeler), DLC >= 2.2 layout (3-level row index)
    for labeler, parts in label_parts.items():
        if not parts:
            continue
        long = pd.concat(parts, ignore_index=True)
        for video, sub in long.groupby(S.VIDEO, sort=True):
            if p.multi:  # DLC's 4-level header: scorer / individuals / bodyparts / coords
                wide = dlcio.labels_to_wide(sub, labeler, BODYPARTS, index="multi",
                                            individuals=individuals(p),
                                            unique_bodyparts=list(p.unique_bodyparts))
            else:
                wide = dlcio.labels_to_wide(sub, labeler, BODYPARTS, index="multi")
            h5 = out / "labeled-data" / str(video) / f"CollectedData_{labeler}.h5"
            _write_labels(wide, h5)
            written |= {h5, h5.with_suffix(".csv")}
    _remove_stale(out, written)
    write_csv(pd.concat(gt_rows, ignore_index=True), out / "ground_truth.csv", float_format="%.4f")
    write_csv(pd.concat(track_rows, ignore_index=True), out / "ground_truth_tracks.csv",
              float_format="%.4f")
    swaps_csv = out / SWAPS_FILE
    if p.multi:
        write_csv(pd.DataFrame(swap_rows, columns=SWAP_COLUMNS), swaps_csv)
    elif swaps_csv.exists():  # left over from a multi-animal demo
        swaps_csv.unlink()
    write_yaml(dlc_config(p, out, specs), out / "config.yaml")
    meta = metadata_table(p, specs)
    if metadata is not None:
        write_csv(meta, metadata)
    params_out = dataclasses.asdict(p)
    if not p.multi:  # a single-animal demo's manifest stays as it was before multi-animal keys
        for k in _MULTI_KEYS:
            params_out.pop(k)
    videos = meta.assign(labeled=[v.labeled for v in specs]).to_dict(orient="records")
    manifest: dict[str, Any] = {
        "seed": p.seed,
        "params": params_out,
        "scorer": p.labelers[0],
        "labelers": p.labelers,
        "bias": {"labeler": p.biased_labeler, "bodypart": p.biased_bodypart,
                 "dx_dy_px": p.bias_px},
        "bodyparts": BODYPARTS,
        "videos": videos,
        "occluded_keypoints": int(n_occl_total),
    }
    if p.multi:
        for v in videos:
            v.update(video_extra[v[S.VIDEO]])
        manifest["occluded_keypoints"] = int(n_occl_total + n_hidden)
        manifest.update({
            "bedding_occlusions": int(n_occl_total),
            "animal_occlusions": n_hidden,
            "individuals": individuals(p),
            "unique_bodyparts": list(p.unique_bodyparts),
            "swaps": {"labeler": p.swap_labeler, "fraction": p.swap_fraction,
                      "file": SWAPS_FILE, "n": len(swap_rows)},
        })
    write_json(manifest, out / "demo_manifest.json")
    log.info("demo project written to %s (%d videos, %d labeled)", out, len(specs),
             sum(v.labeled for v in specs))
    return out


SWAPS_FILE = "label_swaps.csv"
SWAP_COLUMNS = [S.IMAGE, S.VIDEO, S.FRAME, S.SCORER, "individual_a", "individual_b"]
_MULTI_KEYS = ("animals_per_video", "unique_bodyparts", "swap_labeler", "swap_fraction")
SWAP_MIN_PX = 12.0  # swaps only where the two animals' body centres are this far apart


def _pick_frames(p: DemoParams, meets: list[int], rng: np.random.Generator) -> np.ndarray:
    """Labeled frames (sorted). Multi-animal: every meeting frame (animals crossing, hiding each
    other: the frames a labeler must get right), the rest at random."""
    if not meets:
        return np.sort(rng.choice(p.frames_per_video, p.labeled_per_video, replace=False))
    forced = sorted(set(meets))
    rest = np.setdiff1d(np.arange(p.frames_per_video), forced)
    extra = rng.choice(rest, p.labeled_per_video - len(forced), replace=False)
    return np.sort(np.concatenate([forced, extra]).astype(int))


def _swap_identities(
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


def _write_labels(wide: pd.DataFrame, path_h5: Path) -> None:
    """Write CollectedData .h5/.csv unless identical labels are already there: HDF5 files embed
    creation times, so rewriting equal labels would change their hash and make DVC rerun the
    pipeline after every `poseops demo`."""
    if path_h5.is_file() and path_h5.with_suffix(".csv").is_file():
        try:
            if pd.read_hdf(path_h5).equals(wide):
                csv_now = path_h5.with_suffix(".csv").read_text()
                if csv_now == wide.to_csv():
                    return
        except Exception:  # unreadable old file: rewrite it
            pass
    dlcio.write_collected_data(wide, path_h5)


def _remove_stale(out: Path, written: set[Path]) -> None:
    """Delete files under videos/ and labeled-data/ that this run did not write (left over from
    a demo with other params or seed)."""
    import shutil

    for sub in ("videos", "labeled-data"):
        for f in sorted((out / sub).rglob("*"), reverse=True):
            if f.is_file() and f not in written:
                f.unlink()
            elif f.is_dir() and not any(f.iterdir()):
                shutil.rmtree(f)


def metadata_table(p: DemoParams, specs: list[VideoSpec]) -> pd.DataFrame:
    """Per-video metadata: video, animal, session, condition, dose, camera."""
    return pd.DataFrame(
        {
            S.VIDEO: [v.name for v in specs],
            S.ANIMAL: [v.animal for v in specs],
            S.SESSION: [v.session for v in specs],
            S.CONDITION: [v.condition for v in specs],
            S.DOSE: [v.dose for v in specs],
            S.CAMERA: p.camera,
        }
    )


def _kp_columns(n: int, kp_inds: list[str] | None, kp_bps: list[str]) -> dict[str, Any]:
    """individual (multi-animal only) and bodypart columns of n frames x keypoints."""
    cols: dict[str, Any] = {}
    if kp_inds is not None:
        cols[S.INDIVIDUAL] = np.tile(kp_inds, n)
    cols[S.BODYPART] = np.tile(kp_bps, n)
    return cols


def _truth_table(video: str, images: list[str], frames: np.ndarray, truth: np.ndarray,
                 occl: np.ndarray, kp_inds: list[str] | None, kp_bps: list[str],
                 hidden_by: np.ndarray | None = None) -> pd.DataFrame:
    n, k = truth.shape[:2]
    df = pd.DataFrame(
        {
            S.IMAGE: np.repeat(images, k),
            S.VIDEO: video,
            S.FRAME: np.repeat(frames, k),
            **_kp_columns(n, kp_inds, kp_bps),
            S.X: truth[..., 0].ravel(),
            S.Y: truth[..., 1].ravel(),
            "occluded": occl.ravel(),
        }
    )
    if hidden_by is not None:  # "" visible, "bedding", or the animal on top
        df["occluded_by"] = hidden_by.ravel()
    return df


def _track_table(video: str, kps: np.ndarray, kp_inds: list[str] | None,
                 kp_bps: list[str]) -> pd.DataFrame:
    n, k = kps.shape[:2]
    return pd.DataFrame(
        {
            S.VIDEO: video,
            S.FRAME: np.repeat(np.arange(n), k),
            **_kp_columns(n, kp_inds, kp_bps),
            S.X: kps[..., 0].ravel(),
            S.Y: kps[..., 1].ravel(),
        }
    )


def _labels_table(scorer: str, images: list[str], lab: np.ndarray, kp_inds: list[str] | None,
                  kp_bps: list[str]) -> pd.DataFrame:
    n, k = lab.shape[:2]
    return pd.DataFrame(
        {
            S.IMAGE: np.repeat(images, k),
            S.VIDEO: [i.split("/")[1] for i in np.repeat(images, k)],
            S.SCORER: scorer,
            **_kp_columns(n, kp_inds, kp_bps),
            S.X: lab[..., 0].ravel(),
            S.Y: lab[..., 1].ravel(),
        }
    )


# --------------------------------------------------------------------------- CLI
def run(
    out: str | Path | None = None,
    metadata: str | Path | None = None,
    params_file: str | Path | None = None,
    small: bool = False,
    multi_animal: bool = False,
) -> Path:
    """CLI entry: params.yaml ``demo`` (and ``project.metadata`` as the default metadata path).
    ``multi_animal``: a multi-animal project (``animals_per_video`` from params, 2 when it is 1)."""
    from poseops.config.loader import load_params, section

    p = section("demo", DemoParams, params_file)
    if small:
        p = dataclasses.replace(p, animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
    if multi_animal and not p.multi:
        p = dataclasses.replace(p, animals_per_video=2)
    if metadata is None:
        metadata = (load_params(params_file).get("project") or {}).get("metadata")
    return generate_demo(Path(out or p.out), p, Path(metadata) if metadata else None)


def register(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "demo",
        help="generate the seeded demo DeepLabCut project (data/raw/demo + metadata CSV)",
        description=__doc__.splitlines()[0],
    )
    sp.add_argument("--out", help="project folder (default: params demo.out)")
    sp.add_argument("--metadata", help="metadata CSV to write (default: params project.metadata)")
    sp.add_argument("--small", action="store_true", help="tiny variant (2 animals, 30 frames)")
    sp.add_argument("--multi-animal", action="store_true",
                    help="multi-animal (maDLC) project: params demo.animals_per_video, at least 2")
    sp.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    sp.set_defaults(
        func=lambda a: run(a.out, a.metadata, a.params_file, a.small, a.multi_animal) and 0)
