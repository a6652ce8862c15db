"""The command layer: one module per verb (= one DVC stage or side-loop step).

The only layer that reads params.yaml and argv. Each module defines ``register(subparsers)``;
:data:`COMMANDS` is the explicit table the CLI builds its parser from (verb -> module).
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "demo": "demo",
    "init": "init",
    "ingest": "ingest",
    "consensus": "consensus",
    "validate": "validate",
    "composition": "composition",
    "split": "split",
    "train": "train",
    "evaluate": "evaluate",
    "validate-report": "validate_report",
    "report": "report",
    "sweep": "sweep",
    "sync": "sync",
    "extract": "extract",
    "analyze": "analyze",
    "outliers": "outliers",
    "hardest": "hardest",
    "merge": "merge",
    "compare": "compare",
    "ablation": "ablation",
    "behaviour": "behaviour",
}
