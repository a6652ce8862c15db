"""`poseops split` (moving here from poseops.data.split)."""

from poseops.data.split import register

__all__ = ["register"]
