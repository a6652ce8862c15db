"""`poseops train` (moving here from poseops.train.trainer)."""

from poseops.train.trainer import register

__all__ = ["register"]
