"""`poseops analyze` (moving here from poseops.refine.analyze)."""

from poseops.refine.analyze import register

__all__ = ["register"]
