"""`poseops validate-report` (moving here from poseops.quality.report_checks)."""

from poseops.quality.report_checks import register

__all__ = ["register"]
