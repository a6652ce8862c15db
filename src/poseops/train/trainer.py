"""`poseops train`: train a DeepLabCut 3 (PyTorch engine) model on our split, tracked in MLflow.

DLC is given trainIndices = our TRAIN frames and testIndices = our VAL frames, so its per-epoch
evaluation and best-snapshot choice (key metric: validation RMSE) never see the test frames, which
are not given to DLC training at all. Every epoch's losses and metrics go to MLflow live through a
logger plugged into DLC's training loop (see poseops.tracking.runs). An interrupted training resumes
from its last saved state in the same MLflow run.

Working directory layout (`train.workdir`, default data/train):
    project/            working DLC project (config.yaml, labeled-data, dlc-models-pytorch, ...)
    run.json            run id, model URI, snapshots, status (written atomically)
    labels.parquet      the labels used (one scorer), logged as the MLflow dataset input
    tracking/           MLflow outbox (operations not yet acknowledged by the server)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json, write_parquet

log = logging.getLogger(__name__)

SHUFFLE = 1
RESUME_FILE = "poseops-resume.pt"
RESUMABLE = {"running", "interrupted", "failed"}


@dataclass
class TrainParams:
    """params.yaml `train:` section."""

    net_type: str = "cspnext_s"
    epochs: int = 60
    batch_size: int = 8
    lr: float = 5e-4
    optimizer: str = "AdamW"  # any torch.optim class name
    scheduler: str | None = "default"  # default (the net's own) | none | LRListScheduler | torch name
    scheduler_params: dict[str, Any] | None = None  # runner.scheduler.params when scheduler is set
    # augmentation (DLC data.train)
    rotation: float = 180.0  # degrees (affine); top view: any heading
    scaling: list[float] = field(default_factory=lambda: [0.85, 1.15])  # affine scale range
    translation: float = 0.0  # affine translation, pixels
    affine_p: float = 1.0  # probability of the affine transform
    hflip: float = 0.0  # horizontal-flip probability (0 = off; needs symmetric bodyparts)
    gaussian_noise: float = 12.75  # std of added pixel noise (0 = off)
    motion_blur: bool = True
    hist_eq: bool = False
    crop_width: int | None = 160  # training crop; None = the (largest) image size
    crop_height: int | None = 120
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    pretrained: bool = False  # True: ImageNet backbone from the hub (needs internet)
    save_epochs: int = 5
    max_snapshots: int = 5
    eval_interval: int = 1  # validation every N epochs (model selection needs it)
    key_metric: str = "test.rmse"  # DLC's name: "test" = the frames DLC evaluates = our VAL split
    snapshot: str = "best"  # best | last: the snapshot wrapped as the MLflow model
    workdir: str = "data/train"
    metrics: str = "reports/train.json"
    experiment: str = "poseops"
    registered_model: str | None = "poseops-pose"  # None: do not register
    dataloader_workers: int | str = 0  # N, or "auto": one per CPU of this process but one (max 8)
    system_metrics: bool = True  # MLflow system metrics (CPU, memory, GPU) on the training run
    system_metrics_interval_s: float = 10.0  # their sampling interval
    tracking_timeout_s: float = 60.0  # wait this long at the end for a slow tracking server
    # a resumable state is written at most this often (besides DLC's snapshots); epochs run
    # since the last one are logged when it is written, so a resume never repeats a logged epoch
    resume_interval_s: float = 60.0
    pytorch_cfg_updates: dict[str, Any] = field(default_factory=dict)  # dotted DLC overrides

    def validate(self) -> None:
        where = "params.yaml [train]"
        if self.epochs < 1:
            raise PoseopsError(f"{where}: epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PoseopsError(f"{where}: batch_size must be >= 1, got {self.batch_size}")
        resolve_dataloader_workers(self.dataloader_workers)  # an int or auto
        if self.snapshot not in ("best", "last"):
            raise PoseopsError(f"{where}: snapshot must be best or last, got {self.snapshot!r}")
        if len(self.scaling) != 2:
            raise PoseopsError(f"{where}: scaling must be [min, max], got {self.scaling}")

    @property
    def key_metric_asc(self) -> bool:
        """True when larger is better (mAP/mAR); errors and losses are smaller-is-better."""
        return any(t in self.key_metric.lower() for t in ("map", "mar"))


@dataclass
class DlcDataset:
    """A working DLC project with one shuffle built from our split."""

    config_path: Path
    shuffle: int
    trainset_index: int
    train_fraction: float
    model_dir: Path  # .../dlc-models-pytorch/iteration-N/<Task><date>-trainsetNNshuffleK
    pytorch_config_path: Path
    images: dict[str, list[str]]  # split -> image paths (DLC relative, e.g. labeled-data/v/img.png)
    train_indices: list[int]
    val_indices: list[int]
    scorer: str
    bodyparts: list[str]  # all of them, DLC's order (multi-animal: multi-animal then unique)
    iteration: int
    individuals: list[str] = field(default_factory=list)  # multi-animal projects only
    unique_bodyparts: list[str] = field(default_factory=list)

    @property
    def multianimal(self) -> bool:
        return bool(self.individuals)


@dataclass
class TrainResult:
    """What a training produced. Snapshots are DLC .pt files in ``model_dir/train``; ``metrics``
    are the validation metrics (MLflow names, e.g. val.rmse, val.total_loss) at the selected
    snapshot's epoch, plus ``selected_epoch``."""

    config_path: Path
    shuffle: int
    trainset_index: int
    model_dir: Path
    pytorch_config_path: Path
    best_snapshot: Path | None
    last_snapshot: Path | None
    learning_stats: pd.DataFrame = field(repr=False)  # DLC's learning_stats.csv (step + metrics)
    run_id: str | None
    metrics: dict[str, float]  # validation metrics at the selected snapshot (MLflow names)
    images: dict[str, list[str]] = field(repr=False)  # split -> image paths (train, val, test)
    model_uri: str | None = None
    model_version: str | None = None
    workdir: Path | None = None
    tracking_pending: int = 0  # MLflow operations still buffered (server unreachable)
    timings: dict[str, float] = field(default_factory=dict)  # prepare_s, train_s, finalize_s

    @property
    def snapshot(self) -> Path | None:
        """The snapshot wrapped as the MLflow model (best, else last)."""
        return self.best_snapshot or self.last_snapshot


# --------------------------------------------------------------------------------------------
# Labels -> working DLC project
# --------------------------------------------------------------------------------------------


def _single_scorer(labels: pd.DataFrame) -> pd.DataFrame:
    scorers = labels[S.SCORER].unique()
    if len(scorers) == 1:
        return labels
    if S.CONSENSUS_SCORER in scorers:
        return labels[labels[S.SCORER] == S.CONSENSUS_SCORER]
    raise PoseopsError(
        f"labels table has several scorers {sorted(scorers)} and no {S.CONSENSUS_SCORER!r}: "
        "run the consensus stage first"
    )


def training_frames(labels: pd.DataFrame, split: pd.DataFrame) -> dict[str, list[str]]:
    """Image paths per split (train/val/test), sorted; frames with no labeled keypoint dropped.

    labels: labels/consensus table (image, bodypart, x, y, ...); split: image, split.
    """
    S.require_columns(labels, [S.IMAGE, S.VIDEO, S.BODYPART, S.X, S.Y], "labels")
    S.require_columns(split, [S.IMAGE, S.SPLIT], "split")
    bad = split.loc[~split[S.SPLIT].isin(S.SPLITS), S.SPLIT]
    if len(bad):
        raise PoseopsError(f"unknown split value {bad.iloc[0]!r} (expected {S.SPLITS})", row=bad.index[0])
    dup = split[S.IMAGE].duplicated()
    if dup.any():
        raise PoseopsError(f"image {split.loc[dup, S.IMAGE].iloc[0]!r} listed twice in split")
    labeled = labels.assign(_ok=labels[S.X].notna() & labels[S.Y].notna())
    any_label = labeled.groupby(S.IMAGE)["_ok"].any()
    missing = sorted(set(any_label.index) - set(split[S.IMAGE]))
    if missing:  # split.mode temporal-blocks leaves out the frames in the gap between splits
        log.warning("%d labeled image(s) are not in the split and not used (e.g. frames in the "
                    "gap between temporal blocks): %s", len(missing), missing[:3])
    dropped = sorted(any_label.index[~any_label])
    if dropped:
        log.warning("%d frame(s) with no labeled keypoint are not used: %s", len(dropped), dropped[:3])
    usable = set(any_label.index[any_label])
    out = {}
    for name in S.SPLITS:
        imgs = split.loc[split[S.SPLIT] == name, S.IMAGE]
        out[name] = sorted(i for i in imgs if i in usable)
    for name in (S.TRAIN, S.VAL):
        if not out[name]:
            raise PoseopsError(f"the split has no labeled {name} frames: training needs both")
    return out


def collected_data(
    labels: pd.DataFrame,
    scorer: str,
    bodyparts: list[str],
    individuals: list[str] | None = None,
    unique_bodyparts: list[str] | None = None,
) -> pd.DataFrame:
    """DLC's wide CollectedData table: rows (labeled-data, video, image name), columns
    (scorer, bodyparts, coords x/y), NaN = not labeled. labels: one scorer, image/bodypart/x/y;
    written under ``scorer`` (the config's: DLC only reads that file).

    Multi-animal (``individuals`` given, labels with an ``individual`` column): DLC's 4-level
    frame (scorer, individuals, bodyparts, coords); unique bodyparts under ``single``."""
    from poseops.dlc.files import labels_to_wide

    unknown = sorted(set(labels[S.BODYPART]) - set(bodyparts))
    if unknown:
        raise PoseopsError("bodypart not in the project's config.yaml", bodypart=unknown[0])
    if individuals is None:
        return labels_to_wide(labels.assign(**{S.SCORER: scorer}), scorer=scorer, bodyparts=bodyparts)
    _check_individuals(labels, individuals, unique_bodyparts or [])
    return labels_to_wide(labels.assign(**{S.SCORER: scorer}), scorer=scorer, bodyparts=bodyparts,
                          individuals=individuals, unique_bodyparts=unique_bodyparts or [])


def _check_individuals(labels: pd.DataFrame, individuals: list[str], unique: list[str]) -> None:
    """Each row's individual is in the config and its bodypart belongs to it (unique bodyparts
    under ``single`` only): otherwise DLC would drop or misplace the label silently."""
    known = set(individuals) | ({S.SINGLE} if unique else set())
    bad = ~labels[S.INDIVIDUAL].isin(known)
    if bad.any():
        row = labels[bad].iloc[0]
        raise PoseopsError(f"individual {row[S.INDIVIDUAL]!r} not in the project's config.yaml "
                           f"individuals {individuals}", row=row[S.IMAGE], bodypart=row[S.BODYPART])
    single = labels[S.INDIVIDUAL] == S.SINGLE
    wrong = (single & ~labels[S.BODYPART].isin(unique)) | (~single & labels[S.BODYPART].isin(unique))
    if wrong.any():
        row = labels[wrong].iloc[0]
        raise PoseopsError(
            f"bodypart under individual {row[S.INDIVIDUAL]!r}: unique bodyparts {unique} belong "
            f"under {S.SINGLE!r} only", row=row[S.IMAGE], bodypart=row[S.BODYPART])


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def image_size(labels: pd.DataFrame) -> tuple[int, int]:
    """(width, height): the largest image in the labels table (DLC pads smaller ones)."""
    if S.WIDTH in labels.columns and labels[S.WIDTH].notna().any():
        return int(labels[S.WIDTH].max()), int(labels[S.HEIGHT].max())
    raise PoseopsError("labels table has no width/height: set train.crop_width/crop_height")


def source_config(source_project: Path, labels: pd.DataFrame) -> dict[str, Any]:
    """The project's config.yaml, or for a folder without one (Lightning Pose) DeepLabCut's own
    single-animal defaults (``ProjectConfig``) with the labels' scorer and bodyparts (in the
    labels' order) and the folder name as Task."""
    import yaml

    path = Path(source_project) / "config.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text())
    if not Path(source_project).is_dir():
        raise PoseopsError("project folder not found", file=source_project)
    from deeplabcut.core.config.project_config import ProjectConfig

    scorer = str(labels[S.SCORER].iloc[0])
    bodyparts = list(dict.fromkeys(labels[S.BODYPART].astype(str)))
    cfg = ProjectConfig(multianimalproject=False, bodyparts=bodyparts, Task=Path(source_project).name,
                        scorer=scorer).to_dict()
    # ProjectConfig leaves these unset; create_project writes them so (DLC's training code needs them)
    cfg.update(date="Jan1", iteration=0, snapshotindex=-1, default_augmenter="albumentations",
               project_path=str(source_project))
    log.info("%s has no config.yaml (Lightning Pose): DeepLabCut defaults, scorer %r, bodyparts %s",
             source_project, scorer, bodyparts)
    return cfg


def prepare_dlc_project(
    labels: pd.DataFrame,
    split: pd.DataFrame,
    source_project: Path,
    workdir: Path,
    params: TrainParams,
) -> DlcDataset:
    """Build `<workdir>/project` (a DLC project) and one training shuffle from our split.

    TRAIN frames -> DLC trainIndices, VAL frames -> DLC testIndices; TEST frames are not in the
    DLC label files at all (their images are linked, for later inference).
    """
    import yaml

    from poseops.dlc.files import (
        config_bodyparts,
        config_individuals,
        config_unique_bodyparts,
        write_collected_data,
    )

    source_project = Path(source_project)
    labels = _single_scorer(labels)
    src_cfg = source_config(source_project, labels)
    multi = _check_multianimal(src_cfg, labels, source_project)
    if multi:
        check_multianimal_net(params.net_type)
    frames = training_frames(labels, split)
    scorer = src_cfg["scorer"]
    bodyparts = config_bodyparts(src_cfg)  # single-animal: cfg["bodyparts"]
    individuals = config_individuals(src_cfg) if multi else None
    unique = config_unique_bodyparts(src_cfg) if multi else None
    project = Path(workdir).resolve() / "project"
    if project.exists():
        shutil.rmtree(project)
    (project / "videos").mkdir(parents=True)

    # images: every split (test images only for inference later)
    all_images = [i for name in S.SPLITS for i in frames[name]]
    for img in all_images:
        src = source_project / img
        if not src.exists():
            raise PoseopsError("image of the labels table not found in the source project", file=src)
        _link_or_copy(src, project / img)

    # labels: train + val only, under the config's scorer
    fit_images = set(frames[S.TRAIN]) | set(frames[S.VAL])
    used = labels[labels[S.IMAGE].isin(fit_images)]
    videos = sorted(used[S.VIDEO].unique())
    for video in videos:
        wide = collected_data(used[used[S.VIDEO] == video], scorer, bodyparts, individuals, unique)
        write_collected_data(wide, project / "labeled-data" / video / f"CollectedData_{scorer}.h5")

    width, height = image_size(labels)
    n_train, n_val = len(frames[S.TRAIN]), len(frames[S.VAL])
    train_fraction = round(n_train / (n_train + n_val), 2)
    cfg = dict(src_cfg)
    cfg["project_path"] = str(project)
    cfg["video_sets"] = {
        str(project / "videos" / f"{v}.mp4"): {"crop": f"0, {width}, 0, {height}"} for v in videos
    }
    cfg["TrainingFraction"] = [train_fraction]
    cfg["engine"] = "pytorch"
    cfg["default_net_type"] = params.net_type
    cfg_path = project / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    train_idx, val_idx = _merged_positions(cfg, project, frames)
    _create_shuffle(cfg_path, train_idx, val_idx, params)
    loader = _loader(cfg_path)
    split_check = loader.split
    if sorted(split_check["train"]) != sorted(train_idx) or sorted(split_check["test"]) != sorted(val_idx):
        raise PoseopsError("DeepLabCut's shuffle does not hold the requested split", file=cfg_path)
    # our settings (epochs, optimizer, augmentation, crop, key metric = validation RMSE)
    updates = config_updates(params, (width, height))
    if multi:
        updates.update(_padded_crop(loader.model_cfg, updates))
    _apply_updates(loader, updates)
    model_dir = project / loader.model_folder.relative_to(project).parent
    return DlcDataset(
        config_path=cfg_path,
        shuffle=SHUFFLE,
        trainset_index=0,
        train_fraction=train_fraction,
        model_dir=model_dir,
        pytorch_config_path=Path(loader.model_config_path),
        images={k: list(v) for k, v in frames.items()},
        train_indices=train_idx,
        val_indices=val_idx,
        scorer=scorer,
        bodyparts=bodyparts,
        iteration=int(cfg.get("iteration", 0)),
        individuals=list(individuals or []),
        unique_bodyparts=list(unique or []),
    )


def _check_multianimal(cfg: dict[str, Any], labels: pd.DataFrame, source_project: Path) -> bool:
    """True for a multi-animal project; the labels table and config.yaml must agree on it."""
    from poseops.dlc.files import is_multianimal

    multi = is_multianimal(cfg)
    has_individual = S.INDIVIDUAL in labels.columns
    if multi and not has_individual:
        raise PoseopsError(f"config.yaml is multi-animal but the labels table has no "
                           f"{S.INDIVIDUAL!r} column: run ingest again", file=Path(source_project) / "config.yaml")
    if has_individual and not multi:
        raise PoseopsError(f"the labels table has an {S.INDIVIDUAL!r} column but config.yaml is not "
                           "multi-animal (multianimalproject: true)", file=Path(source_project) / "config.yaml")
    return multi


def multianimal_net_types() -> list[str]:
    """DLC 3 net types poseops trains on a multi-animal project: the bottom-up ones (a backbone
    with a PAF head, DEKR, DLCRNet). Top-down ones need a detector trained first."""
    from deeplabcut.pose_estimation_pytorch.config.enums import NetType

    return [a for a in NetType.available_aliases() if _net_task(a) == "BU"]


def _net_task(net_type: str) -> str | None:
    """DLC's task for a net type name: BU, TD or CTD (None: not a DLC 3 net type)."""
    from deeplabcut.pose_estimation_pytorch.config.enums import NetType
    from deeplabcut.pose_estimation_pytorch.config.make_pose_config import resolve_net_type_and_task

    try:
        _, top_down = NetType.from_alias(net_type)
        if top_down:
            return "TD"
        _, task = resolve_net_type_and_task(net_type, default=net_type, top_down=False)
    except (ValueError, FileNotFoundError):
        return None
    return str(task.aliases[0])


def check_multianimal_net(net_type: str) -> None:
    """One-line PoseopsError unless ``net_type`` is a bottom-up DLC 3 model (multi-animal)."""
    task = _net_task(net_type)
    if task == "BU":
        return
    ok = ", ".join(multianimal_net_types())
    if task is None:
        raise PoseopsError(f"params.yaml [train]: net_type {net_type!r} is not a DeepLabCut 3 "
                           f"model; a multi-animal project takes one of: {ok}")
    kind = "conditional top-down" if task == "CTD" else "top-down"
    raise PoseopsError(f"params.yaml [train]: net_type {net_type!r} is a {kind} model (it needs a "
                       "detector or conditions trained first), not supported for multi-animal "
                       f"projects; use a bottom-up one: {ok}")


def _padded_crop(model_cfg: Any, updates: dict[str, Any]) -> dict[str, int]:
    """Training crop rounded up to the net's inference padding divisor (HRNet/DEKR: 32): its
    branches only line up on such sizes; DLC pads the smaller images."""
    pad = ((model_cfg.get("data") or {}).get("inference") or {}).get("auto_padding") or {}
    out = {}
    for key, div in (("width", pad.get("pad_width_divisor")), ("height", pad.get("pad_height_divisor"))):
        name = f"data.train.crop_sampling.{key}"
        size = int(updates[name])
        if div and size % int(div):
            out[name] = -(-size // int(div)) * int(div)
            log.info("training crop %s %d -> %d (multiple of %d for %s)", key, size, out[name], div,
                     model_cfg.get("net_type"))
    return out


def _merged_positions(cfg: dict, project: Path, frames: dict[str, list[str]]) -> tuple[list[int], list[int]]:
    """Row positions of our train/val images in DLC's merged (sorted) label table."""
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import merge_annotateddatasets
    from deeplabcut.utils import auxiliaryfunctions

    folder = project / auxiliaryfunctions.get_training_set_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    merged = merge_annotateddatasets(cfg, folder)
    if merged is None:
        raise PoseopsError("DeepLabCut found no labels in the working project", file=project)
    paths = ["/".join(map(str, ix)) if isinstance(ix, tuple) else str(ix) for ix in merged.index]
    pos = {p: i for i, p in enumerate(paths)}
    out = []
    for name in (S.TRAIN, S.VAL):
        missing = [i for i in frames[name] if i not in pos]
        if missing:
            raise PoseopsError(f"{name} image missing from DLC's merged labels", file=missing[0])
        out.append([pos[i] for i in frames[name]])
    if len(paths) != len(out[0]) + len(out[1]):
        raise PoseopsError("DLC's merged labels hold frames outside train/val", file=project)
    return out[0], out[1]


def _create_shuffle(cfg_path: Path, train_idx: list[int], val_idx: list[int], params: TrainParams) -> None:
    import deeplabcut
    from deeplabcut.core.engine import Engine

    with _quiet_stdout():
        deeplabcut.create_training_dataset(
            str(cfg_path),
            Shuffles=[SHUFFLE],
            trainIndices=[list(train_idx)],
            testIndices=[list(val_idx)],
            net_type=params.net_type,
            engine=Engine.PYTORCH,
            userfeedback=False,
        )


@contextmanager
def _quiet_stdout():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    for line in buf.getvalue().splitlines():
        if line.strip():
            log.debug("dlc: %s", line)


def _loader(cfg_path: Path) -> Any:
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader

    return DLCLoader(config=str(cfg_path), shuffle=SHUFFLE, trainset_index=0)


# --------------------------------------------------------------------------------------------
# pytorch_config.yaml from TrainParams
# --------------------------------------------------------------------------------------------


def resolve_dataloader_workers(value: int | str) -> int:
    """``train.dataloader_workers``: an int, or ``auto`` = the CPUs this process may use (SLURM's
    --cpus-per-task, taskset) minus one for the training loop, at most 8; 0 on one CPU."""
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            try:
                return max(0, int(value))
            except ValueError:
                raise PoseopsError(
                    f"params.yaml [train]: dataloader_workers must be an int or auto, not {value!r}"
                ) from None
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(0, min(8, cpus - 1))
    return max(0, int(value))


def config_updates(params: TrainParams, size: tuple[int, int]) -> dict[str, Any]:
    """Dotted pytorch_config.yaml updates for these params (size: image width, height)."""
    from poseops.evaluate.evaluation import resolve_device

    width, height = size
    up: dict[str, Any] = {
        "train_settings.epochs": params.epochs,
        "train_settings.batch_size": params.batch_size,
        "train_settings.seed": params.seed,
        "train_settings.dataloader_workers": resolve_dataloader_workers(params.dataloader_workers),
        # page-locked batches copy to the GPU asynchronously; no use on CPU / MPS
        "train_settings.dataloader_pin_memory": resolve_device(params.device).startswith("cuda"),
        "runner.optimizer": {"type": params.optimizer, "params": {"lr": params.lr}},
        "runner.key_metric": params.key_metric,
        "runner.key_metric_asc": params.key_metric_asc,
        "runner.eval_interval": params.eval_interval,
        "runner.snapshots.save_epochs": params.save_epochs,
        "runner.snapshots.max_snapshots": params.max_snapshots,
        "runner.snapshots.save_optimizer_state": True,  # resume restores the optimizer too
        "data.train.crop_sampling.width": int(params.crop_width or width),
        "data.train.crop_sampling.height": int(params.crop_height or height),
        "data.train.affine": {
            "p": params.affine_p,
            "rotation": params.rotation,
            "scaling": list(params.scaling),
            "translation": params.translation,
        },
        "data.train.gaussian_noise": params.gaussian_noise or False,
        "data.train.motion_blur": params.motion_blur,
        "data.train.hist_eq": params.hist_eq,
        "data.train.hflip": params.hflip or False,
        "device": params.device,
    }
    sched = (params.scheduler or "none").strip()
    if sched.lower() == "none":
        up["runner.scheduler"] = None
    elif sched.lower() != "default":
        if params.scheduler_params is None:
            raise PoseopsError(f"params.yaml [train]: scheduler {sched!r} needs scheduler_params")
        up["runner.scheduler"] = {"type": sched, "params": dict(params.scheduler_params)}
    up.update(params.pytorch_cfg_updates or {})
    return up


def _apply_updates(loader: Any, updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        loader.model_cfg.set_nested(key, value)
    loader.model_cfg.to_yaml(loader.model_config_path)


# --------------------------------------------------------------------------------------------
# Training session: DLC logger sink, per-epoch commit, resume
# --------------------------------------------------------------------------------------------


class _Session:
    """Receives DLC's per-epoch logs; after each epoch's state is on disk, commits the epoch's
    metrics to the MLflow outbox, prints progress and calls the user's epoch callback."""

    def __init__(self, outbox: Any, train_dir: Path, total_epochs: int, start_epoch: int,
                 callback: Callable[[int, dict[str, float]], None] | None,
                 best_metric: float | None, resume_interval_s: float = 60.0) -> None:
        self.outbox = outbox
        self.train_dir = train_dir
        self.total = total_epochs
        self.start_epoch = start_epoch
        self.callback = callback
        self.best_metric = best_metric
        self.resume_interval_s = resume_interval_s
        self._pending: dict[int, dict[str, float]] = {}
        self._uncommitted: list[int] = []  # epochs run since the last resumable state
        self._last_durable = time.monotonic()
        self.committed: list[int] = []
        # epochs already in the journal (an earlier attempt of this run): never logged again
        self._logged = {int(op["step"]) for op in getattr(outbox, "_ops", [])
                        if op.get("op") == "log_metrics" and op.get("step")}

    def on_log(self, metrics: dict[str, float], step: int) -> None:
        from poseops.tracking.runs import mlflow_key

        cur = self._pending.setdefault(step, {})
        for k, v in metrics.items():
            cur[mlflow_key(k)] = float(v)

    def attach_runner(self, runner: Any) -> None:
        sm = runner.snapshot_manager
        if self.best_metric is not None:
            sm._best_metric = self.best_metric  # resume: keep the best of the earlier epochs
        orig = sm.update

        def update(epoch: int, state_dict: dict, last: bool = False) -> None:
            orig(epoch, state_dict, last)
            self.after_epoch(epoch, state_dict, sm)

        sm.update = update

    def after_epoch(self, epoch: int, state_dict: dict, sm: Any) -> None:
        saved = any(s.epochs == epoch for s in sm.snapshots())
        now = time.monotonic()
        durable = saved or epoch >= self.total or now - self._last_durable >= self.resume_interval_s
        resume = self.train_dir / RESUME_FILE
        if saved:
            resume.unlink(missing_ok=True)
        elif durable:  # a full state: a resume restarts after this epoch
            self._save_resume(state_dict)
        metrics = dict(self._pending.get(epoch, {}))
        self._uncommitted.append(epoch)
        if durable:
            self._last_durable = now
            self.commit()
        msg = f"epoch {epoch}/{self.total}"
        for key, label, unit in (
            ("train.total_loss", "train loss", ""),
            ("val.total_loss", "val loss", ""),
            ("val.rmse", "val rmse", " px"),
        ):
            if key in metrics:
                msg += f", {label} {metrics[key]:.4g}{unit}"
        log.info(msg)
        if self.callback is not None:
            try:
                self.callback(epoch, metrics)
            except BaseException:
                # the run ends here (pruned, or the callback failed): keep what it did, with a
                # state covering it, so a resume starts after the epochs logged now
                if self._uncommitted and not saved:
                    try:
                        self._save_resume(state_dict)
                    except Exception as e:  # noqa: BLE001 - the callback's error comes first
                        log.warning("resumable state after epoch %d not saved: %s", epoch, e)
                self.commit()
                raise

    def _save_resume(self, state_dict: dict) -> None:
        import torch

        resume = self.train_dir / RESUME_FILE
        tmp = resume.with_suffix(".tmp")
        torch.save(state_dict, tmp)
        os.replace(tmp, resume)

    def commit(self) -> None:
        """Send the metrics of the epochs run since the last resumable state, in order; an
        epoch already in the journal (logged before a resume) is not logged again."""
        for epoch in self._uncommitted:
            metrics = self._pending.pop(epoch, {})
            if epoch in self._logged:
                log.info("epoch %d is already logged to MLflow: not logged again", epoch)
                continue
            self.outbox.put("log_metrics", metrics=metrics, step=epoch,
                            timestamp=int(time.time() * 1000))
            self._logged.add(epoch)
            self.committed.append(epoch)
        self._uncommitted.clear()


@contextmanager
def _hook_runner(session: _Session):
    """Let the session see DLC's runner (snapshot manager) built inside apis.training.train."""
    import deeplabcut.pose_estimation_pytorch.apis.training as dlc_training

    orig = dlc_training.build_training_runner

    def build(*args: Any, **kwargs: Any) -> Any:
        runner = orig(*args, **kwargs)
        session.attach_runner(runner)
        return runner

    dlc_training.build_training_runner = build
    try:
        yield
    finally:
        dlc_training.build_training_runner = orig


@contextmanager
def _file_log(path: Path):
    """Also write INFO logs (DLC's and ours) to the train log file."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def _looks_corrupt(path: Path) -> bool:
    """True when the file itself is damaged: empty, or not a whole zip archive (torch.save's
    format; a kill during the write leaves it without its central directory) or one whose CRCs
    fail. An intact archive that does not load is incompatible (another torch/DLC), not corrupt."""
    import zipfile

    try:
        if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
            return True
        with zipfile.ZipFile(path) as z:
            return z.testzip() is not None
    except (OSError, zipfile.BadZipFile, EOFError):
        return True


def _state_epoch(path: Path) -> int | None:
    """Epoch stored in a saved training state; None when the file is corrupt (DLC writes
    snapshots in place, so a kill during torch.save leaves a truncated file). An intact file
    that cannot be loaded here (e.g. saved by another torch version) stops with a PoseopsError:
    it is the training's progress, not garbage."""
    import torch

    try:
        snap = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - corrupt or incompatible, told apart below
        if _looks_corrupt(path):
            log.warning("training state %s is corrupt (%s)", path, type(e).__name__)
            return None
        cause = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise PoseopsError(
            f"training state cannot be loaded here, the file is intact and kept ({cause}); "
            "was it saved by another torch/DeepLabCut version? Resume with that version, or "
            "move the file away to resume from an earlier state", file=path) from e
    return int((snap.get("metadata") or {}).get("epoch", 0))


def _set_aside_corrupt(path: Path) -> Path:
    """Rename a corrupt state to ``<name>.corrupt`` (DLC no longer lists it; never deleted)."""
    dest = path.with_name(path.name + ".corrupt")
    n = 1
    while dest.exists():
        dest, n = path.with_name(f"{path.name}.{n}.corrupt"), n + 1
    os.replace(path, dest)
    log.warning("moved the corrupt training state %s aside to %s", path, dest.name)
    return dest


def latest_state(train_dir: Path) -> tuple[Path | None, int]:
    """The most advanced readable training state in a DLC train folder: (path, epoch).
    Corrupt snapshot files (a kill while saving) are renamed to ``*.corrupt`` so DLC never lists
    them; an intact one that does not load here stops the resume (PoseopsError, file kept)."""
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    candidates = [s.path for s in list_snapshots(train_dir, "snapshot", best_in_last=False)]
    if (train_dir / RESUME_FILE).exists():
        candidates.append(train_dir / RESUME_FILE)
    found = []
    for path in candidates:
        epoch = _state_epoch(path)
        if epoch is None:
            _set_aside_corrupt(path)
        else:
            found.append((epoch, path))
    if not found:
        return None, 0
    epoch, path = max(found, key=lambda t: (t[0], t[1].name == RESUME_FILE))
    return path, epoch


def _snapshots(train_dir: Path) -> tuple[Path | None, Path | None]:
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    snaps = list_snapshots(train_dir, "snapshot", best_in_last=False)
    bests = [s for s in snaps if s.best]
    best = bests[-1].path if bests else None
    last = max(snaps, key=lambda s: s.epochs).path if snaps else None
    return best, last


def read_learning_stats(train_dir: Path) -> pd.DataFrame:
    path = Path(train_dir) / "learning_stats.csv"
    if not path.exists():
        return pd.DataFrame({"step": pd.Series(dtype=int)})
    return pd.read_csv(path)


def _truncate_learning_stats(train_dir: Path, epoch: int) -> pd.DataFrame:
    """Drop rows of epochs after the resume point (DLC's CSV logger reloads the file)."""
    stats = read_learning_stats(train_dir)
    if len(stats) and (stats["step"] > epoch).any():
        stats = stats[stats["step"] <= epoch]
        if stats.empty:
            (Path(train_dir) / "learning_stats.csv").unlink()
        else:
            write_csv(stats, Path(train_dir) / "learning_stats.csv")
    return stats


def _offline_init(loader: Any, path: Path, seed: int) -> Path:
    """Random-init weights saved as a snapshot: DLC then skips the hub download (NOTES.md).

    Seeded: these weights replace the ones DLC draws after its own seeding, so an unseeded init
    would make two runs with the same ``seed`` differ from the first epoch."""
    import torch
    from deeplabcut.pose_estimation_pytorch import utils as dlc_utils
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    dlc_utils.fix_seeds(seed)
    model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
    torch.save({"model": model.state_dict()}, path)
    return path


# --------------------------------------------------------------------------------------------
# Versions / fingerprints
# --------------------------------------------------------------------------------------------


def frame_digest(df: pd.DataFrame) -> str:
    """md5 of a table's content (row order and column names included)."""
    h = hashlib.md5(usedforsecurity=False)
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()


def bytes_md5(data: bytes) -> str:
    """md5 of a file's bytes: what DVC records for a file output (so tags match dvc.lock)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def dataset_version(labels: pd.DataFrame, split: pd.DataFrame, recorded: dict[str, str] | None = None) -> str:
    """Short hash identifying (labels, split): from the md5s of the files read when given
    (``recorded``: {path: md5 of the bytes}), else from the tables' content."""
    parts = sorted(recorded.values()) if recorded else [frame_digest(labels), frame_digest(split)]
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:12]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fingerprint(params: TrainParams, version: str) -> str:
    d = dataclasses.asdict(params)
    # settings that change how a run is executed or tracked, not the model it trains
    for k in ("device", "tracking_timeout_s", "resume_interval_s", "experiment", "registered_model",
              "metrics", "system_metrics", "system_metrics_interval_s", "dataloader_workers"):
        d.pop(k, None)
    return hashlib.md5(json.dumps([d, version], sort_keys=True, default=str).encode(), usedforsecurity=False).hexdigest()


def flat_params(params: TrainParams, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in dataclasses.asdict(params).items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{prefix}{k}.{k2}"] = v2
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------------------------
# train_model
# --------------------------------------------------------------------------------------------


def _read_run_json(workdir: Path) -> dict[str, Any]:
    path = workdir / "run.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _is_pruned(exc: BaseException) -> bool:
    return type(exc).__name__ in {"TrialPruned", "Pruned"}


def train_model(
    params: TrainParams,
    labels: pd.DataFrame,
    split: pd.DataFrame,
    source_project: Path,
    workdir: Path,
    *,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    mlflow_parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict | None = None,
    dvc_md5s: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Train a DLC model on (labels, split) in ``workdir``, tracked in one MLflow run.

    labels: labels/consensus table (poseops.core.schema; one scorer or a `consensus` scorer);
    split: image, split (train/val/test). ``epoch_callback(epoch, metrics)`` is called after each
    epoch with the MLflow-named metrics (val.rmse, val.total_loss, train.total_loss, ...); an
    exception it raises stops training and propagates (optuna.TrialPruned: the run ends KILLED
    with tag pruned=true). Re-running an interrupted training (same params and data) resumes
    from its last saved state in the same MLflow run. ``tracking_uri``: MLflow store (default:
    MLFLOW_TRACKING_URI, else sqlite:///mlflow.db); ``dvc_md5s``: {path: md5 of the bytes} of the
    labels/split files read (dataset version tag, resume fingerprint), else the tables are hashed.
    """
    import poseops
    from poseops.tracking.runs import PENDING_DIR, Outbox, quiet_env, set_aside_unsent

    quiet_env()
    params.validate()
    t0 = time.perf_counter()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    labels = _single_scorer(labels)
    version = dataset_version(labels, split, dvc_md5s)
    fingerprint = _fingerprint(params, version)
    prev = _read_run_json(workdir)
    resume = (
        prev.get("status") in RESUMABLE
        and prev.get("fingerprint") == fingerprint
        and Path(prev.get("config_path", "/nonexistent")).exists()
    )
    track_dir = workdir / "tracking"
    if resume:
        ds = _dataset_from_run_json(prev)
        log.info("resuming the interrupted training in %s", workdir)
    else:
        # a new run: the old journal goes, but never with unsent operations (set aside, sent by
        # `poseops sync`, its files copied out of the working project rebuilt below)
        set_aside_unsent(track_dir, workdir / PENDING_DIR, "train-")
        log.info("building the DeepLabCut training set in %s", workdir / "project")
        ds = prepare_dlc_project(labels, split, source_project, workdir, params)
        write_parquet(labels.reset_index(drop=True), workdir / "labels.parquet")
        write_csv(split, workdir / "split.csv")
    outbox = Outbox(track_dir, tracking_uri)
    train_dir = ds.pytorch_config_path.parent
    loader = _loader(ds.config_path)

    info = {
        "status": "running",
        "fingerprint": fingerprint,
        "dataset_version": version,
        "config_path": str(ds.config_path),
        "shuffle": ds.shuffle,
        "trainset_index": ds.trainset_index,
        "model_dir": str(ds.model_dir),
        "pytorch_config_path": str(ds.pytorch_config_path),
        "images": ds.images,
        "train_indices": ds.train_indices,
        "val_indices": ds.val_indices,
        "iteration": ds.iteration,
        "tracking_uri": outbox.uri,
        "experiment": params.experiment,
    }
    if resume:
        info = {**prev, **info}
    write_json(info, workdir / "run.json")

    if not resume:
        run_tags = {
            "git_commit": _git_commit(),
            "dataset_version": version,
            "dlc_iteration": ds.iteration,
            "shuffle": ds.shuffle,
            "net_type": params.net_type,
            "poseops_version": poseops.__version__,
            "deeplabcut_version": _dlc_version(),
            "train_fraction": ds.train_fraction,
            "n_train": len(ds.images[S.TRAIN]),
            "n_val": len(ds.images[S.VAL]),
            "n_test": len(ds.images[S.TEST]),
            **({"multianimal": True, "individuals": ",".join(ds.individuals)} if ds.multianimal else {}),
            **{f"dvc_md5.{k}": v for k, v in (dvc_md5s or {}).items()},
            **(tags or {}),
        }
        # `mlflow run -e train` made a run for us (MLFLOW_RUN_ID): log into it
        adopt = os.environ.get("MLFLOW_RUN_ID") if mlflow_parent_run_id is None else None
        outbox.put(
            "create_run",
            run_id=adopt,
            experiment=params.experiment,
            run_name=run_name,
            parent_run_id=mlflow_parent_run_id,
            tags={k: str(v) for k, v in run_tags.items()},
        )
        outbox.put("log_params", params=flat_params(params))
        outbox.put("log_artifact", path=str(ds.pytorch_config_path), artifact_path="config")
        outbox.put(
            "log_input",
            path=str(workdir / "labels.parquet"),
            name=f"labels-{version}",
            context="training",
        )
    else:
        outbox.put("set_status", status="RUNNING")
    # send the run's set-up now, before training, so the sender thread only has each epoch's
    # metrics to send while DLC trains (an unreachable server fails fast and is retried later)
    outbox.flush_once()
    outbox.start()
    if params.system_metrics:
        from poseops.tracking.runs import start_system_metrics

        start_system_metrics(outbox, params.system_metrics_interval_s)

    # resume point
    start_epoch, state = 0, None
    if resume:
        state, start_epoch = latest_state(train_dir)
        stats = _truncate_learning_stats(train_dir, start_epoch)
        _replay_uncommitted(outbox, stats, start_epoch)
        outbox.put("set_tags", tags={"resumed_from_epoch": start_epoch})
        log.info("resuming from epoch %d (%s)", start_epoch, state)
    best_metric = _best_so_far(read_learning_stats(train_dir), params) if start_epoch else None

    session = _Session(outbox, train_dir, params.epochs, start_epoch, epoch_callback, best_metric,
                       params.resume_interval_s)
    t1, c1 = time.perf_counter(), time.process_time()
    try:
        if start_epoch < params.epochs:
            _run_dlc_training(loader, params, session, train_dir, state, start_epoch)
    except BaseException as e:
        pruned = _is_pruned(e)
        status = "KILLED" if pruned or isinstance(e, KeyboardInterrupt) else "FAILED"
        if pruned:
            outbox.put("set_tags", tags={"pruned": "true"})
        _finish_tracking(outbox, train_dir, status, params, artifacts=True)
        info["status"] = "pruned" if pruned else ("interrupted" if status == "KILLED" else "failed")
        _write_final_run_json(workdir, info, outbox, train_dir)
        raise
    t2, c2 = time.perf_counter(), time.process_time()
    result = _finalize(params, ds, workdir, info, outbox, train_dir)
    result.timings = {"prepare_s": t1 - t0, "train_s": t2 - t1, "train_cpu_s": c2 - c1,
                      "finalize_s": time.perf_counter() - t2}
    return result


def _dlc_version() -> str:
    from importlib.metadata import version

    try:
        return version("deeplabcut")
    except Exception:  # noqa: BLE001
        return "unknown"


def _dataset_from_run_json(prev: dict[str, Any]) -> DlcDataset:
    import yaml

    from poseops.dlc.files import config_bodyparts, config_individuals, config_unique_bodyparts

    cfg = yaml.safe_load(Path(prev["config_path"]).read_text())
    return DlcDataset(
        config_path=Path(prev["config_path"]),
        shuffle=int(prev["shuffle"]),
        trainset_index=int(prev["trainset_index"]),
        train_fraction=float(cfg["TrainingFraction"][0]),
        model_dir=Path(prev["model_dir"]),
        pytorch_config_path=Path(prev["pytorch_config_path"]),
        images=prev["images"],
        train_indices=prev["train_indices"],
        val_indices=prev["val_indices"],
        scorer=cfg["scorer"],
        bodyparts=config_bodyparts(cfg),
        iteration=int(prev.get("iteration", 0)),
        individuals=config_individuals(cfg),
        unique_bodyparts=config_unique_bodyparts(cfg),
    )


def _replay_uncommitted(outbox: Any, stats: pd.DataFrame, upto: int) -> None:
    """Epochs whose state was saved but whose metrics never reached the outbox (a kill between
    the two): commit them from learning_stats.csv (the same values DLC logged)."""
    from poseops.tracking.runs import mlflow_key

    done = {int(op["step"]) for op in outbox._ops if op["op"] == "log_metrics"}
    for _, row in stats.iterrows():
        step = int(row["step"])
        if step <= upto and step not in done:
            metrics = {mlflow_key(k): float(v) for k, v in row.items() if k != "step" and pd.notna(v)}
            outbox.put("log_metrics", metrics=metrics, step=step, timestamp=int(time.time() * 1000))


def _best_so_far(stats: pd.DataFrame, params: TrainParams) -> float | None:
    col = f"metrics/{params.key_metric}"
    if col not in stats.columns or stats[col].dropna().empty:
        return None
    return float(stats[col].max() if params.key_metric_asc else stats[col].min())


def _run_dlc_training(
    loader: Any, params: TrainParams, session: _Session, train_dir: Path, state: Path | None,
    start_epoch: int,
) -> None:
    from deeplabcut.pose_estimation_pytorch import utils as dlc_utils
    from deeplabcut.pose_estimation_pytorch.apis.training import train
    from deeplabcut.pose_estimation_pytorch.task import Task

    from poseops.tracking.runs import register_dlc_logger

    logger_type = register_dlc_logger()
    # DLC adds the snapshot's epoch to train_settings.epochs when resuming
    loader.model_cfg.set_nested("train_settings.epochs", params.epochs - start_epoch)
    snapshot_path = state
    if snapshot_path is None and not params.pretrained:
        snapshot_path = _offline_init(loader, train_dir / "poseops-init.pt", params.seed)
    dlc_utils.fix_seeds(params.seed)
    device = params.device
    with _file_log(train_dir / "train.txt"), _hook_runner(session):
        train(
            loader=loader,
            run_config=loader.model_cfg,
            task=Task(loader.model_cfg.get("method", "bu")),
            device=device,
            logger_config={"type": logger_type, "sink": session},
            snapshot_path=str(snapshot_path) if snapshot_path else None,
            max_snapshots_to_keep=params.max_snapshots,
        )


def _finish_tracking(outbox: Any, train_dir: Path, status: str, params: TrainParams, artifacts: bool) -> None:
    if artifacts:
        for name in ("learning_stats.csv", "train.txt"):
            if (train_dir / name).exists():
                outbox.put("log_artifact", path=str(train_dir / name), artifact_path="train")
    outbox.put("end_run", status=status)
    if not outbox.close(timeout_s=params.tracking_timeout_s) and outbox.blocked is None:
        log.warning(
            "MLflow server %s unreachable: %d operation(s) kept in %s; nothing is lost. "
            "Send them when it is back with: poseops sync --workdir %s",
            outbox.uri,
            len(outbox.pending),
            outbox.journal,
            outbox.folder.parent,
        )


def _write_final_run_json(workdir: Path, info: dict[str, Any], outbox: Any, train_dir: Path) -> None:
    best, last = _snapshots(train_dir)
    info.update(
        run_id=outbox.run_id,
        model_uri=outbox.state.get("model_uri"),
        model_name=outbox.state.get("model_name"),
        model_version=outbox.state.get("model_version"),
        best_snapshot=str(best) if best else None,
        last_snapshot=str(last) if last else None,
        tracking_pending=len(outbox.pending),
    )
    write_json(info, workdir / "run.json")


def _finalize(
    params: TrainParams, ds: DlcDataset, workdir: Path, info: dict[str, Any], outbox: Any,
    train_dir: Path,
) -> TrainResult:
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import list_snapshots

    for name in (RESUME_FILE, "poseops-init.pt"):
        (train_dir / name).unlink(missing_ok=True)
    best, last = _snapshots(train_dir)
    chosen = (best or last) if params.snapshot == "best" else (last or best)
    if chosen is None:
        raise PoseopsError("training produced no snapshot", file=train_dir)
    prune_paf_graph(ds, chosen)
    stats = read_learning_stats(train_dir)
    epoch = next(s.epochs for s in list_snapshots(train_dir, "snapshot") if s.path == chosen)
    metrics = _metrics_at(stats, epoch)
    metrics["selected_epoch"] = float(epoch)
    summary = {f"selected.{k}": v for k, v in metrics.items()}
    outbox.put("log_metrics", metrics=summary, step=0, timestamp=int(time.time() * 1000))
    outbox.put("set_tags", tags={"selected_snapshot": chosen.name, "best_epoch": epoch})
    outbox.put("log_artifact", path=str(chosen), artifact_path="snapshots")
    outbox.put("log_artifact", path=str(ds.pytorch_config_path), artifact_path="config")
    outbox.put("log_model", pytorch_config=str(ds.pytorch_config_path), snapshot=str(chosen))
    if params.registered_model:
        from poseops.tracking.runs import model_description

        val = {k: v for k, v in metrics.items() if k.startswith("val.")}
        outbox.put(
            "register_model",
            name=params.registered_model,
            tags={k: f"{v:.4f}" for k, v in val.items()},
            description=model_description(val),
        )
    _finish_tracking(outbox, train_dir, "FINISHED", params, artifacts=True)
    info["status"] = "complete"
    info["selected_snapshot"] = str(chosen)
    info["metrics"] = metrics
    _write_final_run_json(workdir, info, outbox, train_dir)
    return TrainResult(
        config_path=ds.config_path,
        shuffle=ds.shuffle,
        trainset_index=ds.trainset_index,
        model_dir=ds.model_dir,
        pytorch_config_path=ds.pytorch_config_path,
        best_snapshot=best,
        last_snapshot=last,
        learning_stats=stats,
        run_id=outbox.run_id,
        metrics=metrics,
        images=ds.images,
        model_uri=outbox.state.get("model_uri"),
        model_version=outbox.state.get("model_version"),
        workdir=workdir,
        tracking_pending=len(outbox.pending),
    )


def prune_paf_graph(ds: DlcDataset, snapshot: Path) -> list[int] | None:
    """Multi-animal models with a part-affinity-field head (DLCRNetHead): keep the PAF edges that
    assemble best, as DLC's ``evaluate_network`` does before it evaluates (its
    ``benchmark_paf_graphs``: candidate graphs from the train frames, ranked by mAP on DLC's "test"
    frames = our validation frames, never our test set). The choice is written to
    pytorch_config.yaml (``edges_to_keep``), so evaluate, the MLflow model and DLC's own tools
    assemble animals with the same graph. Returns the kept edges (None: not a PAF model)."""
    if not ds.multianimal:
        return None
    loader = _loader(ds.config_path)
    if loader.model_cfg["model"]["heads"]["bodypart"]["type"] != "DLCRNetHead":
        return None
    from deeplabcut.pose_estimation_pytorch.apis import prune_paf_graph as dlc_prune

    with _quiet_stdout():
        results = dlc_prune.benchmark_paf_graphs(loader=loader, snapshot_path=snapshot)
    edges = [int(e) for e in results[0]["edges_to_keep"]] if results else None
    log.info("PAF graph: %s edge(s) kept (DLC's benchmark_paf_graphs on %s)",
             len(edges) if edges is not None else "all", snapshot.name)
    return edges


def _metrics_at(stats: pd.DataFrame, epoch: int) -> dict[str, float]:
    from poseops.tracking.runs import mlflow_key

    rows = stats[stats["step"] == epoch]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    return {mlflow_key(k): float(v) for k, v in row.items() if k != "step" and pd.notna(v) and "val." in mlflow_key(k)}


def load_result(workdir: str | Path) -> TrainResult:
    """The TrainResult of a finished training, from `<workdir>/run.json` (for later stages)."""
    workdir = Path(workdir)
    info = _read_run_json(workdir)
    if not info:
        raise PoseopsError("no training here (run.json missing): run `poseops train`", file=workdir / "run.json")
    train_dir = Path(info["pytorch_config_path"]).parent
    best, last = _snapshots(train_dir)
    return TrainResult(
        config_path=Path(info["config_path"]),
        shuffle=int(info["shuffle"]),
        trainset_index=int(info["trainset_index"]),
        model_dir=Path(info["model_dir"]),
        pytorch_config_path=Path(info["pytorch_config_path"]),
        best_snapshot=best,
        last_snapshot=last,
        learning_stats=read_learning_stats(train_dir),
        run_id=info.get("run_id"),
        metrics=info.get("metrics") or {},
        images=info.get("images") or {},
        model_uri=info.get("model_uri"),
        model_version=info.get("model_version"),
        workdir=workdir,
        tracking_pending=int(info.get("tracking_pending") or 0),
    )


# --------------------------------------------------------------------------------------------
# CLI / DVC stage
# --------------------------------------------------------------------------------------------


def run(params_file: str | None = None, overrides: dict[str, Any] | None = None) -> TrainResult:
    """The DVC stage: consensus table + split -> data/train + MLflow run + metrics JSON."""
    from poseops.config.loader import from_dict, load_params, section

    params = section("train", TrainParams, params_file)
    if overrides:  # -P key=value: checked like params.yaml (types, unknown keys, closest name)
        merged = dataclasses.asdict(params)
        for k, v in overrides.items():
            current = merged.get(k)
            if isinstance(current, int) and not isinstance(current, bool) and isinstance(v, float):
                if not v.is_integer():
                    raise PoseopsError(f"train parameter {k} must be an integer, got {v}")
                v = int(v)  # MLproject parameters have no int type: -P epochs=5.0
            merged[k] = v
        params = from_dict(TrainParams, merged, where="poseops train -P")
    allp = load_params(params_file)
    labels_path = Path((allp.get("consensus") or {}).get("out", "data/interim/consensus.parquet"))
    split_path = Path((allp.get("split") or {}).get("out", "data/processed/split.csv"))
    project = Path((allp.get("project") or {}).get("path", "data/raw/demo"))
    for p in (labels_path, split_path):
        if not p.exists():
            raise PoseopsError("input missing (run the earlier stages: dvc repro)", file=p)
    # hash the bytes that are parsed: dvc.lock may still hold the previous run's md5s while
    # `dvc repro` runs, so the tags and the resume fingerprint come from the files read here
    labels_bytes, split_bytes = labels_path.read_bytes(), split_path.read_bytes()
    labels = pd.read_parquet(io.BytesIO(labels_bytes))
    split = pd.read_csv(io.BytesIO(split_bytes))
    md5s = {str(labels_path): bytes_md5(labels_bytes), str(split_path): bytes_md5(split_bytes)}
    res = train_model(params, labels, split, project, Path(params.workdir), dvc_md5s=md5s)
    write_json({**res.metrics, "run_id": res.run_id}, params.metrics)
    log.info("trained: run %s, model %s, val rmse %.3f px", res.run_id, res.model_uri,
             res.metrics.get("val.rmse", float("nan")))
    return res


def _parse_value(text: str) -> Any:
    from poseops.config.loader import load_yaml

    return load_yaml(text)  # YAML 1.2 floats: -P lr=1e-3 is a number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a DeepLabCut model on the split, tracked in MLflow")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    p.add_argument(
        "-P", "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a train parameter, e.g. -P epochs=5 (repeatable)",
    )
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise PoseopsError(f"-P expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(v)
    res = run(args.params, overrides)
    print(json.dumps({"run_id": res.run_id, "model_uri": res.model_uri, **res.metrics}, indent=1))
    return 0
