"""Small params.yaml files for the CLI stage tests."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def validate_params_file(tmp_path: Path, project: Path, labels_path: Path, **validate) -> Path:
    """``tmp_path/params.yaml`` for the validate stage: the repository's dataset suite run on
    ``labels_path``, outputs under ``tmp_path/out``; ``validate`` overrides its keys."""
    params = {
        "project": {"path": str(project), "format": "dlc", "metadata": "none.csv"},
        "validate": {
            "suite": str(REPO / "expectations" / "dataset.json"),
            "input": str(labels_path),
            "out": str(tmp_path / "out" / "dataset.json"),
            "docs": str(tmp_path / "out" / "dataset-docs"),
            **validate,
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
