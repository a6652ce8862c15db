"""`poseops merge`: relabeled outlier frames join the dataset as the next iteration.

Validates everything first (nothing is touched when a relabeled file is wrong): each video of the
outliers manifest has ``labeled-data/<video>/CollectedData_<scorer>.h5`` with the config's
bodyparts and scorer, every manifest frame is in it with at least one labeled keypoint, and its
image exists. Then, as DeepLabCut's ``merge_datasets`` does, config.yaml ``iteration`` goes up by
one (new videos are added to ``video_sets``), the previous split is written to ``fixed_split``
(the split stage keeps it: the test set stays fixed, new frames go to train/val only), and
the dataset is versioned: ``dvc add <project>``, git commit, git tag ``iteration-<N>`` (the
previous commit is tagged ``iteration-<N-1>`` if it has no tag yet), so
``git checkout iteration-0 && dvc checkout && dvc repro`` rebuilds either iteration.
If a DVC or git step fails, config.yaml and fixed_split are restored.

``merge.skip_unrefined`` (``--skip-unrefined``): frames of the manifest not relabeled yet (no
CollectedData file, frame absent or without a labeled keypoint) are skipped instead of refused:
the report lists them and ``merge.pending`` keeps them; the next ``poseops outliers`` lists them
again (rule ``pending``) so the next round merges them once they are relabeled.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd

from poseops.config.refine import MergeParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.refine import common as R

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- pure
def check_relabeled(
    wide: pd.DataFrame, path: Path, scorer: str, bodyparts: list[str], images: list[str],
    require_labeled: bool, source: str | None = None,
) -> pd.DataFrame:
    """Check one relabeled CollectedData frame; returns its tidy long form (dlcio.wide_to_long).

    Errors name the file and, where it applies, the bodypart or the image (row); ``source``
    names where ``scorer`` and ``bodyparts`` come from (a Lightning Pose folder's labels CSV)."""
    from poseops.dlc.files import wide_to_long

    file_bps = list(dict.fromkeys(wide.columns.get_level_values("bodyparts")))
    unknown = [b for b in file_bps if b not in bodyparts]
    if unknown:
        raise PoseopsError(f"bodypart not in {source or 'config.yaml'} bodyparts {bodyparts}", file=path,
                           bodypart=unknown[0])
    missing = [b for b in bodyparts if b not in file_bps]
    if missing:
        raise PoseopsError(f"{source or 'config'} bodypart missing from the relabeled file", file=path,
                           bodypart=missing[0])
    scorers = set(wide.columns.get_level_values("scorer"))
    if scorers != {scorer}:
        raise PoseopsError(f"scorer {sorted(scorers)} is not the {source or 'config'} scorer {scorer!r}",
                           file=path)
    long = wide_to_long(wide)  # multi-animal (4 levels): with an individual column
    have = set(long[S.IMAGE])
    for img in images:
        if img not in have:
            raise PoseopsError("frame not relabeled yet (open it in DeepLabCut's labeling GUI and"
                               " save)", file=path, row=img)
    if require_labeled:
        n_lab = long[long[S.IMAGE].isin(images)].groupby(S.IMAGE)[S.LABELED].sum()
        empty = n_lab[n_lab == 0]
        if len(empty):
            raise PoseopsError("relabeled frame has no labeled keypoint", file=path,
                               row=empty.index[0])
    return long


def pending_table(path: Path, skipped: pd.DataFrame, merged: pd.Series,
                  iteration: int) -> pd.DataFrame:
    """Frames still waiting for relabeling: those pending before (``path``) that this merge did
    not take, then the ones it skipped now (one row per image: image, video, frame, iteration
    (the round that picked it), rule)."""
    cols = [S.IMAGE, S.VIDEO, S.FRAME, "iteration", "rule"]
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=cols)
    new = skipped.assign(iteration=skipped["iteration"] if "iteration" in skipped else iteration)
    out = pd.concat([old[~old[S.IMAGE].isin(set(merged))], new.reindex(columns=cols)],
                    ignore_index=True)
    return out.drop_duplicates(S.IMAGE, keep="last")[cols].reset_index(drop=True)


def fixed_split_table(split: pd.DataFrame) -> pd.DataFrame:
    """The split later iterations keep (image, video, group, split): its test images are the
    fixed test set, its train/val images stay where they were (comparable model selection)."""
    S.require_columns(split, [S.IMAGE, S.SPLIT], "split")
    cols = [c for c in (S.IMAGE, S.VIDEO, S.GROUP, S.SPLIT) if c in split.columns]
    return split[cols].sort_values(S.IMAGE).reset_index(drop=True)


# ---------------------------------------------------------------- edges
def _sh(cmd: list[str], cwd: Path) -> str:
    if cmd[0] == "dvc":  # the dvc beside this interpreter (a venv not on PATH)
        exe = Path(sys.executable).parent / "dvc"
        cmd = [str(exe) if exe.is_file() else "dvc", *cmd[1:]]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PoseopsError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip()[-400:]}")
    return r.stdout.strip()


def _git_root(path: Path) -> Path | None:
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True,
                       text=True)
    return Path(r.stdout.strip()) if r.returncode == 0 else None


def _dvc_root(path: Path) -> Path | None:
    for p in [path, *path.parents]:
        if (p / ".dvc").is_dir():
            return p
    return None


def _tags(root: Path) -> list[str]:
    return _sh(["git", "tag", "--list"], root).split()


def relabeled_images(wide: pd.DataFrame, images: list[str]) -> set[str]:
    """The ``images`` a CollectedData frame holds with at least one labeled keypoint (DLC's
    labeling GUI saves untouched frames as all-NaN rows: those are not relabeled)."""
    from poseops.dlc.files import wide_to_long

    long = wide_to_long(wide)
    long = long[long[S.IMAGE].isin(images)]
    n = long.groupby(S.IMAGE)[S.LABELED].sum()
    return set(n[n > 0].index)


def unrefined_frames(project: Path, cfg: dict, manifest: pd.DataFrame,
                     ma_cfg: dict | None) -> pd.DataFrame:
    """The manifest rows not relabeled yet: no CollectedData file for their video, or the frame
    absent from it or without a labeled keypoint."""
    from poseops.dlc.files import read_collected_data

    skipped = []
    for video, part in manifest.groupby(S.VIDEO, sort=True):
        h5 = project / "labeled-data" / str(video) / f"CollectedData_{cfg['scorer']}.h5"
        images = part[S.IMAGE].tolist()
        done = relabeled_images(read_collected_data(h5, ma_cfg), images) if h5.is_file() else set()
        skipped.append(part[~part[S.IMAGE].isin(done)])
    return pd.concat(skipped, ignore_index=True) if skipped else manifest.iloc[:0]


def validate(project: Path, params: MergeParams) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Read and check everything merge needs; touches nothing. Returns (config, manifest,
    relabeled tidy labels of the manifest frames). ``params.skip_unrefined``: the manifest
    returned holds only the relabeled frames; the others are in ``manifest.attrs["skipped"]``."""
    from poseops.dlc.files import config_bodyparts, is_multianimal, read_collected_data

    cfg = R.read_config(project)
    # multi-animal: DLC's 4-level file, checked against the config's individuals and
    # multi-animal / unique bodyparts by dlcio (single-animal files keep merge's own checks)
    ma_cfg = cfg if is_multianimal(cfg) else None
    manifest = _read_manifest(Path(params.manifest))
    skipped = manifest.iloc[:0]
    if params.skip_unrefined:
        skipped = unrefined_frames(project, cfg, manifest, ma_cfg)
        manifest = manifest[~manifest[S.IMAGE].isin(skipped[S.IMAGE])].reset_index(drop=True)
        if manifest.empty:
            raise PoseopsError(f"none of the {len(skipped)} manifest frames is relabeled yet:"
                               " nothing to merge", file=params.manifest)
    parts = []
    for video, part in manifest.groupby(S.VIDEO, sort=True):
        h5 = project / "labeled-data" / str(video) / f"CollectedData_{cfg['scorer']}.h5"
        if not h5.is_file():
            raise PoseopsError("relabeled file missing: label the extracted frames and save",
                               file=h5)
        images = part[S.IMAGE].tolist()
        for img in images:
            if not (project / img).is_file():
                raise PoseopsError("image of a manifest frame is missing", file=project / img)
        long = check_relabeled(read_collected_data(h5, ma_cfg), h5, cfg["scorer"],
                               config_bodyparts(cfg), images, params.require_labeled)
        parts.append(long[long[S.IMAGE].isin(images)])
    manifest.attrs["skipped"] = skipped
    return cfg, manifest, pd.concat(parts, ignore_index=True)


def validate_lightning_pose(
    project: Path, params: MergeParams
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`validate` for a Lightning Pose folder: the relabeled frames are read from
    ``CollectedData_<scorer>.csv`` beside each manifest image (the folder's scorer and bodyparts,
    from its labels CSV) and appended to that labels CSV. Returns (``{"iteration": N}``, manifest,
    relabeled tidy labels, the new labels CSV frame: old rows, then the new ones in the CSV's
    column order and with the image paths the manifest gives). Touches nothing."""
    from poseops.dlc.files import image_paths, read_collected_data

    root_csv = R.lightning_pose_labels(project)
    root = read_collected_data(root_csv)
    scorer = str(root.columns.get_level_values("scorer")[0])
    bodyparts = list(dict.fromkeys(map(str, root.columns.get_level_values("bodyparts"))))
    manifest = _read_manifest(Path(params.manifest))
    have = set(image_paths(root))
    parts, rows = [], []
    folders = manifest[S.IMAGE].map(lambda i: str(Path(str(i)).parent))
    for folder, part in manifest.groupby(folders, sort=True):
        path = project / folder / f"CollectedData_{scorer}.csv"
        if not path.is_file():
            raise PoseopsError("relabeled file missing: label the extracted frames (start from"
                               " machinelabels-iter<N>.csv) and save them here", file=path)
        images = part[S.IMAGE].astype(str).tolist()
        for img in images:
            if not (project / img).is_file():
                raise PoseopsError("image of a manifest frame is missing", file=project / img)
            if img in have:
                raise PoseopsError("frame is already in the labels CSV (merged before?)",
                                   file=root_csv, row=img)
        wide = read_collected_data(path)
        long = check_relabeled(wide, path, scorer, bodyparts, images, params.require_labeled,
                               source=root_csv.name)
        parts.append(long[long[S.IMAGE].isin(images)])
        new = wide[[i in set(images) for i in image_paths(wide)]]
        new.index = pd.Index(image_paths(new), dtype=object)
        rows.append(new.reindex(columns=root.columns))
    old = root.copy()
    old.index = pd.Index(image_paths(root), dtype=object)
    merged = pd.concat([old, *rows])
    cfg = {"iteration": R.lightning_pose_iteration(project)}
    return cfg, manifest, pd.concat(parts, ignore_index=True), merged


def _read_manifest(mpath: Path) -> pd.DataFrame:
    if not mpath.is_file():
        raise PoseopsError("outliers manifest not found (run `poseops outliers` first)", file=mpath)
    manifest = pd.read_csv(mpath)
    S.require_columns(manifest, [S.IMAGE, S.VIDEO], str(mpath))
    if manifest.empty:
        raise PoseopsError("the manifest lists no frames: nothing to merge", file=mpath)
    return manifest


def _video_sets(cfg: dict, manifest: pd.DataFrame, project: Path) -> dict:
    """config video_sets plus the relabeled videos (DLC only reads labels of listed videos)."""
    video_sets = dict(cfg.get("video_sets") or {})
    listed = {Path(v).stem for v in video_sets}
    for v in sorted(set(manifest[S.VIDEO]) - listed):
        vp = R.find_video(str(v), cfg, project)
        _, w, h = R.probe_video(vp)
        video_sets[str(vp)] = {"crop": f"0, {w}, 0, {h}"}
    return video_sets


def _write_lightning_pose(project: Path, merged: pd.DataFrame, it_new: int) -> None:
    """Write the labels CSV with the relabeled rows and the iteration file, then read the folder
    as ``poseops ingest`` does (its checks: images, bodyparts, duplicates)."""
    from poseops.core.fileio import atomic_path, write_text
    from poseops.data.ingest import ingest_project

    with atomic_path(R.lightning_pose_labels(project)) as tmp:
        merged.to_csv(tmp)
    write_text(f"iteration: {it_new}\n", project / R.LP_ITERATION_FILE)
    ingest_project(project, None, "lightning-pose")


def merge_iteration(params: MergeParams, project: str | Path, fmt: str = "dlc") -> dict:
    """Validate, bump the iteration, write fixed_split, dvc add, commit and tag. Returns the
    merge report (also written to ``params.report``). ``fmt="lightning-pose"``: the relabeled
    frames are appended to the folder's labels CSV and the iteration is kept in
    ``poseops_iteration.yaml`` (a Lightning Pose folder has no config.yaml)."""
    from poseops.core.fileio import write_csv, write_json, write_text

    project = Path(project).resolve()
    lp = fmt == "lightning-pose"
    if lp and params.skip_unrefined:
        raise PoseopsError("merge.skip_unrefined is for DeepLabCut projects; a Lightning Pose"
                           " folder merges every manifest frame (remove the unrelabeled ones"
                           " from the manifest)", file=params.manifest)
    if lp:
        cfg, manifest, relabeled, merged = validate_lightning_pose(project, params)
    else:
        cfg, manifest, relabeled = validate(project, params)
    it_prev = int(cfg.get("iteration", 0))
    it_new = it_prev + 1
    git_root = _git_root(project) if params.git else None
    tag_prev, tag_new = f"{params.tag_prefix}{it_prev}", f"{params.tag_prefix}{it_new}"
    if git_root is not None and tag_new in _tags(git_root):
        raise PoseopsError(f"git tag {tag_new} already exists: this iteration was merged before")
    video_sets = None if lp else _video_sets(cfg, manifest, project)
    split_path, fixed_path = Path(params.split), Path(params.fixed_split)
    fixed = fixed_split_table(pd.read_csv(split_path)) if split_path.is_file() else None
    if fixed is not None and fixed_path.is_file():  # a later iteration: the test set must hold
        old = pd.read_csv(fixed_path)
        if set(old.loc[old[S.SPLIT] == S.TEST, S.IMAGE]) != set(
                fixed.loc[fixed[S.SPLIT] == S.TEST, S.IMAGE]):
            raise PoseopsError("the current split's test set differs from the fixed one: re-run"
                               " the split stage (it honours split.fixed_split) first",
                               file=split_path)
    report = {
        "project": str(project), "iteration_before": it_prev, "iteration": it_new,
        "frames_added": int(relabeled[S.IMAGE].nunique()),
        "outliers_picked": int(manifest[S.IMAGE].nunique()) + int(
            len(manifest.attrs.get("skipped", []))),
        "keypoints_added": int(relabeled[S.LABELED].sum()),
        "videos": sorted(map(str, set(manifest[S.VIDEO]))),
        "fixed_test_images": None if fixed is None else int((fixed[S.SPLIT] == S.TEST).sum()),
        "tag": tag_new if git_root is not None else None,
    }
    skipped = manifest.attrs.get("skipped")
    pending = None
    if skipped is not None and (params.skip_unrefined or Path(params.pending).is_file()):
        pending = pending_table(Path(params.pending), skipped, relabeled[S.IMAGE], it_prev)
        report.update(frames_skipped=int(len(skipped)),
                      skipped=sorted(map(str, skipped[S.IMAGE])), pending=str(params.pending))
    # -- from here on things change; restore on failure
    changed = ([R.lightning_pose_labels(project), project / R.LP_ITERATION_FILE] if lp
               else [project / "config.yaml"])
    extra = [Path(params.pending)] if pending is not None else []
    before = {p: p.read_text() if p.is_file() else None for p in [*changed, fixed_path, *extra]}
    try:
        if lp:
            _write_lightning_pose(project, merged, it_new)
        else:
            R.write_config_updates(changed[0], {"iteration": it_new, "video_sets": video_sets})
        if fixed is not None:
            write_csv(fixed, fixed_path)
        if pending is not None:
            write_csv(pending, params.pending)
        write_json(report, params.report)
        _version(project, params, git_root, tag_prev, tag_new, report, fixed_path, changed)
    except BaseException:
        for p, text in before.items():
            if text is not None:
                write_text(text, p)
            elif p in [*changed, *extra] and p.is_file():
                p.unlink()  # a file this merge created (the first iteration file)
        raise
    log.info("merge: +%d frames -> iteration %d%s%s", report["frames_added"], it_new,
             f" (git tag {tag_new})" if report["tag"] else "",
             f"; {report['frames_skipped']} not relabeled yet, kept for the next round in "
             f"{params.pending}" if report.get("frames_skipped") else "")
    return report


def _version(project: Path, params: MergeParams, git_root: Path | None, tag_prev: str,
             tag_new: str, report: dict, fixed_path: Path, changed: list[Path]) -> None:
    dvc_root = _dvc_root(project) if params.dvc else None
    to_add: list[Path] = []
    if dvc_root is not None:
        _sh(["dvc", "add", str(project)], dvc_root)
        to_add.append(project.parent / f"{project.name}.dvc")
        if (project.parent / ".gitignore").is_file():
            to_add.append(project.parent / ".gitignore")
    if git_root is None:
        return
    if tag_prev not in _tags(git_root):
        _sh(["git", "tag", tag_prev], git_root)  # the state before this merge
    for p in (fixed_path, Path(params.report), Path(params.pending)):
        if p.is_file():
            to_add.append(p.resolve())
    if dvc_root is None:
        to_add += [p for p in changed if p.is_file()]
    _sh(["git", "add", "--", *[str(p) for p in to_add]], git_root)
    msg = (f"merge: iteration {report['iteration']} (+{report['frames_added']} relabeled frames"
           f" from {', '.join(report['videos'])})")
    _sh(["git", "commit", "-m", msg, "--", *[str(p) for p in to_add]], git_root)
    _sh(["git", "tag", tag_new], git_root)
