"""The working DeepLabCut project a training runs in, built from our labels and split.

``<workdir>/project`` is a DLC project (config.yaml, labeled-data, dlc-models-pytorch, ...) with
one shuffle: our TRAIN frames are DLC's trainIndices, our VAL frames its testIndices (so DLC's
per-epoch evaluation and best-snapshot choice never see the test frames, whose images are only
linked for later inference). Its pytorch_config.yaml gets our settings (:func:`config_updates`);
multi-animal PAF models keep DLC's pruned PAF graph (:func:`prune_paf_graph`).
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.train import TrainParams, resolve_dataloader_workers
from poseops.core import schema as S
from poseops.core.device import resolve_device
from poseops.core.errors import PoseopsError
from poseops.dlc import files as dlcio
from poseops.train.augment import covering_config
from poseops.train.record import single_scorer

log = logging.getLogger(__name__)

SHUFFLE = 1



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


# --------------------------------------------------------------------------------------------
# Labels -> working DLC project
# --------------------------------------------------------------------------------------------


def training_frames(labels: pd.DataFrame, split: pd.DataFrame) -> dict[str, list[str]]:
    """Image paths per split (train/val/test), sorted; frames with no labeled keypoint dropped.

    labels: labels/consensus table (image, bodypart, x, y, ...); split: image, split.
    """
    S.require_columns(labels, [S.IMAGE, S.VIDEO, S.BODYPART, S.X, S.Y], "labels")
    S.require_columns(split, [S.IMAGE, S.SPLIT], "split")
    cohort = split[S.SPLIT].map(S.is_cohort)  # split.cohorts: held out, never trained on
    if cohort.any():
        log.info("%d frame(s) of generalisation cohorts are not used for training", int(cohort.sum()))
    bad = split.loc[~split[S.SPLIT].isin(S.SPLITS) & ~cohort, S.SPLIT]
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
    unknown = sorted(set(labels[S.BODYPART]) - set(bodyparts))
    if unknown:
        raise PoseopsError("bodypart not in the project's config.yaml", bodypart=unknown[0])
    if individuals is None:
        return dlcio.labels_to_wide(labels.assign(**{S.SCORER: scorer}), scorer=scorer, bodyparts=bodyparts)
    _check_individuals(labels, individuals, unique_bodyparts or [])
    return dlcio.labels_to_wide(labels.assign(**{S.SCORER: scorer}), scorer=scorer, bodyparts=bodyparts,
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
    CSV header's order) and the folder name as Task."""
    path = Path(source_project) / "config.yaml"
    if path.is_file():
        return dlcio.read_config(path)
    if not Path(source_project).is_dir():
        raise PoseopsError("project folder not found", file=source_project)
    from deeplabcut.core.config.project_config import ProjectConfig

    scorer = str(labels[S.SCORER].iloc[0])
    # the CSV header's order (the labels table may be sorted), then any other labeled name
    header = dlcio.lightning_pose_bodyparts(Path(source_project))
    bodyparts = list(dict.fromkeys([*header, *labels[S.BODYPART].astype(str)]))
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
    labels: labels/consensus table (one scorer, or a ``consensus`` one); split: image, split.
    """
    source_project = Path(source_project)
    labels = single_scorer(labels)
    src_cfg = source_config(source_project, labels)
    multi = _check_multianimal(src_cfg, labels, source_project)
    if multi:
        check_multianimal_net(params.net_type)
    frames = training_frames(labels, split)
    project = Path(workdir).resolve() / "project"
    if project.exists():
        shutil.rmtree(project)
    (project / "videos").mkdir(parents=True)
    # DLC reads labeled-data/<video>/<image>: Lightning Pose's flat labeled-data/<image> gets
    # the video folder in the working project (linked at both paths: inference uses ours)
    to_dlc = {i: dlcio.dlc_image_path(i, str(v)) for i, v in
              labels[[S.IMAGE, S.VIDEO]].drop_duplicates(S.IMAGE).itertuples(index=False)}
    _link_images(frames, source_project, project, to_dlc)
    videos = _write_label_files(labels.assign(**{S.IMAGE: labels[S.IMAGE].map(to_dlc)}),
                                {k: [to_dlc[i] for i in v] for k, v in frames.items()},
                                src_cfg, multi, project)
    size = image_size(labels)
    n_train, n_val = len(frames[S.TRAIN]), len(frames[S.VAL])
    train_fraction = round(n_train / (n_train + n_val), 2)
    cfg = _working_config(src_cfg, project, videos, size, train_fraction, params.net_type)
    cfg_path = project / "config.yaml"
    cfg_path.write_text(_yaml_text(cfg))

    train_idx, val_idx = _merged_positions(
        cfg, project, {k: [to_dlc[i] for i in v] for k, v in frames.items()})
    _create_shuffle(cfg_path, train_idx, val_idx, params)
    loader = dlc_loader(cfg_path)
    split_check = loader.split
    if sorted(split_check["train"]) != sorted(train_idx) or sorted(split_check["test"]) != sorted(val_idx):
        raise PoseopsError("DeepLabCut's shuffle does not hold the requested split", file=cfg_path)
    # our settings (epochs, optimizer, augmentation, crop, key metric = validation RMSE)
    updates = config_updates(params, size)
    if multi:
        updates.update(_padded_crop(loader.model_cfg, updates))
    apply_updates(loader, updates)
    return DlcDataset(
        config_path=cfg_path,
        shuffle=SHUFFLE,
        trainset_index=0,
        train_fraction=train_fraction,
        model_dir=project / loader.model_folder.relative_to(project).parent,
        pytorch_config_path=Path(loader.model_config_path),
        images={k: list(v) for k, v in frames.items()},
        train_indices=train_idx,
        val_indices=val_idx,
        scorer=cfg["scorer"],
        bodyparts=dlcio.config_bodyparts(cfg),
        iteration=int(cfg.get("iteration", 0)),
        individuals=dlcio.config_individuals(cfg) if multi else [],
        unique_bodyparts=dlcio.config_unique_bodyparts(cfg) if multi else [],
    )


def _link_images(frames: dict[str, list[str]], source_project: Path, project: Path,
                 to_dlc: dict[str, str] | None = None) -> None:
    """Every split's images into the working project (test images only for inference later),
    also at their DLC path (``to_dlc``) where that differs."""
    all_images = [i for name in S.SPLITS for i in frames[name]]
    for img in all_images:
        src = source_project / img
        if not src.exists():
            raise PoseopsError("image of the labels table not found in the source project", file=src)
        _link_or_copy(src, project / img)
        dlc = (to_dlc or {}).get(img, img)
        if dlc != img:
            _link_or_copy(src, project / dlc)


def _write_label_files(
    labels: pd.DataFrame, frames: dict[str, list[str]], cfg: dict[str, Any], multi: bool,
    project: Path,
) -> list[str]:
    """DLC's CollectedData files of the train + val frames, per video, under the config's
    scorer. Returns the videos written (sorted)."""
    scorer = cfg["scorer"]
    bodyparts = dlcio.config_bodyparts(cfg)  # single-animal: cfg["bodyparts"]
    individuals = dlcio.config_individuals(cfg) if multi else None
    unique = dlcio.config_unique_bodyparts(cfg) if multi else None
    fit_images = set(frames[S.TRAIN]) | set(frames[S.VAL])
    used = labels[labels[S.IMAGE].isin(fit_images)]
    videos = sorted(used[S.VIDEO].unique())
    for video in videos:
        wide = collected_data(used[used[S.VIDEO] == video], scorer, bodyparts, individuals, unique)
        dlcio.write_collected_data(wide, project / "labeled-data" / video / f"CollectedData_{scorer}.h5")
    return videos


def _working_config(
    src_cfg: dict[str, Any], project: Path, videos: list[str], size: tuple[int, int],
    train_fraction: float, net_type: str,
) -> dict[str, Any]:
    """The working project's config.yaml: the source's, with its path, videos (crop = the
    image size), training fraction and the PyTorch engine."""
    width, height = size
    cfg = dict(src_cfg)
    cfg["project_path"] = str(project)
    cfg["video_sets"] = {
        str(project / "videos" / f"{v}.mp4"): {"crop": f"0, {width}, 0, {height}"} for v in videos
    }
    cfg["TrainingFraction"] = [train_fraction]
    cfg["engine"] = "pytorch"
    cfg["default_net_type"] = net_type
    return cfg


def _yaml_text(cfg: dict[str, Any]) -> str:
    """A DLC config as YAML text, keys in their order."""
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False)


def _check_multianimal(cfg: dict[str, Any], labels: pd.DataFrame, source_project: Path) -> bool:
    """True for a multi-animal project; the labels table and config.yaml must agree on it."""
    multi = dlcio.is_multianimal(cfg)
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


def dlc_loader(cfg_path: Path) -> Any:
    """DLC's loader of the working project's shuffle (its model_cfg = pytorch_config.yaml)."""
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader

    return DLCLoader(config=str(cfg_path), shuffle=SHUFFLE, trainset_index=0)


def dataset_from_run_json(prev: dict[str, Any]) -> DlcDataset:
    """The DlcDataset of an earlier training in this workdir (its run.json, as a dict): a
    resume trains on the working project that training built."""
    cfg = dlcio.read_config(Path(prev["config_path"]))
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
        bodyparts=dlcio.config_bodyparts(cfg),
        iteration=int(prev.get("iteration", 0)),
        individuals=dlcio.config_individuals(cfg),
        unique_bodyparts=dlcio.config_unique_bodyparts(cfg),
    )


# --------------------------------------------------------------------------------------------
# pytorch_config.yaml from TrainParams
# --------------------------------------------------------------------------------------------


def config_updates(params: TrainParams, size: tuple[int, int]) -> dict[str, Any]:
    """Dotted pytorch_config.yaml updates for these params (size: image width, height)."""
    width, height = size
    up: dict[str, Any] = {
        "train_settings.epochs": params.epochs,
        "train_settings.batch_size": params.batch_size,
        "train_settings.seed": params.seed,
        "train_settings.dataloader_workers": resolve_dataloader_workers(params.dataloader_workers),
        # page-locked batches copy to the GPU asynchronously; no use on CPU / MPS
        "train_settings.dataloader_pin_memory": resolve_device(params.device).startswith("cuda"),
        "runner.optimizer": {"type": params.optimizer, "params": {"lr": params.effective_lr}},
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
    up.update(augmentation_updates(params))
    up.update(params.pytorch_cfg_updates or {})
    return up


def augmentation_updates(params: TrainParams) -> dict[str, Any]:
    """DLC's occlusion / grayscale / elastic keys, written only when switched on (the default
    pytorch_config.yaml stays as DLC makes it); see :mod:`poseops.train.augment`."""
    up: dict[str, Any] = {}
    if (cover := covering_config(params)) is not None:
        up["data.train.covering"] = cover
    if params.grayscale:
        up["data.train.grayscale"] = True
    if params.elastic:
        up["data.train.elastic_transform"] = True
    return up


def apply_updates(loader: Any, updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        loader.model_cfg.set_nested(key, value)
    loader.model_cfg.to_yaml(loader.model_config_path)


class _CappedLoader:
    """A DLC loader whose ``ground_truth_keypoints(mode)`` holds at most ``max_frames`` images
    (evenly spaced over the sorted image paths; all of them when there are no more), everything
    else passed through: what ``benchmark_paf_graphs`` runs its forward passes on."""

    def __init__(self, loader: Any, max_frames: int):
        self._loader, self.max_frames = loader, max_frames
        self.used: dict[str, list[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def ground_truth_keypoints(self, mode: str, *args: Any, **kwargs: Any) -> dict:
        gt = self._loader.ground_truth_keypoints(mode, *args, **kwargs)
        if self.max_frames <= 0 or len(gt) <= self.max_frames:
            self.used[mode] = list(gt)
            return gt  # untouched: a project under the cap prunes exactly as DLC does
        self.used[mode] = capped_sample(sorted(gt), self.max_frames)
        return {k: gt[k] for k in self.used[mode]}


def capped_sample(items: list[Any], cap: int) -> list[Any]:
    """At most ``cap`` of ``items``, evenly spaced (first and last kept), in their order; all of
    them when ``len(items) <= cap``."""
    if cap <= 0 or len(items) <= cap:
        return list(items)
    if cap == 1:
        return [items[0]]
    step = (len(items) - 1) / (cap - 1)
    return [items[round(k * step)] for k in range(cap)]


def prune_paf_graph(ds: DlcDataset, snapshot: Path, max_frames: int = 200) -> list[int] | None:
    """Multi-animal models with a part-affinity-field head (DLCRNetHead): keep the PAF edges that
    assemble best, as DLC's ``evaluate_network`` does before it evaluates (its
    ``benchmark_paf_graphs``: candidate graphs from the train frames, ranked by mAP on DLC's "test"
    frames = our validation frames, never our test set). The choice is written to
    pytorch_config.yaml (``edges_to_keep``), so evaluate, the MLflow model and DLC's own tools
    assemble animals with the same graph. Returns the kept edges (None: not a PAF model).

    Its cost is one forward pass per train frame plus one forward and ten assemblies per
    validation frame: each of the two sets is capped at ``max_frames`` (``train.
    paf_prune_frames``; evenly spaced frames; 0 = no cap), so pruning costs at most about
    ``2 * max_frames`` forward passes whatever the project's size."""
    if not ds.multianimal:
        return None
    loader = dlc_loader(ds.config_path)
    if loader.model_cfg["model"]["heads"]["bodypart"]["type"] != "DLCRNetHead":
        return None
    from deeplabcut.pose_estimation_pytorch.apis import prune_paf_graph as dlc_prune

    capped = _CappedLoader(loader, max_frames)
    with _quiet_stdout():
        results = dlc_prune.benchmark_paf_graphs(loader=capped, snapshot_path=snapshot)
    edges = [int(e) for e in results[0]["edges_to_keep"]] if results else None
    log.info("PAF graph: %s edge(s) kept (DLC's benchmark_paf_graphs on %s, %s train / %s "
             "validation frames)", len(edges) if edges is not None else "all", snapshot.name,
             len(capped.used.get("train", [])), len(capped.used.get("test", [])))
    return edges
