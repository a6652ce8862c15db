"""Steering DLC's training loop from the session hook: a frozen backbone for the first epochs
(``train.freeze_backbone_epochs``), early stopping on the key metric
(``train.early_stopping_patience`` / ``early_stopping_min_delta``) and reduce-on-plateau
(``train.lr_on_plateau``, torch's ReduceLROnPlateau stepped with the validation metric).

DLC's runner steps its epoch scheduler without a metric (``scheduler.step()``), so a
ReduceLROnPlateau cannot be configured through pytorch_config.yaml; it is stepped here after
each validation instead. Early stopping ends DLC's loop by raising :class:`EarlyStopped` from the
snapshot hook, after the stop epoch's snapshot and metrics are saved.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd

from poseops.config.train import TrainParams, plateau_settings

log = logging.getLogger(__name__)


class EarlyStopped(Exception):  # noqa: N818 - a stop, not an error
    """DLC's loop stopped early: the key metric did not improve for ``patience`` epochs."""

    def __init__(self, epoch: int, best_epoch: int, best: float) -> None:
        super().__init__(f"early stop at epoch {epoch} (best {best:.4g} at epoch {best_epoch})")
        self.epoch, self.best_epoch, self.best = epoch, best_epoch, best


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _keep_norm_stats(backbone: Any) -> None:
    """While frozen, the backbone's batch-norm layers stay in eval mode (running statistics
    unchanged) whenever DLC's runner calls ``model.train()``. DLC's own ``freeze_bn_stats``
    cannot do this for every net: it checks ``nn.BatchNorm2d`` and CSPNeXt uses SyncBatchNorm."""
    from torch.nn.modules.batchnorm import _BatchNorm

    cls_train = type(backbone).train

    def train(mode: bool = True) -> Any:
        out = cls_train(backbone, mode)
        for m in backbone.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        return out

    backbone.__dict__["train"] = train  # an instance attribute: found before the class's


def _core_model(runner: Any) -> Any:
    return getattr(runner.model, "module", runner.model)  # DataParallel on several GPUs


class Steering:
    """What poseops changes in DLC's loop, per epoch (see the module doc)."""

    def __init__(self, params: TrainParams, stats: pd.DataFrame | None = None) -> None:
        self.freeze_epochs = params.freeze_backbone_epochs
        self.patience = params.early_stopping_patience
        self.min_delta = params.early_stopping_min_delta
        self.key = f"metrics/{params.key_metric}"  # DLC's name in the epoch's metrics
        self.asc = params.key_metric_asc
        self.plateau = plateau_settings(params)
        self.best: float | None = None
        self.best_epoch = 0
        self.scheduler: Any = None
        self._saved_flags: dict[str, bool] | None = None
        for _, row in (stats if stats is not None else pd.DataFrame()).iterrows():  # a resume
            self.improved(int(row["step"]), row.get(self.key))

    # ---------------------------------------------------------------- frozen backbone
    def before_train_epoch(self, runner: Any, epoch: int) -> None:
        """Freeze the backbone for epochs 1..N (no gradients: the optimizer skips it; BN
        statistics fixed), unfreeze it (as it was) from epoch N+1."""
        backbone = _core_model(runner).backbone
        frozen = epoch <= self.freeze_epochs
        if frozen and self._saved_flags is None:
            self._saved_flags = {n: p.requires_grad for n, p in backbone.named_parameters()}
            for p in backbone.parameters():
                p.requires_grad = False
            _keep_norm_stats(backbone)
            log.info("epoch %d: backbone frozen (until epoch %d)", epoch, self.freeze_epochs)
        elif not frozen and self._saved_flags is not None:
            for n, p in backbone.named_parameters():
                p.requires_grad = self._saved_flags.get(n, True)
            backbone.__dict__.pop("train", None)  # the class's train() again
            self._saved_flags = None
            log.info("epoch %d: backbone unfrozen", epoch)

    # ---------------------------------------------------------------- key metric
    def improved(self, epoch: int, value: Any) -> bool:
        """Record the epoch's key metric; True when it beats the best by more than min_delta."""
        if not _finite(value):
            return False
        v = float(value)
        better = self.best is None or (v > self.best + self.min_delta if self.asc
                                       else v < self.best - self.min_delta)
        if better:
            self.best, self.best_epoch = v, epoch
        return better

    def after_epoch(self, runner: Any, epoch: int, metrics: dict[str, Any]) -> EarlyStopped | None:
        """After the epoch's validation (``metrics``: DLC's, e.g. metrics/test.rmse): reduce the lr on a
        plateau; the :class:`EarlyStopped` to raise when patience ran out (else None)."""
        if self.key not in metrics:
            return None  # no validation this epoch (eval_interval)
        value = metrics[self.key]
        self.improved(epoch, value)
        if self.plateau and _finite(value):  # an epoch without a value (NaN) is not a plateau
            self._step_plateau(runner, value)
        if self.patience is not None and self.best is not None and epoch - self.best_epoch >= self.patience:
            log.info("early stopping at epoch %d: %s has not improved by more than %g for %d epoch(s) "
                     "(best %.4g at epoch %d)", epoch, self.key, self.min_delta, epoch - self.best_epoch,
                     self.best, self.best_epoch)
            return EarlyStopped(epoch, self.best_epoch, self.best)
        return None

    def _step_plateau(self, runner: Any, value: float) -> None:
        import torch

        if self.scheduler is None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                runner.optimizer, mode="max" if self.asc else "min", factor=self.plateau["factor"],
                patience=int(self.plateau["patience"]), min_lr=self.plateau["min_lr"],
                threshold=self.min_delta, threshold_mode="abs")
        before = runner.optimizer.param_groups[0]["lr"]
        self.scheduler.step(float(value))
        after = runner.optimizer.param_groups[0]["lr"]
        if after != before:
            log.info("lr on plateau: %g -> %g", before, after)
