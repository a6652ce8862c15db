"""`poseops evaluate` (moving here from poseops.evaluate.evaluation)."""

from poseops.evaluate.evaluation import register

__all__ = ["register"]
