"""The demo project: a seeded generator of a complete small DeepLabCut project (``poseops demo``).

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

This module writes the project; the simulated world (design, walks, labelers) is
:mod:`poseops.demo.simulate`, the drawing :mod:`poseops.demo.render`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json, write_yaml
from poseops.demo.render import (
    background,
    draw_markers,
    hidden_by_animals,
    render_video,
    write_png,
    write_video,
)
from poseops.demo.simulate import (
    VideoSpec,
    bedding_occlusions,
    design,
    frame_keypoints,
    individuals,
    keypoint_layout,
    keypoints,
    pick_frames,
    simulate_group,
    simulate_labels,
    simulate_track,
)
from poseops.dlc import files as dlcio

log = logging.getLogger(__name__)

TASK = "demo"
SWAPS_FILE = "label_swaps.csv"
SWAP_COLUMNS = [S.IMAGE, S.VIDEO, S.FRAME, S.SCORER, "individual_a", "individual_b"]
_MULTI_KEYS = ("animals_per_video", "unique_bodyparts", "swap_labeler", "swap_fraction")


@dataclass
class _Collected:
    """What the videos of a demo add up to, written once they are all simulated."""

    labelers: list[str]
    gt_rows: list[pd.DataFrame] = field(default_factory=list)
    track_rows: list[pd.DataFrame] = field(default_factory=list)
    label_parts: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    swap_rows: list[dict[str, Any]] = field(default_factory=list)
    video_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_hidden: int = 0  # keypoints hidden under another animal (multi-animal)
    written: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.label_parts = {name: [] for name in self.labelers}


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
    n_kp = len(keypoint_layout(p)[1])
    occl_masks = bedding_occlusions(p, n_kp, sum(v.labeled for v in specs), root_ss.spawn(1)[0])
    acc = _Collected(list(p.labelers))
    i_lab = 0
    for i_video, (spec, ss) in enumerate(zip(specs, seqs, strict=True)):
        occl = occl_masks[i_lab] if spec.labeled else None
        i_lab += spec.labeled
        _demo_video(p, out, spec, ss, i_video, occl, acc)
    _write_collected_data(p, out, acc)
    _remove_stale(out, acc.written)
    write_csv(pd.concat(acc.gt_rows, ignore_index=True), out / "ground_truth.csv",
              float_format="%.4f")
    write_csv(pd.concat(acc.track_rows, ignore_index=True), out / "ground_truth_tracks.csv",
              float_format="%.4f")
    swaps_csv = out / SWAPS_FILE
    if p.multi:
        write_csv(pd.DataFrame(acc.swap_rows, columns=SWAP_COLUMNS), swaps_csv)
    elif swaps_csv.exists():  # left over from a multi-animal demo
        swaps_csv.unlink()
    write_yaml(dlc_config(p, out, specs), out / "config.yaml")
    meta = metadata_table(p, specs)
    if metadata is not None:
        write_csv(meta, metadata)
    write_json(_manifest(p, specs, meta, int(occl_masks.sum()), acc), out / "demo_manifest.json")
    log.info("demo project written to %s (%d videos, %d labeled)", out, len(specs),
             sum(v.labeled for v in specs))
    return out


def _demo_video(p: DemoParams, out: Path, spec: VideoSpec, ss: np.random.SeedSequence,
                i_video: int, occl: np.ndarray | None, acc: _Collected) -> None:
    """Simulate, draw and write one video; a labeled one (``occl``: its bedding occlusions,
    (labeled frames, keypoints)) also gets its frames, ground truth and labels."""
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
    pts = frame_keypoints(kps, marks)  # (frames, keypoints, 2)
    kp_inds, kp_bps = keypoint_layout(p)
    acc.track_rows.append(_track_table(spec.name, pts, kp_inds, kp_bps))
    if occl is not None:
        frames_l = pick_frames(p, meets, rng_pick)
    else:
        frames_l, occl = np.array([], int), np.zeros((0, len(kp_bps)), bool)
    occl_of = {int(f): list(np.flatnonzero(occl[k])) for k, f in enumerate(frames_l)}
    clutter = clutter_patches(p, spec.condition, pts, ss)  # demo.clutter (default: none)
    frames = render_video(bg, poses[depth], kps[depth], pts, rng_img, occl_of, clutter)
    video = out / "videos" / f"{spec.name}.mp4"
    write_video(video, frames, p.fps)
    acc.written.add(video)
    if p.multi:
        acc.video_extra[spec.name] = {
            "depth_order": [individuals(p)[int(a)] for a in depth],
            "meeting_frames": [int(t) for t in meets],
        }
    if spec.labeled:
        _label_video(p, out, spec.name, frames_l, frames, pts, occl,
                     (poses, kps, marks, depth), rng_lab, acc)


def clutter_patches(p: DemoParams, condition: str, pts: np.ndarray,
                    ss: np.random.SeedSequence) -> dict[int, np.ndarray] | None:
    """``demo.clutter[condition]`` bedding patches per frame, each centred within 4 px of a
    random keypoint: heavier occlusion in that condition, the keypoints still labeled (a labeler
    estimates a paw under bedding). None (no random draw at all) when the condition has none,
    so the default demo stays byte-identical."""
    n = int(p.clutter.get(condition, 0))
    if n <= 0:
        return None
    rng = np.random.default_rng(ss.spawn(1)[0])
    out = {}
    for t in range(len(pts)):
        k = rng.integers(0, len(pts[t]), n)
        out[t] = pts[t][k] + rng.uniform(-4.0, 4.0, (n, 2))
    return out


def _label_video(p: DemoParams, out: Path, video: str, frames_l: np.ndarray,
                 frames: list[np.ndarray], pts: np.ndarray, occl: np.ndarray,
                 scene: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 rng_lab: np.random.Generator, acc: _Collected) -> None:
    """A labeled video's PNG frames, ground truth and every labeler's labels. ``scene`` =
    (poses, kps, marks, depth) of the video; ``occl`` (labeled frames, keypoints) bedding."""
    poses, kps, marks, depth = scene
    kp_inds, kp_bps = keypoint_layout(p)
    (out / "labeled-data" / video).mkdir(parents=True, exist_ok=True)
    images = [
        f"labeled-data/{video}/{dlcio.dlc_frame_name(int(f), p.frames_per_video)}"
        for f in frames_l
    ]
    for img_rel, f in zip(images, frames_l, strict=True):
        write_png(out / img_rel, frames[int(f)])
        acc.written.add(out / img_rel)
    truth = pts[frames_l]  # (n_lab, keypoints, 2)
    hidden_by: np.ndarray | None = None
    if p.multi:  # keypoints under another animal's body: hidden in the image, like bedding
        hidden_by = np.array(
            [hidden_by_animals(p, poses, kps, marks, depth, int(t)) for t in frames_l], object
        ).reshape(len(frames_l), len(kp_bps))
        hidden_by = np.where(occl, "bedding", hidden_by)
        acc.n_hidden += int(((hidden_by != "") & (hidden_by != "bedding")).sum())
        occl = occl | (hidden_by != "")
    acc.gt_rows.append(_truth_table(video, images, frames_l, truth, occl, kp_inds, kp_bps,
                                    hidden_by))
    for lf in simulate_labels(p, truth, occl, poses[:, frames_l], rng_lab):
        for r, a, b in lf.swaps:
            acc.swap_rows.append({S.IMAGE: images[lf.rows[r]], S.VIDEO: video,
                                  S.FRAME: int(frames_l[lf.rows[r]]), S.SCORER: lf.labeler,
                                  "individual_a": individuals(p)[a],
                                  "individual_b": individuals(p)[b]})
        acc.label_parts[lf.labeler].append(
            _labels_table(lf.labeler, [images[r] for r in lf.rows], lf.xy, kp_inds, kp_bps))


def _write_collected_data(p: DemoParams, out: Path, acc: _Collected) -> None:
    """One CollectedData file per (video, labeler), DLC >= 2.2 layout (3-level row index)."""
    for labeler, parts in acc.label_parts.items():
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
            acc.written |= {h5, h5.with_suffix(".csv")}


def _manifest(p: DemoParams, specs: list[VideoSpec], meta: pd.DataFrame, n_bedding: int,
              acc: _Collected) -> dict[str, Any]:
    """demo_manifest.json: seed, params, labelers, bias, videos (+ multi-animal extras)."""
    params_out = dataclasses.asdict(p)
    if not p.multi:  # a single-animal demo's manifest stays as it was before multi-animal keys
        for k in _MULTI_KEYS:
            params_out.pop(k)
    if not p.clutter:  # the default demo's manifest stays as it was before demo.clutter
        params_out.pop("clutter")
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
        "occluded_keypoints": int(n_bedding),
    }
    if p.multi:
        for v in videos:
            v.update(acc.video_extra[v[S.VIDEO]])
        manifest["occluded_keypoints"] = int(n_bedding + acc.n_hidden)
        manifest.update({
            "bedding_occlusions": int(n_bedding),
            "animal_occlusions": acc.n_hidden,
            "individuals": individuals(p),
            "unique_bodyparts": list(p.unique_bodyparts),
            "swaps": {"labeler": p.swap_labeler, "fraction": p.swap_fraction,
                      "file": SWAPS_FILE, "n": len(acc.swap_rows)},
        })
    return manifest


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
