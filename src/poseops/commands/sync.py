"""`poseops sync` (moving here from poseops.tracking.runs)."""

from poseops.tracking.runs import register

__all__ = ["register"]
