"""params.yaml ``validate_report``: the checks on the evaluation metrics (``poseops validate-report``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DEFAULT_HEADLINE = ["rmse_px", "mean_px", "median_px", "p95_px", "mean_px_pcutoff",
                    "median_likelihood"]


@dataclass
class ValidateReportParams:
    """params.yaml `validate_report:` section."""

    suite: str = "expectations/report.json"
    out: str = "reports/validation/report.json"
    max_test_rmse_px: float = 10.0
    max_gap_pct: float = 15.0
    min_median_likelihood: float = 0.5
    headline: list[str] = field(default_factory=lambda: list(DEFAULT_HEADLINE))
    presence_split: str | None = None  # None: presence counted over all splits; or e.g. "test"
    fail_on_error: bool = False  # demo: warn; true: stop the pipeline
