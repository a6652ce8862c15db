"""`poseops sweep` (moving here from poseops.sweep.study)."""

from poseops.sweep.study import register

__all__ = ["register"]
