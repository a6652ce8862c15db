"""`poseops compare` (moving here from poseops.refine.compare)."""

from poseops.refine.compare import register

__all__ = ["register"]
