"""`poseops init PATH`: bring an existing DeepLabCut project under ``data/raw/`` and version it.

Run from the repository root (a git + DVC repository). Steps:

1. Place the project at ``data/raw/<name>``: ``--copy`` (default), ``--link`` (a symlink to PATH:
   nothing is copied, but DVC cannot version files inside a symlinked folder, so the data is
   left unversioned with a warning) or ``--in-place`` (PATH is already inside the repository).
2. ``dvc add`` its ``videos/`` and ``labeled-data/`` (data in DVC, ``*.dvc`` pointers in git;
   ``config.yaml`` stays a plain git file).
3. A default DVC remote: ``--remote URL`` (a directory, ``s3://...``, ``ssh://...``), else, when
   the repository has no default remote yet, the local directory ``<repo>/dvc-storage``
   (absolute path). It goes into the committed ``.dvc/config`` so that every clone on this
   machine (or share) can ``dvc pull``; an existing default remote is kept unless ``--remote``.
4. A metadata template at params ``project.metadata``: one row per video (labeled-data folders,
   videos/, config video_sets) with empty animal, session, condition, dose, camera. Rows already
   in the file are never changed; missing videos are appended. ``--keep-metadata`` leaves an
   existing file untouched.
5. params.yaml ``project.path`` (and ``project.format``) point at the project.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from poseops import dlcio
from poseops import schema as S
from poseops.errors import PoseopsError
from poseops.fileio import write_csv
from poseops.ingest import ProjectParams
from poseops.params import params_path, section, update_params

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".m4v", ".h264"}
DATA_DIRS = ("videos", "labeled-data")
DEFAULT_STORAGE = "dvc-storage"
REMOTE_NAME = "storage"
METADATA_TEMPLATE_COLUMNS = [S.VIDEO, *S.METADATA_COLUMNS]


# --------------------------------------------------------------------------- dvc / git calls
def dvc_executable() -> str:
    """The dvc of this environment (the venv's bin dir first), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    if local.exists():
        return str(local)
    found = shutil.which("dvc")
    if not found:
        raise PoseopsError("dvc not found: install poseops' dependencies (make setup)")
    return found


def run_dvc(args: list[str], cwd: Path) -> str:
    """Run ``dvc ARGS`` in ``cwd`` (analytics off); a failure becomes a one-line PoseopsError."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [dvc_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        err = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise PoseopsError(f"`dvc {' '.join(args)}` failed: {err.strip()}")
    return proc.stdout


def ensure_dvc_repo(root: Path) -> None:
    """``dvc init`` when needed (in a git repository), with analytics and update checks off."""
    if not (root / ".git").exists():
        raise PoseopsError(
            "not a git repository: run poseops init from the repository root", file=root
        )
    if not (root / ".dvc").is_dir():
        run_dvc(["init", "-q"], root)
    run_dvc(["config", "core.analytics", "false"], root)
    run_dvc(["config", "core.check_update", "false"], root)


def default_remote(root: Path) -> str | None:
    """Name of the repository's default DVC remote (any config level), or None."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    proc = subprocess.run(
        [dvc_executable(), "remote", "default"], cwd=root, env=env, capture_output=True, text=True
    )
    # exits 1 with "No default remote set" when there is none
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def configure_remote(root: Path, url: str | None) -> str | None:
    """Set the default remote to ``url``; without ``url``, add ``<root>/dvc-storage`` only when
    no default remote exists. Returns the remote's URL (None when an existing one was kept)."""
    if url is None:
        if default_remote(root):
            log.info("keeping the existing default DVC remote %r", default_remote(root))
            return None
        url = str((root / DEFAULT_STORAGE).resolve())
    elif "://" not in url:
        url = str(Path(url).expanduser().resolve())
    names = run_dvc(["remote", "list"], root).split()
    if REMOTE_NAME in names:
        run_dvc(["remote", "modify", REMOTE_NAME, "url", url], root)
        run_dvc(["remote", "default", REMOTE_NAME], root)
    else:
        run_dvc(["remote", "add", "-d", REMOTE_NAME, url], root)
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    log.info("default DVC remote %r -> %s (in .dvc/config)", REMOTE_NAME, url)
    return url


# --------------------------------------------------------------------------- project placement
def place_project(src: Path, root: Path, mode: str, name: str | None) -> Path:
    """Copy/link ``src`` to ``root/data/raw/<name>`` (or check it is inside ``root`` for in-place);
    returns the project path relative to ``root``."""
    src_abs = src.resolve() if mode != "link" else src.absolute()
    if mode == "in-place":
        try:
            rel = src.resolve().relative_to(root.resolve())
        except ValueError:
            raise PoseopsError(
                "--in-place needs a project inside the repository (use --copy or --link)", file=src
            ) from None
        return rel
    dest_rel = Path("data") / "raw" / (name or src_abs.name)
    dest = root / dest_rel
    if dest.exists() or dest.is_symlink():
        raise PoseopsError(
            "destination already exists (use --in-place to version it where it is)", file=dest
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        log.info("copying %s -> %s", src_abs, dest_rel)
        shutil.copytree(src_abs, dest, symlinks=False)
    else:
        os.symlink(src_abs, dest, target_is_directory=True)
        log.info("linked %s -> %s", dest_rel, src_abs)
    return dest_rel


def project_videos(project: Path) -> list[str]:
    """Every video name of a project: labeled-data folders, videos/ files, config video_sets."""
    names: set[str] = set()
    ld = project / "labeled-data"
    if ld.is_dir():
        names |= {p.name for p in ld.iterdir() if p.is_dir() and not p.name.startswith(".")}
    vids = project / "videos"
    if vids.is_dir():
        names |= {p.stem for p in vids.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES}
    if (project / "config.yaml").is_file():
        names |= set(dlcio.video_set_names(dlcio.read_config(project)))
    return sorted(names)


def write_metadata_template(path: Path, videos: list[str], keep: bool) -> int:
    """Create/extend the metadata CSV; never changes existing rows. Returns rows added."""
    if path.is_file():
        if keep:
            log.info("keeping %s as it is (--keep-metadata)", path)
            return 0
        try:
            existing = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise PoseopsError(f"cannot read existing metadata: {e}", file=path) from e
        if S.VIDEO not in existing.columns:
            raise PoseopsError("existing metadata has no 'video' column; fix or remove it", file=path)
        new = [v for v in videos if v not in set(existing[S.VIDEO])]
        if not new:
            return 0
        cols = list(existing.columns) + [c for c in METADATA_TEMPLATE_COLUMNS if c not in existing]
        add = pd.DataFrame({c: [v if c == S.VIDEO else "" for v in new] for c in cols})
        write_csv(pd.concat([existing.reindex(columns=cols, fill_value=""), add]), path)
        log.info("added %d video(s) to %s: fill in their metadata", len(new), path)
        return len(new)
    table = pd.DataFrame({c: [v if c == S.VIDEO else "" for v in videos]
                          for c in METADATA_TEMPLATE_COLUMNS})
    write_csv(table, path)
    log.info("wrote metadata template %s (%d videos): fill in %s", path, len(videos),
             ", ".join(S.METADATA_COLUMNS))
    return len(videos)


def init_project(
    src: Path,
    mode: str = "copy",
    keep_metadata: bool = False,
    remote: str | None = None,
    name: str | None = None,
    root: Path | None = None,
    params_file: str | Path | None = None,
    fmt: str = "dlc",
) -> Path:
    """Bring ``src`` under ``root/data/raw`` and DVC; returns the project path relative to root."""
    root = Path(root or Path.cwd())
    src = Path(src)
    if mode not in ("copy", "link", "in-place"):
        raise ValueError(mode)
    if not src.is_dir():
        raise PoseopsError("project folder not found", file=src)
    if fmt == "dlc":
        dlcio.read_config(src)  # a DLC project? (clear error otherwise)
    ppath = params_path(params_file)
    if not ppath.is_absolute():
        ppath = root / ppath
    if not ppath.is_file():
        raise PoseopsError("params file not found (run from the repository root)", file=ppath)
    ensure_dvc_repo(root)
    rel = place_project(src, root, mode, name)
    project = root / rel
    data_dirs = [str(rel / d) for d in DATA_DIRS if (project / d).is_dir()]
    if mode == "link":
        log.warning(
            "%s is a symlink: DVC cannot version files inside a symlinked folder, so videos/ and "
            "labeled-data/ stay unversioned where they are (use --copy to version them)", rel,
        )
    elif data_dirs:
        log.info("dvc add %s", " ".join(data_dirs))
        run_dvc(["add", *data_dirs], root)
    configure_remote(root, remote)
    proj = section("project", ProjectParams, ppath)
    meta_path = Path(proj.metadata)
    meta_path = meta_path if meta_path.is_absolute() else root / meta_path
    write_metadata_template(meta_path, project_videos(project), keep_metadata)
    if (proj.path, proj.format) != (rel.as_posix(), fmt):  # no rewrite (and no diff) otherwise
        update_params({"project": {"path": rel.as_posix(), "format": fmt}}, ppath)
        log.info("params.yaml project.path = %s", rel.as_posix())
    to_commit = [f"{d}.dvc" for d in data_dirs] + [str(rel / ".gitignore"), str(rel / "config.yaml")]
    log.info(
        "project %s ready. Commit with git: %s, %s, .dvc/config, params.yaml; then `dvc push`",
        rel, " ".join(to_commit) if mode != "link" else "", meta_path,
    )
    return rel


def run(args: argparse.Namespace) -> int:
    mode = "link" if args.link else "in-place" if args.in_place else "copy"
    init_project(
        Path(args.path), mode, args.keep_metadata, args.remote, args.name,
        params_file=args.params_file, fmt=args.fmt,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init",
        help="bring an existing DLC project under data/raw/ and DVC; write a metadata template",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("path", help="the DeepLabCut project folder (config.yaml inside)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--copy", action="store_true", help="copy it to data/raw/<name> (default)")
    how.add_argument("--link", action="store_true",
                     help="symlink data/raw/<name> to it (no copy; data not versioned by DVC)")
    how.add_argument("--in-place", action="store_true", help="it is already inside the repository")
    p.add_argument("--name", help="folder name under data/raw (default: the project folder name)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="leave an existing metadata CSV untouched")
    p.add_argument("--remote", help="default DVC remote URL (directory, s3://, ssh://, ...)")
    p.add_argument("--format", dest="fmt", default="dlc", choices=("dlc", "lightning-pose"))
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=run)
