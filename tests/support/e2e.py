"""Helpers for the end-to-end tests: a copy of this repository as a clean clone holds it, shell
calls whose failures print the lines that say why, and project variants a lab really has, derived
from the real openfield project (../shared/data/dlc-openfield)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from poseops.dlc import files as dlcio

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OPENFIELD = REPO.parent / "shared" / "data" / "dlc-openfield"
STAGES = ["ingest", "consensus", "validate", "split", "composition", "train", "evaluate",
          "validate-report", "report"]


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1500) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (f"{' '.join(cmd)} failed ({r.returncode}):\n{error_lines(r.stderr)}\n"
                               f"--- stdout tail ---\n{r.stdout[-3000:]}\n--- stderr tail ---\n"
                               f"{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def error_lines(log: str, limit: int = 40) -> str:
    """The lines that say why a command failed; its tail is often only progress bars."""
    keys = ("error", "traceback", "exception", "no space", "killed")
    hits = [line for line in log.splitlines() if any(k in line.lower() for k in keys)]
    return "--- error lines ---\n" + "\n".join(hits[-limit:])


def copy_working_tree(dst: Path) -> None:
    """Tracked + untracked-not-ignored files: what a clean clone of the submitted tree holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def user_env() -> dict[str, str]:
    """The environment of a user's shell: this venv first, nothing calls home, a git identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", MLFLOW_DISABLE_TELEMETRY="true",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid", PYTHONUNBUFFERED="1")
    return env


def clone_repo(root: Path, env: dict[str, str]) -> Path:
    """``root/poseops``: the working tree as a fresh git repository (one commit)."""
    repo = root / "poseops"
    repo.mkdir(parents=True)
    copy_working_tree(repo)
    sh(["git", "init", "-q"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "clone"], repo, env)
    return repo


def fill_metadata(path: Path, rows: Callable[[str], dict[str, str]]) -> pd.DataFrame:
    """What a user does after ``poseops init``: fill in the template's empty columns."""
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    for i, video in enumerate(meta["video"]):
        for col, value in rows(video).items():
            meta.loc[i, col] = value
    meta.to_csv(path, index=False)
    return meta


# --------------------------------------------------------------------------- project variants
def openfield_labels() -> pd.DataFrame:
    """The openfield project's labels, wide as DLC stores them (116 rows, scorer Pranav)."""
    return dlcio.read_collected_data(OPENFIELD / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5")


def rescaled_video(dst_project: Path, video: str, wide: pd.DataFrame, scale: float,
                   flat_index: bool = False) -> pd.DataFrame:
    """Write the images of ``wide`` (openfield rows) resized by ``scale`` into
    ``dst_project/labeled-data/<video>/`` with their labels scaled alike; returns the new wide
    table (index: DLC 2.2's 3-level tuples, or flat ``labeled-data/<video>/imgNNNN.png``)."""
    from PIL import Image

    folder = dst_project / "labeled-data" / video
    folder.mkdir(parents=True, exist_ok=True)
    names = [dlcio.image_paths(wide.iloc[[i]])[0].split("/")[-1] for i in range(len(wide))]
    for name in names:
        with Image.open(OPENFIELD / "labeled-data" / "m4s1" / name) as im:
            size = (round(im.width * scale), round(im.height * scale))
            im.convert("RGB").resize(size, Image.BILINEAR).save(folder / name)
    out = wide.copy() * scale
    if flat_index:
        out.index = [f"labeled-data/{video}/{n}" for n in names]
    else:
        out.index = pd.MultiIndex.from_tuples([("labeled-data", video, n) for n in names])
    return out


def dlc_variant(dst: Path, videos: dict[str, tuple[slice, float]]) -> Path:
    """A DLC project from openfield: each new video takes a slice of its rows at a scale."""
    wide = openfield_labels()
    dst.mkdir(parents=True)
    cfg = yaml.safe_load((OPENFIELD / "config.yaml").read_text())
    cfg["video_sets"] = {}
    for video, (rows, scale) in videos.items():
        part = rescaled_video(dst, video, wide.iloc[rows], scale)
        dlcio.write_collected_data(part, dst / "labeled-data" / video / "CollectedData_Pranav.h5")
        h, w = (round(480 * scale), round(640 * scale))
        cfg["video_sets"][str(dst / "videos" / f"{video}.mp4")] = {"crop": f"0, {w}, 0, {h}"}
    cfg["project_path"] = str(dst)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (dst / "videos").mkdir()
    return dst


def lightning_pose_variant(dst: Path, scale: float, flat: bool = False) -> Path:
    """A Lightning Pose data folder from openfield: CollectedData.csv at the root (DLC's 3-row
    header, flat image paths), labeled-data/m4s1/*.png, videos/ (no config.yaml). ``flat``: the
    layout of Lightning Pose's own example, images directly in labeled-data/ (no video folder)."""
    dst.mkdir(parents=True)
    wide = rescaled_video(dst, "m4s1", openfield_labels(), scale, flat_index=True)
    if flat:
        for f in sorted((dst / "labeled-data" / "m4s1").iterdir()):
            f.rename(dst / "labeled-data" / f.name)
        (dst / "labeled-data" / "m4s1").rmdir()
        wide.index = [i.replace("labeled-data/m4s1/", "labeled-data/") for i in wide.index]
    wide.to_csv(dst / "CollectedData.csv")
    (dst / "videos").mkdir()
    shutil.copy(OPENFIELD / "videos" / "m3v1mp4.mp4", dst / "videos" / "m3v1mp4.mp4")
    return dst


def brute_force_min_gap(split: pd.DataFrame) -> float:
    """Smallest frame distance between two frames of one video in different splits (inf: none)."""
    best = np.inf
    for _, v in split.groupby("video"):
        frames, splits = v["frame"].to_numpy(), v["split"].to_numpy()
        for i in range(len(v)):
            for j in range(len(v)):
                if splits[i] != splits[j]:
                    best = min(best, abs(int(frames[i]) - int(frames[j])))
    return best
