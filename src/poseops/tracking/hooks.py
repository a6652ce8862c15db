"""DeepLabCut's logger hook: a logger class registered in DLC's LOGGER registry that forwards
every ``log(metrics, step=epoch)`` call of DLC's training loop to a poseops :class:`EpochSink`
(the training session: MLflow outbox, progress, callbacks)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LOGGER_TYPE = "PoseopsMLflowLogger"


class EpochSink:
    """What the DLC logger talks to: one per training session (set by poseops.train)."""

    def on_log(self, metrics: dict[str, float], step: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


_LOGGER_CLASS: type | None = None


def register_dlc_logger() -> str:
    """Register PoseopsMLflowLogger in DLC's LOGGER registry (once); return its type name."""
    global _LOGGER_CLASS
    if _LOGGER_CLASS is not None:
        return LOGGER_TYPE
    from deeplabcut.pose_estimation_pytorch.runners.logger import LOGGER, BaseLogger

    class PoseopsMLflowLogger(BaseLogger):
        """Receives DLC's `log(metrics, step=epoch)` calls (train losses, then validation losses
        and metrics) and forwards them to the session (MLflow outbox, progress, callback)."""

        def __init__(self, sink: EpochSink, model: Any = None, train_folder: Any = None) -> None:
            super().__init__()
            self.sink = sink

        def log_config(self, config: dict | None = None) -> None:
            pass  # poseops logs the resolved config itself (params + pytorch_config.yaml)

        def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
            self.sink.on_log(dict(metrics), int(step or 0))

        def save(self) -> None:
            pass

    if LOGGER_TYPE not in LOGGER.module_dict:
        LOGGER.register_module(PoseopsMLflowLogger)
    _LOGGER_CLASS = LOGGER.module_dict[LOGGER_TYPE]
    return LOGGER_TYPE
