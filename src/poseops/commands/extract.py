"""`poseops extract` (moving here from poseops.refine.frames)."""

from poseops.refine.frames import register

__all__ = ["register"]
