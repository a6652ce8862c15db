"""Shared fixtures. Tests use ../shared/data (beside the repo) through a path relative to the repo.

Helpers shared by several test modules live in the package ``tests/support`` (importable as
``support``: pytest's ``prepend`` import mode puts this folder on ``sys.path``); test modules never
import each other.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _reset_mlflow_globals() -> None:
    """Forget a tracking URI / active experiment an earlier test set in-process (MLflow keeps them
    in module globals that outlive the environment variables)."""
    import mlflow
    from mlflow.tracking import _tracking_service, fluent

    while mlflow.active_run():
        mlflow.end_run()
    _tracking_service.utils._tracking_uri = None
    fluent._active_experiment_id = None


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private SQLite tracking store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # runs started without an experiment go to this one, whose artifacts stay in tmp_path
    # (MLflow's default experiment would put them in ./mlruns of the current directory)
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).create_experiment("tests", artifact_location=(tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    _reset_mlflow_globals()
    yield uri
    _reset_mlflow_globals()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh database on a real PostgreSQL server started for this test
    (``support.pg``; fails, never skips, when the server binaries are missing)."""
    from support.pg import postgres_server

    with postgres_server() as url:
        yield url


# --- demo project (helper A: poseops.demo.project) -------------------------------------------------
@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the default demo (params.yaml `demo` defaults), generated once per
    test session: ``raw/demo`` (the DLC project) and ``metadata/videos.csv``. Read-only by
    convention: use ``demo_copy`` to write."""
    from poseops.config.demo import DemoParams
    from poseops.demo.project import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root / "raw" / "demo", DemoParams(), metadata=root / "metadata" / "videos.csv")
    return root


@pytest.fixture(scope="session")
def demo_project(demo_root: Path) -> Path:
    """The default demo DLC project (config.yaml, videos/, labeled-data/, ground_truth.csv)."""
    return demo_root / "raw" / "demo"


@pytest.fixture(scope="session")
def demo_metadata(demo_root: Path) -> Path:
    """The demo's per-video metadata CSV (video, animal, session, condition, dose, camera)."""
    return demo_root / "metadata" / "videos.csv"


@pytest.fixture
def demo_copy(demo_project: Path, tmp_path: Path) -> Path:
    """A writable copy of the demo project (``tmp_path/demo``, metadata at
    ``tmp_path/metadata/videos.csv``); config.yaml's project_path/video_sets point at the copy."""
    import yaml

    dst = tmp_path / "demo"
    shutil.copytree(demo_project, dst)
    (tmp_path / "metadata").mkdir(exist_ok=True)
    shutil.copy2(demo_project.parent.parent / "metadata" / "videos.csv", tmp_path / "metadata")
    cfg_path = dst / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["project_path"] = str(dst)
    cfg["video_sets"] = {
        str(dst / "videos" / Path(k).name): v for k, v in (cfg.get("video_sets") or {}).items()
    }
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


@pytest.fixture(scope="session")
def small_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DemoParams.small()`` (2 animals x 3 sessions, 30-frame videos, 6 labeled frames each),
    once per session: ``raw/demo`` and ``metadata/videos.csv`` inside."""
    from poseops.config.demo import DemoParams
    from poseops.demo.project import generate_demo

    root = tmp_path_factory.mktemp("small_demo")
    generate_demo(root / "raw" / "demo", DemoParams.small(), metadata=root / "metadata" / "videos.csv")
    return root


@pytest.fixture(scope="session")
def demo_src(small_demo_root: Path) -> tuple[Path, Path]:
    """The small demo (read-only): its project folder and metadata CSV."""
    return small_demo_root / "raw" / "demo", small_demo_root / "metadata" / "videos.csv"


# --- trained demo model (helper D: poseops.train.trainer) ------------------------------------------
@dataclass
class TrainedDemo:
    """One real DLC training of the default demo, shared by the tests of later stages."""

    result: Any  # poseops.train.record.TrainResult (run_id, snapshots, config_path, images per split...)
    params: Any  # poseops.config.train.TrainParams used
    labels: Any  # consensus table (pd.DataFrame) the model was trained on
    split: Any  # split table (pd.DataFrame: image, video, group, split, ...)
    project: Path  # the source demo DLC project (read-only)
    workdir: Path  # train workdir (working DLC project under workdir/project, run.json)
    tracking_uri: str  # private MLflow store (sqlite) holding the run and registered model


@pytest.fixture(scope="session")
def trained_demo(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedDemo:
    """Train cspnext_s on the default demo once per session (2 epochs, crop = image size, random
    init, CPU), tracked in a private SQLite MLflow store. Treat as read-only; pass
    ``tracking_uri`` explicitly (MlflowClient(tracking_uri=...)) or monkeypatch the env var."""
    from poseops.config.data import SplitParams
    from poseops.config.train import TrainParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.train.trainer import train_model

    root = tmp_path_factory.mktemp("trained_demo")
    project = demo_root / "raw" / "demo"
    labels = build_consensus(ingest_project(project, demo_root / "metadata" / "videos.csv"))
    split = make_split(labels, SplitParams())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = TrainParams(
        net_type="cspnext_s", epochs=2, batch_size=8, pretrained=False, device="cpu",
        save_epochs=1, experiment="poseops-tests", registered_model="poseops-demo",
    )
    result = train_model(params, labels, split, project, root / "train", tracking_uri=uri)
    return TrainedDemo(result, params, labels, split, project, root / "train", uri)


# --- a learned small-demo model, shared (tests/support/shared_model.py) ----------------------------
@pytest.fixture(scope="session")
def small_demo_model(demo_src: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """cspnext_s trained once per session for 24 epochs on the small demo (split by video: test
    m2-s3, val m2-s2; seed 42, batch 4, random init): a model that has learned (test error a few
    px). Read-only: use ``support.shared_model.copy_model`` to train further or move aliases."""
    from support.shared_model import train_shared_model

    return train_shared_model(demo_src, tmp_path_factory.mktemp("small_demo_model"))
