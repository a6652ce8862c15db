"""`poseops merge` (moving here from poseops.refine.merge)."""

from poseops.refine.merge import register

__all__ = ["register"]
