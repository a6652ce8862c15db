"""`poseops demo` (moving here from poseops.demo.project)."""

from poseops.demo.project import register

__all__ = ["register"]
