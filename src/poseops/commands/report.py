"""`poseops report` (moving here from poseops.report.html)."""

from poseops.report.html import register

__all__ = ["register"]
