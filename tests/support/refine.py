"""Helpers for the refinement-loop tests: a git + DVC repository holding the demo project, and
an "annotator" that relabels frames from the demo generator's ground truth."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from poseops.dlc import files as dlcio

BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path) -> str:
    if cmd[0] == "dvc":
        cmd = [str(BIN / "dvc"), *cmd[1:]]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr}{r.stdout}"
    return r.stdout.strip()


def git_identity(monkeypatch) -> None:
    for k in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{k}_NAME", "poseops test")
        monkeypatch.setenv(f"{k}_EMAIL", "test@example.invalid")


def make_repo(root: Path, project_src: Path, metadata_src: Path) -> tuple[Path, Path, Path]:
    """root/ as a git + DVC repository: data/raw/demo (dvc add-ed), data/metadata/videos.csv.
    Returns (repo, project, metadata)."""
    import yaml

    repo = root / "repo"
    project = repo / "data" / "raw" / "demo"
    shutil.copytree(project_src, project)
    meta = repo / "data" / "metadata" / "videos.csv"
    meta.parent.mkdir(parents=True)
    shutil.copy2(metadata_src, meta)
    cfg_path = project / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["project_path"] = str(project)
    cfg["video_sets"] = {str(project / "videos" / Path(k).name): v
                         for k, v in (cfg.get("video_sets") or {}).items()}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    sh(["dvc", "config", "core.autostage", "false"], repo)
    sh(["dvc", "add", "-q", "data/raw/demo"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "iteration 0"], repo)
    return repo, project, meta


def relabel_from_truth(project: Path, manifest: pd.DataFrame, scorer: str,
                       rename: dict[str, str] | None = None) -> list[Path]:
    """The annotator: labels the manifest frames with the generator's true keypoints
    (ground_truth_tracks.csv) and saves them into CollectedData_<scorer>.h5 next to the frames,
    keeping rows already there (as DLC's labeling GUI does). ``rename`` maps bodyparts to wrong
    names (a broken relabeled file)."""
    tracks = pd.read_csv(project / "ground_truth_tracks.csv")
    cfg = dlcio.read_config(project)
    written = []
    for video, part in manifest.groupby("video"):
        t = tracks[(tracks.video == video) & tracks.frame.isin(part.frame)]
        t = t.merge(part[["frame", "image"]], on="frame").assign(scorer=scorer)
        bps = list(cfg["bodyparts"])
        if rename:
            t["bodypart"] = t["bodypart"].replace(rename)
            bps = [rename.get(b, b) for b in bps]
        h5 = project / "labeled-data" / str(video) / f"CollectedData_{scorer}.h5"
        new = t[["image", "scorer", "bodypart", "x", "y"]]
        if h5.is_file():
            old = dlcio.wide_to_long(dlcio.read_collected_data(h5))
            old = old[~old.image.isin(new.image)][["image", "scorer", "bodypart", "x", "y"]]
            new = pd.concat([old, new], ignore_index=True)
        dlcio.write_collected_data(dlcio.labels_to_wide(new, scorer, bps), h5)
        written.append(h5)
    return written


def digest(paths: list[Path]) -> str:
    """md5 over file contents (a missing file counts as 'missing')."""
    h = hashlib.md5()
    for p in paths:
        h.update(str(p).encode())
        h.update(p.read_bytes() if p.is_file() else b"missing")
    return h.hexdigest()
