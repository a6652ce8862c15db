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

CSV and PNG files are byte-for-byte identical for the same seed and params.
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

from poseops import dlcio
from poseops import schema as S
from poseops.errors import PoseopsError
from poseops.fileio import atomic_path, write_csv, write_json, write_yaml

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
    animals: int = 4
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

    @classmethod
    def small(cls, **overrides: Any) -> DemoParams:
        """A tiny project for fast tests: 2 animals x 3 sessions, 30-frame videos, 6 labeled each."""
        base = dict(animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
        base.update(overrides)
        return cls(**base)

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
    specs = []
    for a in range(p.animals):
        for s in range(p.sessions):
            c = (a + s) % n
            specs.append(
                VideoSpec(f"m{a + 1}-s{s + 1}", f"m{a + 1}", f"s{s + 1}", p.conditions[c],
                          float(p.doses[c]), float(p.speeds[c]), True)
            )
    for k in range(p.unlabeled_videos):
        a, c = k % p.animals, k % n
        s = p.sessions + 1 + k // p.animals
        specs.append(
            VideoSpec(f"m{a + 1}-s{s}", f"m{a + 1}", f"s{s}", p.conditions[c],
                      float(p.doses[c]), float(p.speeds[c]), False)
        )
    return specs


# --------------------------------------------------------------------------- motion
def simulate_track(p: DemoParams, speed: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random walk of one animal; returns keypoints, shape (frames, 4 bodyparts, 2) plus
    body pose (frames, 4): cx, cy, heading, head yaw.  Speed is an Ornstein-Uhlenbeck process
    around ``speed`` px/frame; heading turns smoothly and steers away from the walls."""
    n = p.frames_per_video
    wall = _wall(p)
    lo = np.array([wall + 14.0, wall + 14.0])
    hi = np.array([p.width - wall - 14.0, p.height - wall - 14.0])
    pos = lo + rng.random(2) * (hi - lo)
    theta = rng.uniform(-math.pi, math.pi)
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
    pose: np.ndarray,
    kps: np.ndarray,
    t: int,
    rng: np.random.Generator,
    occluded: list[int] | None = None,
) -> np.ndarray:
    """Draw the animal (tail, body, head, ears) at pose[t] onto a copy of bg, optional bedding
    patches over occluded keypoints, plus sensor noise. Returns BGR uint8."""
    import cv2

    img = bg.copy()
    cx, cy, th, yaw = pose[t]
    u = np.array([math.cos(th), math.sin(th)])
    psi = th + yaw
    hd = np.array([math.cos(psi), math.sin(psi)])
    c = np.array([cx, cy])
    snout, leftear, rightear, tailbase = kps[t]
    aa = cv2.LINE_AA
    # tail: a wagging curve behind the tail base
    s = np.linspace(0, 1, 8)
    perp = np.array([-u[1], u[0]])
    wag = 2.5 * np.sin(2 * math.pi * (s * 0.8 + t * 0.07))
    tail = tailbase[None] - (s[:, None] * 18.0) * u[None] + (wag * s)[:, None] * perp[None]
    pts = np.array([_pt(q) for q in tail], np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, (95, 100, 130), 2, aa, _SHIFT)
    body_col = (48, 46, 44)
    cv2.ellipse(img, _pt(c - 0.5 * u), (int(10.5 * _ONE), int(5.8 * _ONE)), math.degrees(th), 0, 360,
                body_col, -1, aa, _SHIFT)
    neck = c + 8.0 * u
    cv2.ellipse(img, _pt(neck + 3.0 * hd), (int(5.3 * _ONE), int(3.4 * _ONE)), math.degrees(psi),
                0, 360, body_col, -1, aa, _SHIFT)
    for ear in (leftear, rightear):
        cv2.circle(img, _pt(ear), int(2.4 * _ONE), (120, 128, 180), -1, aa, _SHIFT)
    cv2.circle(img, _pt(snout), int(1.2 * _ONE), (120, 125, 185), -1, aa, _SHIFT)
    for j in occluded or []:  # bedding kicked over the keypoint hides it
        x, y = kps[t, j]
        col = tuple(int(v) for v in bg[int(np.clip(y, 0, bg.shape[0] - 1)),
                                       int(np.clip(x, 0, bg.shape[1] - 1))])
        cv2.ellipse(img, _pt(kps[t, j]), (int(4.5 * _ONE), int(3.5 * _ONE)),
                    float(rng.uniform(0, 180)), 0, 360, col, -1, aa, _SHIFT)
    noise = rng.normal(0, 2.5, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- project files
def dlc_config(p: DemoParams, out: Path, specs: list[VideoSpec]) -> dict[str, Any]:
    """config.yaml as DLC 3 writes it for a single-animal project (same keys and order)."""
    out_abs = out.resolve()
    crop = f"0, {p.width}, 0, {p.height}"
    return {
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
    root_ss = np.random.SeedSequence(p.seed)
    seqs = root_ss.spawn(len(specs))
    gt_rows: list[pd.DataFrame] = []
    track_rows: list[pd.DataFrame] = []
    label_parts: dict[str, list[pd.DataFrame]] = {name: [] for name in p.labelers}
    n_lab = p.labeled_per_video
    n_occl_total = round(p.occlusion_rate * n_lab * len(BODYPARTS) * sum(v.labeled for v in specs))
    occl_rng = np.random.default_rng(root_ss.spawn(1)[0])
    occl_flat = occl_rng.choice(n_lab * len(BODYPARTS) * sum(v.labeled for v in specs),
                                n_occl_total, replace=False)
    occl_mask_all = np.zeros(n_lab * len(BODYPARTS) * sum(v.labeled for v in specs), bool)
    occl_mask_all[occl_flat] = True
    occl_masks = occl_mask_all.reshape(-1, n_lab, len(BODYPARTS))
    i_lab = 0
    written: set[Path] = set()
    for spec, ss in zip(specs, seqs, strict=True):
        rng_motion, rng_img, rng_pick, rng_lab = (np.random.default_rng(s) for s in ss.spawn(4))
        pose = simulate_track(p, spec.speed, rng_motion)
        kps = keypoints(pose)
        track_rows.append(_track_table(spec.name, kps))
        bg = background(p, rng_img)
        if spec.labeled:
            frames_l = np.sort(rng_pick.choice(p.frames_per_video, n_lab, replace=False))
            occl = occl_masks[i_lab]
            i_lab += 1
        else:
            frames_l, occl = np.array([], int), np.zeros((0, len(BODYPARTS)), bool)
        occl_of = {int(f): list(np.flatnonzero(occl[k])) for k, f in enumerate(frames_l)}
        frames = [
            render_frame(bg, pose, kps, t, rng_img, occl_of.get(t)) for t in range(p.frames_per_video)
        ]
        _write_video(out / "videos" / f"{spec.name}.mp4", frames, p.fps)
        written.add(out / "videos" / f"{spec.name}.mp4")
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
        truth = kps[frames_l]  # (n_lab, bodyparts, 2)
        gt_rows.append(_truth_table(spec.name, images, frames_l, truth, occl))
        n_multi = round(p.multi_labeled_fraction * n_lab)
        multi = np.sort(rng_lab.choice(n_lab, n_multi, replace=False))
        for li, labeler in enumerate(p.labelers):
            rows = np.arange(n_lab) if li == 0 else multi
            lab = truth[rows] + rng_lab.normal(0, p.labeler_noise_px, truth[rows].shape)
            if labeler == p.biased_labeler:
                lab[:, BODYPARTS.index(p.biased_bodypart)] += np.asarray(p.bias_px, float)
            lab = np.round(lab, 2)
            lab[occl[rows]] = np.nan
            label_parts[labeler].append(_labels_table(labeler, [images[r] for r in rows], lab))
    # labels: one CollectedData file per (video, labeler), DLC >= 2.2 layout (3-level row index)
    for labeler, parts in label_parts.items():
        if not parts:
            continue
        long = pd.concat(parts, ignore_index=True)
        for video, sub in long.groupby(S.VIDEO, sort=True):
            wide = dlcio.labels_to_wide(sub, labeler, BODYPARTS, index="multi")
            h5 = out / "labeled-data" / str(video) / f"CollectedData_{labeler}.h5"
            _write_labels(wide, h5)
            written |= {h5, h5.with_suffix(".csv")}
    _remove_stale(out, written)
    write_csv(pd.concat(gt_rows, ignore_index=True), out / "ground_truth.csv", float_format="%.4f")
    write_csv(pd.concat(track_rows, ignore_index=True), out / "ground_truth_tracks.csv",
              float_format="%.4f")
    write_yaml(dlc_config(p, out, specs), out / "config.yaml")
    meta = metadata_table(p, specs)
    if metadata is not None:
        write_csv(meta, metadata)
    write_json(
        {
            "seed": p.seed,
            "params": dataclasses.asdict(p),
            "scorer": p.labelers[0],
            "labelers": p.labelers,
            "bias": {"labeler": p.biased_labeler, "bodypart": p.biased_bodypart,
                     "dx_dy_px": p.bias_px},
            "bodyparts": BODYPARTS,
            "videos": meta.assign(labeled=[v.labeled for v in specs]).to_dict(orient="records"),
            "occluded_keypoints": int(n_occl_total),
        },
        out / "demo_manifest.json",
    )
    log.info("demo project written to %s (%d videos, %d labeled)", out, len(specs),
             sum(v.labeled for v in specs))
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


def _truth_table(video: str, images: list[str], frames: np.ndarray, truth: np.ndarray,
                 occl: np.ndarray) -> pd.DataFrame:
    n, k = truth.shape[:2]
    return pd.DataFrame(
        {
            S.IMAGE: np.repeat(images, k),
            S.VIDEO: video,
            S.FRAME: np.repeat(frames, k),
            S.BODYPART: np.tile(BODYPARTS, n),
            S.X: truth[..., 0].ravel(),
            S.Y: truth[..., 1].ravel(),
            "occluded": occl.ravel(),
        }
    )


def _track_table(video: str, kps: np.ndarray) -> pd.DataFrame:
    n, k = kps.shape[:2]
    return pd.DataFrame(
        {
            S.VIDEO: video,
            S.FRAME: np.repeat(np.arange(n), k),
            S.BODYPART: np.tile(BODYPARTS, n),
            S.X: kps[..., 0].ravel(),
            S.Y: kps[..., 1].ravel(),
        }
    )


def _labels_table(scorer: str, images: list[str], lab: np.ndarray) -> pd.DataFrame:
    n, k = lab.shape[:2]
    return pd.DataFrame(
        {
            S.IMAGE: np.repeat(images, k),
            S.VIDEO: [i.split("/")[1] for i in np.repeat(images, k)],
            S.SCORER: scorer,
            S.BODYPART: np.tile(BODYPARTS, n),
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
) -> Path:
    """CLI entry: params.yaml ``demo`` (and ``project.metadata`` as the default metadata path)."""
    from poseops.params import load_params, section

    p = section("demo", DemoParams, params_file)
    if small:
        p = dataclasses.replace(p, animals=2, sessions=3, frames_per_video=30, labeled_per_video=6)
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
    sp.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    sp.set_defaults(func=lambda a: run(a.out, a.metadata, a.params_file, a.small) and 0)
