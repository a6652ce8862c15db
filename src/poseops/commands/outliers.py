"""`poseops outliers` (moving here from poseops.refine.outliers)."""

from poseops.refine.outliers import register

__all__ = ["register"]
