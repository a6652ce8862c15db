"""`poseops validate` (moving here from poseops.quality.dataset)."""

from poseops.quality.dataset import register

__all__ = ["register"]
