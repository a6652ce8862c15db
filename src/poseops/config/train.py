"""params.yaml ``train:``: the settings of one DeepLabCut training (``poseops train``)."""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

Snapshot = Literal["best", "last"]
"""The snapshot wrapped as the MLflow model: DLC's best (key metric) or the last one."""

SNAPSHOTS: tuple[str, ...] = get_args(Snapshot)

CoveringFill = Literal["black", "floor"]
"""What an occlusion patch is filled with: black (DLC's CoarseDropout) or the image's median
colour (the floor of an open field: bedding or clutter rather than a hole)."""

CoveringPlace = Literal["image", "keypoints"]
"""Where patches go: anywhere in the image (DLC) or each centred on a labeled keypoint."""

CoveringLabels = Literal["drop", "keep"]
"""A keypoint under a patch: dropped from the loss (DLC) or kept labeled (a labeler still marks a
paw under bedding)."""


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
    # occlusion / photometric augmentation (issue 24): DLC's covering (CoarseDropout patches; its
    # probability, count and size honoured by poseops.train.augment), grayscale, elastic_transform
    covering: float = 0.0  # probability of occlusion patches on a training image (0 = off)
    covering_holes: int = 10  # patches per covered image (DLC's fixed value: 10)
    covering_size: list[float] = field(default_factory=lambda: [0.01, 0.05])  # patch side range,
    # a fraction of the image side (DLC's fixed values)
    covering_fill: CoveringFill = "black"  # black (DLC) | floor (the image's median colour)
    covering_place: CoveringPlace = "image"  # image (anywhere, DLC) | keypoints (centred on a labeled one)
    covering_labels: CoveringLabels = "drop"  # keypoints under a patch: drop (DLC) | keep labeled
    grayscale: bool = False  # DLC's Grayscale (partial desaturation, alpha 0.5-1)
    elastic: bool = False  # DLC's elastic_transform (sigma 5, p 0.5)
    # lighting (not in DLC 3's builder; added by poseops.train.augment, keypoints untouched)
    brightness: float = 0.0  # +/- brightness change, a fraction of the pixel range (0 = off)
    contrast: float = 0.0  # +/- contrast change (0 = off)
    gamma: float = 0.0  # gamma drawn in [1 - gamma, 1 + gamma] (0 = off)
    lighting_p: float = 0.5  # probability of each lighting transform
    crop_width: int | None = 160  # training crop; None = the (largest) image size
    crop_height: int | None = 120
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    pretrained: bool = False  # True: ImageNet backbone from the hub (needs internet)
    # warm start (issue 22): imagenet | random | previous | <path to a DLC snapshot .pt>;
    # None: `pretrained` decides (true = imagenet, false = random)
    init: str | None = None
    freeze_backbone_epochs: int = 0  # backbone frozen (no gradient, BN stats fixed) for N epochs
    finetune_lr: float | None = None  # lr when init is previous / a snapshot; None: lr
    early_stopping_patience: int | None = None  # stop after N epochs without a better key metric
    early_stopping_min_delta: float = 0.0  # an improvement must beat the best by more than this
    lr_on_plateau: dict[str, float] | None = None  # {factor, patience, min_lr}: torch ReduceLROnPlateau
    save_epochs: int = 5
    max_snapshots: int = 5
    eval_interval: int = 1  # validation every N epochs (model selection needs it)
    paf_prune_frames: int = 200  # PAF pruning: at most N train + N val frames (0 = all)
    key_metric: str = "test.rmse"  # DLC's name: "test" = the frames DLC evaluates = our VAL split
    snapshot: str = "best"  # one of SNAPSHOTS (checked by validate): wrapped as the MLflow model
    workdir: str = "data/train"
    metrics: str = "reports/train.json"
    experiment: str = "poseops"
    run_name: str | None = None  # MLflow run name; None: <project>-it<iteration>-<net_type>
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
        if self.snapshot not in SNAPSHOTS:
            raise PoseopsError(f"{where}: snapshot must be best or last, got {self.snapshot!r}")
        if len(self.scaling) != 2:
            raise PoseopsError(f"{where}: scaling must be [min, max], got {self.scaling}")
        _check_numbers(self, where)
        _check_choices(self, where)
        _check_warm_start(self, where)

    @property
    def init_mode(self) -> str:
        """imagenet | random | previous | snapshot (``init`` is a path): where the weights come from."""
        init = (self.init or "").strip()
        if not init:
            return "imagenet" if self.pretrained else "random"
        return init if init in INIT_CHOICES else "snapshot"

    @property
    def warm_start(self) -> bool:
        """True when training starts from a trained pose model (previous / a snapshot)."""
        return self.init_mode in ("previous", "snapshot")

    @property
    def effective_lr(self) -> float:
        """The optimizer's lr: ``finetune_lr`` for a warm start (when set), else ``lr``."""
        return self.finetune_lr if self.warm_start and self.finetune_lr is not None else self.lr

    @property
    def key_metric_asc(self) -> bool:
        """True when larger is better (mAP/mAR); errors and losses are smaller-is-better."""
        return any(t in self.key_metric.lower() for t in ("map", "mar"))


KEY_METRICS: tuple[str, ...] = ("test.rmse", "test.rmse_pcutoff", "test.mAP", "test.mAR")
"""The metrics DLC's pose runner reports each evaluation (``metrics/test.<name>`` from
``deeplabcut.core.metrics.compute_metrics``): the only names its best-snapshot choice can use."""

INIT_CHOICES: tuple[str, ...] = ("imagenet", "random", "previous")
"""``train.init`` words; anything else must be the path of a DLC snapshot (.pt)."""
PLATEAU_KEYS: dict[str, float] = {"factor": 0.5, "patience": 5, "min_lr": 0.0}
"""``train.lr_on_plateau`` keys and their defaults (torch's ReduceLROnPlateau arguments)."""

SCHEDULERS_WITHOUT_PARAMS = ("default", "none")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def _check_numbers(p: TrainParams, where: str) -> None:
    """Ranges of the numeric params (a one-line error naming the key)."""
    positive = {"lr": p.lr, "save_epochs": p.save_epochs, "max_snapshots": p.max_snapshots,
                "eval_interval": p.eval_interval, "system_metrics_interval_s": p.system_metrics_interval_s,
                "resume_interval_s": p.resume_interval_s}
    for key, value in positive.items():
        if not value > 0:
            raise PoseopsError(f"{where} {key}: must be > 0, got {value}")
    for key in ("crop_width", "crop_height"):
        value = getattr(p, key)
        if value is not None and value < 1:
            raise PoseopsError(f"{where} {key}: must be a positive number of pixels or null, got {value}")
    for key in ("affine_p", "hflip", "covering", "lighting_p", "brightness", "contrast"):
        value = getattr(p, key)
        if not 0 <= value <= 1:
            raise PoseopsError(f"{where} {key}: must be a probability in [0, 1], got {value}")
    for key in ("gaussian_noise", "translation", "tracking_timeout_s"):
        if getattr(p, key) < 0:
            raise PoseopsError(f"{where} {key}: must be >= 0, got {getattr(p, key)}")
    _check_occlusion(p, where)
    lo, hi = p.scaling
    if not 0 < lo <= hi:
        raise PoseopsError(f"{where} scaling: must be [min, max] with 0 < min <= max, got {p.scaling}")


def _check_occlusion(p: TrainParams, where: str) -> None:
    """covering_holes, covering_size and gamma ranges (issue 24's augmentation settings)."""
    if p.covering_holes < 1:
        raise PoseopsError(f"{where} covering_holes: must be >= 1, got {p.covering_holes}")
    # < 1: albumentations' CoarseDropout (DLC's covering) refuses a whole-side fraction
    if len(p.covering_size) != 2 or not 0 < p.covering_size[0] <= p.covering_size[1] < 1:
        raise PoseopsError(f"{where} covering_size: must be [min, max] fractions of the image side "
                           f"with 0 < min <= max < 1, got {p.covering_size}")
    for key, tp in (("covering_fill", CoveringFill), ("covering_place", CoveringPlace),
                    ("covering_labels", CoveringLabels)):
        if getattr(p, key) not in get_args(tp):
            raise PoseopsError(f"{where} {key}: must be one of {', '.join(get_args(tp))}, "
                               f"got {getattr(p, key)!r}")
    if not 0 <= p.gamma < 1:
        raise PoseopsError(f"{where} gamma: must be in [0, 1) (gamma drawn in [1 - g, 1 + g]), "
                           f"got {p.gamma}")


def _check_warm_start(p: TrainParams, where: str) -> None:
    """init (a word or a .pt path, never contradicting ``pretrained``), freeze_backbone_epochs,
    finetune_lr, early stopping and lr_on_plateau (which replaces the epoch scheduler)."""
    init = (p.init or "").strip()
    if init and init not in INIT_CHOICES and not init.endswith(".pt"):
        near = difflib.get_close_matches(init, list(INIT_CHOICES), n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise PoseopsError(f"{where} init: expected imagenet, random, previous or the path of a "
                           f"DeepLabCut snapshot (.pt), got {init!r}{hint}")
    if p.pretrained and init and init != "imagenet":
        raise PoseopsError(f"{where} init: {init!r} contradicts pretrained: true (= init: imagenet); "
                           "set pretrained: false or drop init")
    if p.freeze_backbone_epochs < 0:
        raise PoseopsError(f"{where} freeze_backbone_epochs: must be >= 0, got {p.freeze_backbone_epochs}")
    if p.finetune_lr is not None and not p.finetune_lr > 0:
        raise PoseopsError(f"{where} finetune_lr: must be > 0 or null, got {p.finetune_lr}")
    if p.early_stopping_patience is not None and p.early_stopping_patience < 1:
        raise PoseopsError(f"{where} early_stopping_patience: must be >= 1 or null (off), "
                           f"got {p.early_stopping_patience}")
    if p.early_stopping_min_delta < 0:
        raise PoseopsError(f"{where} early_stopping_min_delta: must be >= 0, got {p.early_stopping_min_delta}")
    if p.lr_on_plateau is not None:
        plateau_settings(p, where)


def plateau_settings(p: TrainParams, where: str = "params.yaml [train]") -> dict[str, float]:
    """``lr_on_plateau`` with its defaults filled in, checked (None when off)."""
    if p.lr_on_plateau is None:
        return {}
    unknown = sorted(set(p.lr_on_plateau) - set(PLATEAU_KEYS))
    if unknown:
        raise _choice_error(where, "lr_on_plateau key", unknown[0], list(PLATEAU_KEYS))
    out = {**PLATEAU_KEYS, **p.lr_on_plateau}
    if not 0 < out["factor"] < 1:
        raise PoseopsError(f"{where} lr_on_plateau.factor: must be in (0, 1), got {out['factor']}")
    if out["patience"] < 0 or float(out["patience"]) != int(out["patience"]):
        raise PoseopsError(f"{where} lr_on_plateau.patience: must be an integer >= 0, got {out['patience']}")
    if out["min_lr"] < 0:
        raise PoseopsError(f"{where} lr_on_plateau.min_lr: must be >= 0, got {out['min_lr']}")
    if (p.scheduler or "none").strip().lower() != "none":
        raise PoseopsError(f"{where} lr_on_plateau: replaces the epoch scheduler, but scheduler is "
                           f"{p.scheduler!r}; set scheduler: none")
    return out


def _choice_error(where: str, key: str, value: Any, choices: list[str]) -> PoseopsError:
    near = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else f" (one of: {', '.join(choices)})"
    return PoseopsError(f"{where} {key}: unknown {key} {value!r}{hint}")


def _check_choices(p: TrainParams, where: str) -> None:
    """net_type, optimizer, scheduler (+ scheduler_params), device and key_metric against
    DeepLabCut's own registries (its model configs, torch.optim, torch.optim.lr_scheduler)."""
    if not _DEVICE.match(p.device.strip()):
        raise PoseopsError(f"{where} device: expected auto, cpu, cuda, cuda:N or mps, got {p.device!r}")
    if p.key_metric not in KEY_METRICS:
        raise _choice_error(where, "key_metric", p.key_metric, list(KEY_METRICS))
    nets = dlc_net_types()
    if p.net_type not in nets:
        raise _choice_error(where, "net_type", p.net_type, nets)
    optimizers = torch_classes("torch.optim", "Optimizer")
    if p.optimizer not in optimizers:
        raise _choice_error(where, "optimizer", p.optimizer, optimizers)
    sched = (p.scheduler or "none").strip()
    if sched.lower() in SCHEDULERS_WITHOUT_PARAMS:
        return
    schedulers = ["LRListScheduler", *torch_classes("torch.optim.lr_scheduler", "LRScheduler")]
    if sched not in schedulers:
        raise _choice_error(where, "scheduler", sched, schedulers)
    if p.scheduler_params is None:
        raise PoseopsError(f"{where} scheduler_params: scheduler {sched!r} needs scheduler_params "
                           "(its keyword arguments, e.g. {step_size: 30} for StepLR)")


def dlc_net_types() -> list[str]:
    """Every net type DeepLabCut 3 can build (its model config registry)."""
    from deeplabcut.pose_estimation_pytorch.config.utils import available_models

    return sorted(available_models())


def torch_classes(module: str, base: str) -> list[str]:
    """The public subclasses of ``module.base`` in ``module`` (torch.optim optimizers,
    torch.optim.lr_scheduler schedulers): what DLC's builders look up by name."""
    import importlib

    mod = importlib.import_module(module)
    parent = getattr(mod, base)
    return sorted(n for n, c in vars(mod).items()
                  if isinstance(c, type) and issubclass(c, parent) and c is not parent
                  and not n.startswith("_"))


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
