"""`poseops composition` (moving here from poseops.data.composition)."""

from poseops.data.composition import register

__all__ = ["register"]
