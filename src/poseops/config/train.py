"""params.yaml ``train:``: the settings of one DeepLabCut training (``poseops train``)."""

from __future__ import annotations

import logging
import os
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

    @property
    def key_metric_asc(self) -> bool:
        """True when larger is better (mAP/mAR); errors and losses are smaller-is-better."""
        return any(t in self.key_metric.lower() for t in ("map", "mar"))


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
