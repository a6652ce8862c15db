"""`poseops consensus` (moving here from poseops.data.consensus)."""

from poseops.data.consensus import register

__all__ = ["register"]
