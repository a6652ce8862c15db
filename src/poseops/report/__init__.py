"""The iteration report: one self-contained HTML page (:mod:`~poseops.report.html`)."""
