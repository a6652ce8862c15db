"""The compute device for training and inference (torch's name: cpu, cuda, cuda:N, mps)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other name is returned as is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
