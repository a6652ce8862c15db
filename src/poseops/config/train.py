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
    paf_prune_frames: int = 200  # PAF pruning: at most N train + N val frames (0 = all)
    key_metric: str = "test.rmse"  # DLC's name: "test" = the frames DLC evaluates = our VAL split
    snapshot: str = "best"  # one of SNAPSHOTS (checked by validate): wrapped as the MLflow model
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
        if self.snapshot not in SNAPSHOTS:
            raise PoseopsError(f"{where}: snapshot must be best or last, got {self.snapshot!r}")
        if len(self.scaling) != 2:
            raise PoseopsError(f"{where}: scaling must be [min, max], got {self.scaling}")
        _check_numbers(self, where)
        _check_choices(self, where)

    @property
    def key_metric_asc(self) -> bool:
        """True when larger is better (mAP/mAR); errors and losses are smaller-is-better."""
        return any(t in self.key_metric.lower() for t in ("map", "mar"))


KEY_METRICS: tuple[str, ...] = ("test.rmse", "test.rmse_pcutoff", "test.mAP", "test.mAR")
"""The metrics DLC's pose runner reports each evaluation (``metrics/test.<name>`` from
``deeplabcut.core.metrics.compute_metrics``): the only names its best-snapshot choice can use."""

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
    for key in ("affine_p", "hflip"):
        value = getattr(p, key)
        if not 0 <= value <= 1:
            raise PoseopsError(f"{where} {key}: must be a probability in [0, 1], got {value}")
    for key in ("gaussian_noise", "translation", "tracking_timeout_s"):
        if getattr(p, key) < 0:
            raise PoseopsError(f"{where} {key}: must be >= 0, got {getattr(p, key)}")
    lo, hi = p.scaling
    if not 0 < lo <= hi:
        raise PoseopsError(f"{where} scaling: must be [min, max] with 0 < min <= max, got {p.scaling}")


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
