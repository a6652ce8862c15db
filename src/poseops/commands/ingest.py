"""`poseops ingest` (moving here from poseops.data.ingest)."""

from poseops.data.ingest import register

__all__ = ["register"]
