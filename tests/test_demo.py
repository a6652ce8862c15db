"""The bundled demo project: deterministic, DLC-readable, and its numbers match its ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.cli import main
from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core import schema as S
from poseops.demo.project import generate_demo
from poseops.dlc import files as dlcio


def _labels(project: Path, scorer: str) -> pd.DataFrame:
    parts = [
        dlcio.wide_to_long(pd.read_hdf(f))
        for f in sorted((project / "labeled-data").glob(f"*/CollectedData_{scorer}.h5"))
    ]
    return pd.concat(parts, ignore_index=True)


def _with_truth(project: Path, scorer: str) -> pd.DataFrame:
    gt = pd.read_csv(project / "ground_truth.csv")
    lab = _labels(project, scorer)
    return lab.merge(gt, on=[S.IMAGE, S.BODYPART], suffixes=("", "_true"), validate="one_to_one")


def _hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.suffix in (".csv", ".png"):
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_byte_for_byte_deterministic(tmp_path: Path):
    p = DemoParams.small()
    a = generate_demo(tmp_path / "a" / "demo", p, metadata=tmp_path / "a" / "meta.csv")
    b = generate_demo(tmp_path / "b" / "demo", p, metadata=tmp_path / "b" / "meta.csv")
    ha, hb = _hashes(a.parent), _hashes(b.parent)
    assert len(ha) == 6 * (6 + 3) + 2 + 1  # per video 6 PNG + 3 labeler CSVs; 2 truth; metadata
    assert ha == hb
    c = generate_demo(tmp_path / "c" / "demo", DemoParams.small(seed=8))
    hc = _hashes(c.parent)
    assert hc["demo/ground_truth.csv"] != ha["demo/ground_truth.csv"]


def test_regenerating_keeps_every_file_identical(tmp_path: Path):
    """`make demo` twice: no file changes (DVC sees no change, nothing reruns); files of an
    earlier, larger demo are removed."""
    out = tmp_path / "demo"
    generate_demo(out, DemoParams.small(animals=3))
    generate_demo(out, DemoParams.small())
    first = {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in sorted(out.rglob("*")) if f.is_file()}
    generate_demo(out, DemoParams.small())
    again = {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in sorted(out.rglob("*")) if f.is_file()}
    assert first == again
    assert not (out / "labeled-data" / "m3-s1").exists()
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        "m1-s1.mp4", "m1-s2.mp4", "m1-s3.mp4", "m1-s4.mp4", "m2-s1.mp4", "m2-s2.mp4", "m2-s3.mp4"]


def test_design_and_metadata(demo_project: Path, demo_metadata: Path):
    p = DemoParams()
    meta = pd.read_csv(demo_metadata)
    assert list(meta.columns) == [S.VIDEO, *S.METADATA_COLUMNS]
    labeled = meta[meta[S.VIDEO].isin([d.name for d in (demo_project / "labeled-data").iterdir()])]
    assert len(labeled) == p.animals * p.sessions
    assert len(meta) == p.animals * p.sessions + p.unlabeled_videos
    # crossover: every animal gets every condition exactly once
    per_animal = labeled.groupby(S.ANIMAL)[S.CONDITION].agg(lambda c: sorted(c))
    assert all(c == sorted(p.conditions) for c in per_animal)
    assert dict(zip(labeled[S.CONDITION], labeled[S.DOSE], strict=True)) == dict(
        zip(p.conditions, p.doses, strict=True)
    )
    manifest = json.loads((demo_project / "demo_manifest.json").read_text())
    assert manifest["seed"] == p.seed and manifest["labelers"] == p.labelers
    assert manifest["bias"] == {"labeler": "carol", "bodypart": "snout", "dx_dy_px": [4.0, 0.0]}


def test_careful_labelers_within_noise_of_truth(demo_project: Path):
    noise = DemoParams().labeler_noise_px
    for scorer in ("alice", "bob"):
        d = _with_truth(demo_project, scorer).dropna(subset=[S.X])
        err = np.concatenate([d[S.X] - d["x_true"], d[S.Y] - d["y_true"]])
        assert abs(err.mean()) < 0.3, scorer
        assert 0.75 * noise < err.std() < 1.25 * noise, scorer
        assert np.abs(err).max() < 5 * noise, scorer


def test_occluded_keypoints_are_nan_for_everyone(demo_project: Path):
    p = DemoParams()
    gt = pd.read_csv(demo_project / "ground_truth.csv")
    n = p.animals * p.sessions * p.labeled_per_video * len(BODYPARTS)
    assert len(gt) == n
    assert gt["occluded"].sum() == round(p.occlusion_rate * n)
    for scorer in p.labelers:
        d = _with_truth(demo_project, scorer)
        assert (d[S.X].isna() == d["occluded"]).all(), scorer
        assert (d[S.Y].isna() == d["occluded"]).all(), scorer
    alice = _with_truth(demo_project, "alice")
    assert alice[S.X].isna().mean() == pytest.approx(p.occlusion_rate, abs=0.005)


def test_biased_labeler_offset(demo_project: Path):
    p = DemoParams()
    carol = _with_truth(demo_project, "carol").dropna(subset=[S.X])
    snout = carol[carol[S.BODYPART] == p.biased_bodypart]
    assert len(snout) >= 30
    dx = (snout[S.X] - snout["x_true"]).mean()
    dy = (snout[S.Y] - snout["y_true"]).mean()
    assert dx == pytest.approx(p.bias_px[0], abs=0.5) and dy == pytest.approx(p.bias_px[1], abs=0.5)
    other = carol[carol[S.BODYPART] != p.biased_bodypart]
    assert abs((other[S.X] - other["x_true"]).mean()) < 0.3
    # the overlapping subset: bob and carol relabel the same frames, all also labeled by alice
    imgs = {s: set(_labels(demo_project, s)[S.IMAGE]) for s in p.labelers}
    assert imgs["bob"] == imgs["carol"] < imgs["alice"]
    assert len(imgs["bob"]) == round(p.multi_labeled_fraction * p.labeled_per_video) * 12


def test_condition_changes_locomotion(demo_project: Path, demo_metadata: Path):
    tracks = pd.read_csv(demo_project / "ground_truth_tracks.csv")
    tb = tracks[tracks[S.BODYPART] == "tailbase"].sort_values([S.VIDEO, S.FRAME])
    step = np.hypot(tb.groupby(S.VIDEO)[S.X].diff(), tb.groupby(S.VIDEO)[S.Y].diff())
    speed = step.groupby(tb[S.VIDEO]).mean().rename("speed").reset_index()
    meta = pd.read_csv(demo_metadata).merge(speed, on=S.VIDEO)
    by_cond = meta.groupby(S.CONDITION)["speed"].mean()
    assert by_cond["vehicle"] < by_cond["low_dose"] < by_cond["high_dose"]
    assert by_cond["high_dose"] / by_cond["vehicle"] > 1.5
    # every single high-dose video is faster than every vehicle video of the same animal
    for _, g in meta[meta[S.VIDEO].str.match(r"m\d-s[123]$")].groupby(S.ANIMAL):
        s = g.set_index(S.CONDITION)["speed"]
        assert s["high_dose"] > s["vehicle"]


def test_videos_readable_and_show_the_animal_where_truth_says(demo_project: Path):
    import cv2

    p = DemoParams()
    tracks = pd.read_csv(demo_project / "ground_truth_tracks.csv")
    videos = sorted((demo_project / "videos").glob("*.mp4"))
    assert len(videos) == p.animals * p.sessions + p.unlabeled_videos
    for v in videos[:3] + videos[-1:]:
        cap = cv2.VideoCapture(str(v))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == p.frames_per_video
        t = tracks[tracks[S.VIDEO] == v.stem]
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (p.height, p.width, 3)
            if n % 15 == 0:  # the dark blob's centroid sits between ears and tail base
                dark = frame.mean(axis=2) < 80
                dark[:8], dark[-8:], dark[:, :8], dark[:, -8:] = False, False, False, False
                ys, xs = np.nonzero(dark)
                kp = t[t[S.FRAME] == n].set_index(S.BODYPART)
                mid = (kp.loc[["leftear", "rightear"], [S.X, S.Y]].mean() + kp.loc["tailbase", [S.X, S.Y]]) / 2
                assert np.hypot(xs.mean() - mid[S.X], ys.mean() - mid[S.Y]) < 4.0
            n += 1
        assert n == p.frames_per_video


def test_labeled_frames_are_dlc_named_pngs_of_the_right_size(demo_project: Path):
    from PIL import Image

    p = DemoParams()
    gt = pd.read_csv(demo_project / "ground_truth.csv")
    for img in gt[S.IMAGE].unique():
        f = demo_project / img
        assert Image.open(f).size == (p.width, p.height)
        frame = int(gt.loc[gt[S.IMAGE] == img, S.FRAME].iloc[0])
        assert f.name == "img" + str(frame).zfill(int(np.ceil(np.log10(p.frames_per_video)))) + ".png"
    for d in (demo_project / "labeled-data").iterdir():
        assert len(list(d.glob("*.png"))) == p.labeled_per_video


def test_deeplabcut_reads_the_project(demo_copy: Path):
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(str(demo_copy / "config.yaml"))
    assert cfg["scorer"] == "alice" and list(cfg["bodyparts"]) == BODYPARTS
    assert not cfg["multianimalproject"]
    (demo_copy / "ts").mkdir()
    merged = merge_annotateddatasets(cfg, demo_copy / "ts")
    assert merged.shape == (12 * 10, 8)
    alice = _labels(demo_copy, "alice")
    wide = dlcio.labels_to_wide(alice, "alice", BODYPARTS)
    pd.testing.assert_frame_equal(merged, wide, check_names=False)


def test_cli_writes_project_and_metadata(tmp_path: Path, repo_root: Path):
    out, meta = tmp_path / "proj", tmp_path / "m" / "videos.csv"
    rc = main(["demo", "--small", "--out", str(out), "--metadata", str(meta),
               "--params", str(repo_root / "params.yaml")])
    assert rc == 0
    assert (out / "config.yaml").is_file() and meta.is_file()
    assert len(pd.read_csv(meta)) == 2 * 3 + 1
