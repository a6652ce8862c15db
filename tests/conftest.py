"""Shared fixtures. Tests use ../shared/data (beside the repo) through a path relative to the repo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
OPENFIELD = SHARED / "data" / "dlc-openfield"

# Nothing may call home, in tests too.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["DVC_NO_ANALYTICS"] = "1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def openfield(tmp_path: Path) -> Path:
    """A writable copy of DeepLabCut's openfield example project (116 frames, scorer Pranav),
    with config.yaml's placeholders filled in as DLC's own demo code does."""
    if not OPENFIELD.exists():
        pytest.fail(f"shared example project missing: {OPENFIELD}")
    dst = tmp_path / "openfield-Pranav-2018-10-30"
    shutil.copytree(OPENFIELD, dst, ignore=shutil.ignore_patterns("videos"))
    (dst / "videos").mkdir()
    import yaml

    cfg_path = dst / "config.yaml"
    text = cfg_path.read_text()
    cfg = yaml.safe_load(text)
    cfg["project_path"] = str(dst)
    cfg["video_sets"] = {str(dst / "videos" / "m4s1.mp4"): {"crop": "0, 640, 0, 480"}}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


@pytest.fixture
def openfield_raw(tmp_path: Path) -> Path:
    """The openfield project copied exactly as shipped (placeholders in config.yaml kept)."""
    dst = tmp_path / "openfield-raw"
    shutil.copytree(OPENFIELD, dst)
    return dst


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite tracking store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
