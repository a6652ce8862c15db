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
4. A metadata template: one row per video of THIS project (labeled-data folders, videos/ files,
   config video_sets entries that name a video: DLC's example configs carry placeholder keys,
   which are skipped) with empty animal, session, condition, dose, camera. The file is params
   ``project.metadata`` when it already describes this project (rows already there are never
   changed; missing videos are appended), else ``data/metadata/<name>.csv`` (a file of another
   project, e.g. the demo's, is left alone) or ``--metadata PATH``. ``--keep-metadata`` leaves an
   existing file untouched.
5. params.yaml ``project`` points at the project, and the settings that depend on the project
   are fitted to it and reported (:func:`fitted_params`): the training crop from the real image
   sizes, the PCK reference bodyparts from its bodyparts (or null), the split mode from the
   number of labeled videos (one or two videos: temporal blocks within each video), the videos
   ``poseops analyze`` runs on. A multi-animal project (``multianimalproject: true``) is accepted:
   its bodyparts are ``multianimalbodyparts`` + ``uniquebodyparts``, the reference pair comes
   from the animals' bodyparts only, and a top-down ``train.net_type`` (which poseops cannot
   train on such a project) is replaced by the bottom-up default.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.data import SplitParams
from poseops.config.loader import load_params, params_path, update_params
from poseops.config.pipeline import PipelineParams
from poseops.config.train import TrainParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv
from poseops.dlc import files as dlcio
from poseops.train.project import check_multianimal_net

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


def labeled_videos(project: Path) -> list[str]:
    """The video keys of a project's labeled images (sorted): the labeled-data/<video> folders,
    and the project's name when images sit directly in labeled-data/ (Lightning Pose's flat
    layout: ingest names their video after the project folder)."""
    ld = project / "labeled-data"
    if not ld.is_dir():
        return []
    names = {p.name for p in ld.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if any(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in ld.iterdir()):
        names.add(project.name)
    return sorted(names)


def video_files(project: Path) -> list[Path]:
    """The video files in a project's videos/ folder (sorted)."""
    vids = project / "videos"
    if not vids.is_dir():
        return []
    return sorted(p for p in vids.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


def project_videos(project: Path) -> list[str]:
    """Every video name of a project: labeled-data folders, videos/ files, and the config
    video_sets entries that name a video (a video file suffix, or a labeled-data folder).
    Other video_sets keys (DLC's example configs hold placeholders such as ``WILL BE
    AUTOMATICALLY UPDATED BY DEMO CODE``) are skipped with a warning."""
    names = set(labeled_videos(project)) | {p.stem for p in video_files(project)}
    if (project / "config.yaml").is_file():
        for key, path in dlcio.video_set_paths(dlcio.read_config(project)).items():
            if path.suffix.lower() in VIDEO_SUFFIXES or path.stem in names:
                names.add(path.stem)
            else:
                log.warning("%s: video_sets entry %r is not a video (no video file suffix, no "
                            "labeled-data folder): no metadata row", project / "config.yaml", key)
    return sorted(names)


# --------------------------------------------------------------------------- fitted params
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DLC_DEFAULT_CROP = 448  # DLC 3's data.train.crop_sampling (larger images are cropped to it)
MIN_VIDEOS_FOR_GROUPED = 3  # grouped by video needs a train, a val and a test video
# Per-epoch validation of a multi-animal (PAF) model assembles animals on every validation image,
# which costs more than the network pass (measured: 2.6x at 320x180 on a weakly trained model)
# and grows with the pixels validated. Above this many validation megapixels per epoch, init
# validates every few epochs instead (model selection still sees every eval_interval-th epoch).
VALIDATION_MEGAPIXELS_PER_EPOCH = 20.0
MAX_EVAL_INTERVAL = 10
# (head-like, tail-like) names the field uses for a body-length reference, in preference order,
# as word sequences: a bodypart matches when its words start or end with one ('pup_snout',
# 'moth_nose', 'tailBase_pup'); a one-word generic name ('head', 'neck', 'tail') only whole
HEAD_NAMES = (("snout",), ("nose",), ("head",), ("neck",))
TAIL_NAMES = (("tailbase",), ("tail", "base"), ("base", "of", "tail"), ("tailstart",),
              ("tail", "start"), ("tail1",), ("tail", "1"), ("tail",))
WHOLE_ONLY = {("head",), ("neck",), ("tail",)}


def labeled_image_sizes(project: Path) -> Counter[tuple[int, int]]:
    """(width, height) -> number of images under labeled-data/ (headers only)."""
    ld = project / "labeled-data"
    files = sorted(f for f in ld.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if ld.is_dir() else []
    return Counter(dlcio.image_size(f) for f in files)


def project_bodyparts(project: Path, fmt: str) -> list[str]:
    """Bodyparts in project order: config.yaml (DLC; multi-animal: multianimalbodyparts then
    uniquebodyparts) or the label CSV header (Lightning Pose)."""
    if fmt == "dlc":
        return dlcio.config_bodyparts(dlcio.read_config(project))
    from poseops.data.ingest import lightning_pose_bodyparts

    return lightning_pose_bodyparts(project)


def _words(name: str) -> tuple[str, ...]:
    """'pup_tailBase-1' -> ('pup', 'tail', 'base', '1'): lower-case words of a bodypart name."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Za-z])(\d)", r"\1 \2", spaced)
    return tuple(w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w)


def _affix_matches(
    bodyparts: list[str], names: tuple[tuple[str, ...], ...]
) -> list[tuple[str, tuple[str, ...]]]:
    """(bodypart, the rest of its words) for each bodypart that is one of ``names`` with a
    prefix or suffix, best name first."""
    out = []
    for cand in names:
        want = [cand, ("".join(cand),)] if len(cand) > 1 else [cand]
        for b in bodyparts:
            w = _words(b)
            for c in want:
                n = len(c)
                if w == c or (cand not in WHOLE_ONLY and len(w) > n and w[:n] == c):
                    out.append((b, w[n:]))
                elif cand not in WHOLE_ONLY and len(w) > n and w[-n:] == c:
                    out.append((b, w[:-n]))
    return list(dict.fromkeys(out))


def reference_bodyparts(bodyparts: list[str], current: list[str] | None) -> list[str] | None:
    """Two bodyparts whose distance normalises errors (PCK@fraction): the current choice when the
    project has both, else the best head-like and tail-like names it has (snout/nose/head,
    tailbase/tail_base/base_of_tail/tail1, also with a prefix or suffix: 'pup_snout' and
    'pup_tailbase', preferring a pair that shares it), else None. On a multi-animal project the
    names are the individuals' bodyparts, so the pair is measured on each individual."""
    if current and all(b in bodyparts for b in current):
        return list(current)
    heads = _affix_matches(bodyparts, HEAD_NAMES)
    tails = _affix_matches(bodyparts, TAIL_NAMES)
    pairs = [(h, t) for h, ha in heads for t, ta in tails if h != t and ha == ta]
    pairs += [(h, t) for h, _ in heads for t, _ in tails if h != t]
    return list(pairs[0]) if pairs else None


def training_crop(sizes: Counter[tuple[int, int]]) -> tuple[int, int] | None:
    """DLC's 448 px crop, or the image size where the largest image is smaller (DLC pads smaller
    images to the crop, so a 448 crop on 160x120 images would mostly train on padding)."""
    if not sizes:
        return None
    width = max(w for w, _ in sizes)
    height = max(h for _, h in sizes)
    return min(DLC_DEFAULT_CROP, width), min(DLC_DEFAULT_CROP, height)


def fitted_params(
    project: Path, rel: Path, fmt: str, current: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The params.yaml settings that depend on the project, fitted to it (pure but for reading
    the project's headers). Returns (updates per section: only values that change, and one line
    per choice for the user)."""
    updates: dict[str, dict[str, Any]] = {}
    notes: list[str] = []

    def choose(section_: str, key: str, value: Any, why: str) -> None:
        notes.append(f"{section_}.{key} = {value!r}: {why}")
        if (current.get(section_) or {}).get(key) != value:
            updates.setdefault(section_, {})[key] = value

    sizes = labeled_image_sizes(project)
    crop = training_crop(sizes)
    if crop:
        shown = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items()))
        choose("train", "crop_width", crop[0], f"image sizes {shown}")
        choose("train", "crop_height", crop[1], f"crop {crop[0]}x{crop[1]} (DLC's 448 at most)")
    bodyparts = project_bodyparts(project, fmt)
    body = bodyparts
    if fmt == "dlc":
        cfg = dlcio.read_config(project)
        if dlcio.is_multianimal(cfg):
            # a unique bodypart (e.g. a floor marker) is no part of an animal's body length
            body = dlcio.config_multianimal_bodyparts(cfg)
            notes.append(f"multi-animal project: individuals {dlcio.config_individuals(cfg)}, "
                         f"unique bodyparts {dlcio.config_unique_bodyparts(cfg)}")
            _fit_multianimal_net(current, choose)
            _fit_eval_interval(sizes, current, choose)
    ev = current.get("evaluate") or {}
    ref = reference_bodyparts(body, ev.get("reference_bodyparts"))
    why = (f"head-like {ref[0]!r} and tail-like {ref[1]!r} (body length for PCK@fraction"
           f"{', per individual' if body is not bodyparts else ''}) among bodyparts {bodyparts}"
           if ref else f"bodyparts {bodyparts}: no head/tail pair, no normalised errors")
    choose("evaluate", "reference_bodyparts", ref, why)
    videos = labeled_videos(project) or [project.name]
    mode = (current.get("split") or {}).get("mode", "grouped")
    if len(videos) < MIN_VIDEOS_FOR_GROUPED and mode == "grouped":
        choose("split", "mode", "temporal-blocks",
               f"{len(videos)} labeled video(s) {videos}: a grouped split needs "
               f"{MIN_VIDEOS_FOR_GROUPED} (train, val, test); blocks of consecutive frames with "
               "a gap between splits instead")
    else:
        notes.append(f"split.mode = {mode!r}: {len(videos)} labeled videos")
    files = video_files(project)
    analyze_now = (current.get("analyze") or {}).get("videos") or []
    if not all(Path(v).is_relative_to(rel) for v in analyze_now) or not analyze_now:
        unlabeled = [f for f in files if f.stem not in set(videos)]
        pick = [(rel / "videos" / f.name).as_posix() for f in (unlabeled or files)]
        choose("analyze", "videos", pick,
               "the project's unlabeled videos" if unlabeled else "the project's videos")
    return updates, notes


def validation_interval(sizes: dict[tuple[int, int], int], val_fraction: float) -> tuple[int, float]:
    """(train.eval_interval, validation megapixels per epoch) for a multi-animal project whose
    labeled images have ``sizes`` ({(width, height): n images}): validate every epoch while the
    validation images (``val_fraction`` of the non-test ~80 %) hold at most
    VALIDATION_MEGAPIXELS_PER_EPOCH, else every ceil(megapixels / that) epochs (at most
    MAX_EVAL_INTERVAL)."""
    pixels = sum(w * h * n for (w, h), n in sizes.items())
    megapixels = pixels * 0.8 * val_fraction / 1e6
    interval = math.ceil(megapixels / VALIDATION_MEGAPIXELS_PER_EPOCH) if megapixels else 1
    return max(1, min(MAX_EVAL_INTERVAL, interval)), megapixels


def _fit_eval_interval(sizes: dict[tuple[int, int], int], current: dict[str, Any],
                       choose: Any) -> None:
    val_fraction = (current.get("split") or {}).get("val_fraction", SplitParams.val_fraction)
    interval, megapixels = validation_interval(sizes, float(val_fraction))
    now = (current.get("train") or {}).get("eval_interval", TrainParams.eval_interval)
    if interval > 1 and interval > int(now):
        choose("train", "eval_interval", interval,
               f"~{megapixels:.0f} megapixels of validation images per epoch: DLC assembles "
               f"animals on each, so validate every {interval} epochs "
               f"(~{VALIDATION_MEGAPIXELS_PER_EPOCH:.0f} per epoch on average)")


def _fit_multianimal_net(current: dict[str, Any], choose: Any) -> None:
    """Keep ``train.net_type`` when it trains on a multi-animal project (a bottom-up DLC 3 net),
    else choose the default bottom-up one (poseops does not train top-down detectors)."""
    net = (current.get("train") or {}).get("net_type") or TrainParams.net_type
    try:
        check_multianimal_net(net)
    except PoseopsError as e:
        choose("train", "net_type", TrainParams.net_type, f"multi-animal project: {e}")


def metadata_path(root: Path, rel: Path, configured: str, videos: list[str]) -> Path:
    """Where this project's metadata goes: the configured file when it is missing or already has
    a row for one of ``videos`` (it describes this project), else ``data/metadata/<name>.csv``
    (the configured file belongs to another project, e.g. the demo: left alone)."""
    path = Path(configured)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        return path
    try:
        existing = set(pd.read_csv(path, dtype=str, keep_default_na=False).get(S.VIDEO, []))
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return path  # write_metadata_template reports it
    if not existing or existing & set(videos):
        return path
    own = root / "data" / "metadata" / f"{rel.name}.csv"
    log.info("%s describes other videos (%d, none of this project's): this project's metadata "
             "goes to %s", path.relative_to(root) if path.is_relative_to(root) else path,
             len(existing), own.relative_to(root))
    return own


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
        others = sorted(set(existing[S.VIDEO]) - set(videos))
        if others:
            log.warning("%s has rows for videos not in this project (kept, not used): %s",
                        path, others[:5])
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
    metadata: str | None = None,
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
    proj = PipelineParams.load(ppath).project
    videos = project_videos(project)
    configured = metadata or proj.metadata or f"data/metadata/{rel.name}.csv"  # null: no file yet
    if metadata or proj.path == rel.as_posix():  # --metadata, or a re-init (make demo)
        meta_path = Path(configured) if Path(configured).is_absolute() else root / configured
    else:
        meta_path = metadata_path(root, rel, configured, videos)
    write_metadata_template(meta_path, videos, keep_metadata)
    meta_rel = meta_path.relative_to(root).as_posix() if meta_path.is_relative_to(root) else str(meta_path)
    current = load_params(ppath)
    updates, notes = fitted_params(project, rel, fmt, current)
    notes += nan_share_advice(project, fmt, (current.get("validate") or {}).get("max_nan_share"))
    wanted = {"path": rel.as_posix(), "format": fmt, "metadata": meta_rel}
    changed = {k: v for k, v in wanted.items() if getattr(proj, k) != v}
    if changed:
        updates["project"] = changed
    for line in [f"project.{k} = {v!r}" for k, v in wanted.items()] + notes:
        log.info("params.yaml %s", line)
    if updates:  # no rewrite (and no diff) otherwise
        update_params(updates, ppath)
    to_commit = ([f"{d}.dvc" for d in data_dirs] + [str(rel / ".gitignore")]) if mode != "link" else []
    to_commit += [str(f.relative_to(root)) for f in project_git_files(project, fmt)]
    log.info(
        "project %s ready: fill in %s, then commit with git: %s, %s, .dvc/config, params.yaml; "
        "then `dvc push`", rel, meta_rel, " ".join(to_commit), meta_rel,
    )
    return rel


def nan_share_advice(project: Path, fmt: str, limit: Any) -> list[str]:
    """The bodyparts (multi-animal: individuals' bodyparts) whose NaN share exceeds
    ``validate.max_nan_share``, and the params.yaml line that lets them pass (``poseops
    validate`` would stop on them). Nothing when the labels cannot be read yet."""
    from poseops.data.ingest import ingest_project
    from poseops.data.labels import bodypart_stats
    from poseops.quality.bounds import passing_mapping
    from poseops.quality.dataset import individual_bodypart_stats

    mapping = dict(limit) if isinstance(limit, dict) else {"default": 0.25 if limit is None else limit}
    try:
        labels = ingest_project(project, None, fmt)
    except PoseopsError as e:
        log.debug("no NaN-share advice: %s", e)
        return []
    ma = S.INDIVIDUAL in labels.columns
    stats = (individual_bodypart_stats(labels) if ma else bodypart_stats(labels)).reset_index(
        drop=True)
    keys = [S.INDIVIDUAL, S.BODYPART] if ma else [S.BODYPART]

    def bound(row: Any) -> float:
        hits = [mapping[str(v)] for v in row if str(v) in mapping]
        return float(max(hits)) if hits else float(mapping.get("default", 1.0))

    over = stats["nan_share"] > [bound(r) for r in stats[keys].itertuples(index=False)]
    if not over.any():
        return []
    worst = stats[over].sort_values("nan_share", ascending=False, kind="stable")
    shown = ", ".join(
        f"{'/'.join(str(r[k]) for k in keys)} {r['nan_share']:.2f}" for _, r in worst.iterrows())
    line = passing_mapping(mapping, stats, over, stats["nan_share"], keys, "max_value")
    return [f"validate.max_nan_share = {limit!r} is exceeded by {shown} (`poseops validate` "
            f"would stop); to accept them, paste under validate: in params.yaml:  "
            f"max_nan_share: {line}"]


def project_git_files(project: Path, fmt: str) -> list[Path]:
    """The project files that stay plain git files (not under a DVC-added folder)."""
    if fmt == "dlc":
        return [project / "config.yaml"]
    from poseops.data.ingest import find_lightning_pose_files

    return find_lightning_pose_files(project)


def run(args: argparse.Namespace) -> int:
    mode = "link" if args.link else "in-place" if args.in_place else "copy"
    init_project(
        Path(args.path), mode, args.keep_metadata, args.remote, args.name,
        params_file=args.params_file, fmt=args.fmt, metadata=args.metadata,
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
    p.add_argument("--metadata", help="per-video metadata CSV to write/extend (default: params "
                   "project.metadata if it describes this project, else data/metadata/<name>.csv)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="leave an existing metadata CSV untouched")
    p.add_argument("--remote", help="default DVC remote URL (directory, s3://, ssh://, ...)")
    p.add_argument("--format", dest="fmt", default="dlc", choices=("dlc", "lightning-pose"))
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=run)
