"""`poseops init`: a DLC project under data/raw + DVC; a clone pulls byte-identical data back."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from poseops.cli import main
from poseops.commands.init import init_project
from poseops.core import schema as S

BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    DVC_NO_ANALYTICS="1",
    GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
    GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org",
)


def sh(*cmd: str, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(*args: str, cwd: Path) -> str:
    return sh(str(BIN / "dvc"), *args, cwd=cwd)


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def _stage_block(dvc_yaml: Path, name: str) -> str:
    """The text of one stage of our dvc.yaml (other stages may be work in progress)."""
    lines = dvc_yaml.read_text().splitlines()
    start = lines.index(f"  {name}:")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("  ") and not lines[i].startswith("   ")
                and lines[i].strip() and not lines[i].lstrip().startswith("#")), len(lines))
    block = "\n".join(lines[start:end]) + "\n"
    assert yaml.safe_load("stages:\n" + block)["stages"][name]["cmd"]
    return block


@pytest.fixture
def repo(tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git + DVC repository like ours: params.yaml, the ingest stage of our dvc.yaml."""
    r = tmp_path / "repo"
    r.mkdir()
    sh("git", "init", "-q", cwd=r)
    dvc("init", "-q", cwd=r)
    shutil.copy(repo_root / "params.yaml", r / "params.yaml")
    block = _stage_block(repo_root / "dvc.yaml", "ingest")
    (r / "dvc.yaml").write_text("stages:\n" + block)
    deps = yaml.safe_load("stages:\n" + block)["stages"]["ingest"]["deps"]
    for dep in (d for d in deps if d.startswith("src/")):  # the stage's code, same relative paths
        src, dst = repo_root / dep, r / dep
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    sh("git", "add", "-A", cwd=r)
    sh("git", "commit", "-q", "-m", "start", cwd=r)
    monkeypatch.chdir(r)
    return r


@pytest.fixture
def lab_project(openfield: Path, repo_root: Path) -> Path:
    """The openfield project with its video file (as a lab would have it)."""
    shutil.copy(repo_root.parent / "shared" / "data" / "dlc-openfield" / "videos" / "m3v1mp4.mp4",
                openfield / "videos")
    return openfield


def test_init_push_clone_pull_byte_identical(repo: Path, lab_project: Path, tmp_path: Path):
    original = {d: sha256_tree(lab_project / d) for d in ("videos", "labeled-data")}
    assert main(["init", str(lab_project), "--copy", "--name", "openfield"]) == 0
    proj = repo / "data" / "raw" / "openfield"
    # data in DVC, pointers + config.yaml in git
    assert (proj / "videos.dvc").is_file() and (proj / "labeled-data.dvc").is_file()
    ignored = sh("git", "check-ignore", "data/raw/openfield/videos/m3v1mp4.mp4", cwd=repo)
    assert ignored.strip()
    assert subprocess.run(["git", "check-ignore", "-q", "data/raw/openfield/config.yaml"],
                          cwd=repo).returncode == 1
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["project"]["path"] == "data/raw/openfield"
    # metadata template: every video (labeled-data folder, videos/ file), empty columns
    meta = pd.read_csv(repo / params["project"]["metadata"], dtype=str, keep_default_na=False)
    assert list(meta.columns) == [S.VIDEO, *S.METADATA_COLUMNS]
    assert sorted(meta[S.VIDEO]) == ["m3v1mp4", "m4s1"]
    assert (meta[S.METADATA_COLUMNS] == "").all().all()
    # default remote: a local directory, configured in the committed .dvc/config
    assert "dvc-storage" in (repo / ".dvc" / "config").read_text()
    dvc("repro", "ingest", cwd=repo)  # the pipeline runs on the new project
    dvc("push", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "add openfield", cwd=repo)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw" / "openfield" / "videos").exists()
    dvc("pull", cwd=clone)
    cproj = clone / "data" / "raw" / "openfield"
    for d, hashes in original.items():
        assert sha256_tree(cproj / d) == hashes, d
    assert len(original["labeled-data"]) == 116 + 2
    # the clone is up to date: the pulled labels table is the one built from the pulled data
    assert "up to date" in dvc("status", cwd=clone)
    labels = pd.read_parquet(clone / params["ingest"]["out"])
    assert len(labels) == 464 and set(labels[S.VIDEO]) == {"m4s1"}


def test_metadata_never_destroyed(repo: Path, lab_project: Path):
    meta_path = repo / "data" / "metadata" / "videos.csv"
    meta_path.parent.mkdir(parents=True)
    filled = "video,animal,session,condition,dose,camera,notes\nm4s1,m4,s1,vehicle,0.0,top,ok\n"
    meta_path.write_text(filled)
    init_project(lab_project, "copy", name="of")
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    assert meta.iloc[0].to_dict() == {"video": "m4s1", "animal": "m4", "session": "s1",
                                      "condition": "vehicle", "dose": "0.0", "camera": "top",
                                      "notes": "ok"}
    assert list(meta[S.VIDEO]) == ["m4s1", "m3v1mp4"]  # the new video appended, empty
    assert (meta.iloc[1].drop(S.VIDEO) == "").all()
    # --keep-metadata: untouched, byte for byte
    meta_path.write_text(filled)
    init_project(repo / "data" / "raw" / "of", "in-place", keep_metadata=True)
    assert meta_path.read_text() == filled


def test_in_place_demo_like_make_demo(repo: Path, tmp_path: Path):
    """`make demo`: poseops demo, then poseops init data/raw/demo --in-place --keep-metadata."""
    assert main(["demo", "--small"]) == 0
    before = (repo / "data" / "metadata" / "videos.csv").read_text()
    assert main(["init", "data/raw/demo", "--in-place", "--keep-metadata"]) == 0
    assert (repo / "data" / "metadata" / "videos.csv").read_text() == before
    assert (repo / "data" / "raw" / "demo" / "labeled-data.dvc").is_file()
    dvc("repro", "ingest", cwd=repo)
    labels = pd.read_parquet(repo / "data" / "interim" / "labels.parquet")
    assert labels[S.CONDITION].notna().all() and labels[S.SCORER].nunique() == 3
    # a second repro is a no-op
    assert "didn't change" in dvc("repro", "ingest", cwd=repo) or "up to date" in dvc(
        "status", cwd=repo
    )


def test_link_mode_and_errors(repo: Path, lab_project: Path, tmp_path: Path, capsys, caplog):
    assert main(["init", str(lab_project), "--link", "--name", "lk"]) == 0
    link = repo / "data" / "raw" / "lk"
    assert link.is_symlink() and link.resolve() == lab_project.resolve()
    assert not (repo / "data" / "raw" / "lk.dvc").exists()
    assert "cannot version" in caplog.text
    capsys.readouterr()
    assert main(["init", str(lab_project), "--link", "--name", "lk"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", str(lab_project), "--in-place"]) == 2
    assert "inside the repository" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- fitted params
def test_init_fits_params_to_the_project_not_the_demo(repo: Path, openfield_raw: Path, caplog):
    """The real openfield project as shipped: one labeled video, 640x480 frames, a placeholder
    video_sets key; the repository's metadata file describes the demo's videos."""
    import logging

    demo_meta = repo / "data" / "metadata" / "videos.csv"
    demo_meta.parent.mkdir(parents=True)
    demo_meta.write_text("video,animal,session,condition,dose,camera\nm1-s1,m1,s1,vehicle,0,top\n")
    before = demo_meta.read_text()
    with caplog.at_level(logging.INFO, logger="poseops.commands.init"):
        assert main(["init", str(openfield_raw), "--name", "of"]) == 0
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["project"]["metadata"] == "data/metadata/of.csv"
    assert demo_meta.read_text() == before  # another project's file is left alone
    meta = pd.read_csv(repo / "data" / "metadata" / "of.csv", dtype=str, keep_default_na=False)
    assert sorted(meta[S.VIDEO]) == ["m3v1mp4", "m4s1"]  # no row for the placeholder key
    assert "'WILL BE AUTOMATICALLY UPDATED BY DEMO CODE' is not a video" in caplog.text
    assert (params["train"]["crop_width"], params["train"]["crop_height"]) == (448, 448)
    assert "image sizes 640x480 (116 images)" in caplog.text
    assert params["evaluate"]["reference_bodyparts"] == ["snout", "tailbase"]
    assert params["split"]["mode"] == "temporal-blocks"
    assert params["analyze"]["videos"] == ["data/raw/of/videos/m3v1mp4.mp4"]
    for line in ("train.crop_width = 448", "split.mode = 'temporal-blocks'",
                 "evaluate.reference_bodyparts = ['snout', 'tailbase']"):
        assert line in caplog.text, line


def test_reference_bodyparts_and_crop_choices() -> None:
    from collections import Counter

    from poseops.commands.init import reference_bodyparts, training_crop

    assert reference_bodyparts(["Nose", "ear", "tail_base"], ["snout", "tailbase"]) == [
        "Nose", "tail_base"]
    assert reference_bodyparts(["snout", "tailbase", "x"], ["snout", "x"]) == ["snout", "x"]
    assert reference_bodyparts(["wing", "thorax", "abdomen"], ["snout", "tailbase"]) is None
    assert training_crop(Counter({(832, 747): 3, (640, 470): 2})) == (448, 448)
    assert training_crop(Counter({(160, 120): 5})) == (160, 120)
    assert training_crop(Counter({(1280, 300): 1, (200, 400): 1})) == (448, 400)
    assert training_crop(Counter()) is None


def test_init_lightning_pose_folder(repo: Path, tmp_path: Path, caplog):
    import logging

    from support.e2e import lightning_pose_variant

    lp = lightning_pose_variant(tmp_path / "lp", scale=0.25)
    with caplog.at_level(logging.INFO, logger="poseops.commands.init"):
        assert main(["init", str(lp), "--format", "lightning-pose"]) == 0
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["project"] == {"path": "data/raw/lp", "format": "lightning-pose",
                                 "metadata": "data/metadata/videos.csv"}  # no file yet: used
    assert (params["train"]["crop_width"], params["train"]["crop_height"]) == (160, 120)
    assert params["evaluate"]["reference_bodyparts"] == ["snout", "tailbase"]
    ready = next(r.getMessage() for r in caplog.records if "ready:" in r.getMessage())
    assert "config.yaml" not in ready and "data/raw/lp/CollectedData.csv" in ready
    dvc("repro", "ingest", cwd=repo)  # the ingest stage has no config.yaml dependency
    labels = pd.read_parquet(repo / params["ingest"]["out"])
    assert labels[S.IMAGE].nunique() == 116 and set(labels[S.WIDTH]) == {160}


def test_validation_interval_bounds_the_validated_pixels_per_epoch() -> None:
    """Validation megapixels per epoch on average (megapixels / interval) stay under the budget
    unless the interval is capped; small projects validate every epoch."""
    from poseops.commands.init import (
        MAX_EVAL_INTERVAL,
        VALIDATION_MEGAPIXELS_PER_EPOCH,
        validation_interval,
    )

    assert validation_interval({(224, 160): 60}, 0.3) == (1, pytest.approx(224 * 160 * 60 * 0.24 / 1e6))
    seen = []
    for n in (76, 300, 1000, 5000, 50000):
        interval, mp = validation_interval({(1280, 720): n}, 0.3)
        assert mp == pytest.approx(1280 * 720 * n * 0.8 * 0.3 / 1e6)  # the val share of non-test
        assert 1 <= interval <= MAX_EVAL_INTERVAL
        if interval < MAX_EVAL_INTERVAL:
            assert mp / interval <= VALIDATION_MEGAPIXELS_PER_EPOCH
        if interval > 1:  # not more often skipped than needed
            assert mp / (interval - 1) > VALIDATION_MEGAPIXELS_PER_EPOCH
        seen.append(interval)
    assert seen == sorted(seen) and seen[0] == 1 and seen[-1] == MAX_EVAL_INTERVAL


def test_init_sets_eval_interval_for_a_large_multianimal_project(tmp_path: Path, monkeypatch):
    """A maDLC project with many large frames: init validates every few epochs and says why; the
    same project with few frames keeps validating every epoch."""
    from poseops.commands import init as I
    from poseops.config.demo import DemoParams
    from poseops.demo.project import generate_demo

    project = generate_demo(tmp_path / "demo", DemoParams.small_multi(animals_per_video=2))
    updates, notes = I.fitted_params(project, Path("data/raw/demo"), "dlc", {})
    assert "eval_interval" not in updates.get("train", {})
    monkeypatch.setattr(I, "labeled_image_sizes", lambda _: {(1280, 720): 600})
    updates, notes = I.fitted_params(project, Path("data/raw/demo"), "dlc", {})
    expected = math.ceil(1280 * 720 * 600 * 0.8 * 0.3 / 1e6 / I.VALIDATION_MEGAPIXELS_PER_EPOCH)
    assert updates["train"]["eval_interval"] == expected > 1
    assert any(n.startswith(f"train.eval_interval = {expected}") for n in notes)
