"""One learned model of the small demo, trained once per test session and shared (CI time).

``small_demo_model`` (tests/conftest.py) trains cspnext_s for 24 epochs on the small demo
(``DemoParams.small()``) with a fixed split by video (test m2-s3, val m2-s2, the rest train),
seed 42, batch 4, random init, crop = image size, no pixel noise / motion blur: the recipe of
test_refinement_rounds.py's iteration 0 and test_behaviour_model.py's "trained" model, which used
to train it once each. Its root folder holds ``mlflow.db`` + ``mlruns/`` (the private MLflow
store) and ``train/`` (the train workdir: run.json, the working DLC project, the snapshots).

Read-only: a test that trains further, merges labels, moves a registry alias or bumps the DLC
iteration works on :func:`copy_model`, a whole copy whose absolute paths (run.json, config.yaml,
pytorch_config.yaml, the MLflow store's artifact locations) are rewritten to the copy.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EPOCHS = 24
TEST_VIDEO, VAL_VIDEO = "m2-s3", "m2-s2"  # the test video has the unlabeled video's condition
STORE = "mlflow.db"
WORKDIR = "train"


def video_split(labels: pd.DataFrame) -> pd.DataFrame:
    """A fixed split by video (image, video, group, split): ``TEST_VIDEO`` test, ``VAL_VIDEO``
    val, every other labeled video train."""
    img = labels.drop_duplicates("image")[["image", "video"]].sort_values("image")
    split = np.where(img.video == TEST_VIDEO, "test",
                     np.where(img.video == VAL_VIDEO, "val", "train"))
    return img.assign(group=img.video, split=split).reset_index(drop=True)


def recipe(experiment: str = "small-demo-model", registered_model: str = "small-demo-model"):
    """The TrainParams of the shared model (names aside, what each test would train)."""
    from support.train import tiny

    return tiny(epochs=EPOCHS, batch_size=4, save_epochs=EPOCHS, net_type="cspnext_s",
                experiment=experiment, registered_model=registered_model, init="random",
                gaussian_noise=0.0, motion_blur=False)


@dataclass
class SharedModel:
    """The shared small-demo model (read-only)."""

    result: Any  # poseops.train.record.TrainResult
    params: Any  # poseops.config.train.TrainParams (``recipe()``)
    labels: pd.DataFrame  # consensus labels of the small demo
    split: pd.DataFrame  # ``video_split(labels)``
    project: Path  # the small demo's DLC project it was trained from (read-only)
    root: Path  # mlflow.db, mlruns/, train/

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / STORE}"


def train_shared_model(demo_src: tuple[Path, Path], root: Path) -> SharedModel:
    """Train the shared model under ``root`` (one DLC training)."""
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.train.trainer import train_model

    labels = build_consensus(ingest_project(*demo_src))
    split = video_split(labels)
    params = recipe()
    uri = f"sqlite:///{root / STORE}"
    result = train_model(params, labels, split, demo_src[0], root / WORKDIR, tracking_uri=uri)
    return SharedModel(result, params, labels, split, demo_src[0], root)


def copy_model(model: SharedModel, dst: Path) -> tuple[Any, str]:
    """A writable copy of the shared model in ``dst`` (created; train workdir ``dst/train``,
    MLflow store ``dst/mlflow.db`` + ``dst/mlruns``) with every recorded absolute path pointing
    into the copy. Returns (TrainResult read back from the copy's run.json, tracking URI)."""
    from poseops.train.record import load_result

    src, dst = model.root.resolve(), Path(dst).resolve()
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(STORE, f"{STORE}-wal", f"{STORE}-shm"))
    _relocate_text_files(dst, str(src), str(dst))
    _copy_store(src / STORE, dst / STORE, str(src), str(dst))
    return load_result(dst / WORKDIR), f"sqlite:///{dst / STORE}"


def _relocate_text_files(root: Path, old: str, new: str) -> None:
    """``old`` -> ``new`` in every UTF-8 text file naming it (run.json, config.yaml,
    pytorch_config.yaml, MLmodel, the outbox journal, logs). Binary files (snapshots, .h5,
    .parquet, images) hold no absolute path (checked: grep finds none) and are left as copied."""
    needle = old.encode()
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if needle not in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        path.write_text(text.replace(old, new), encoding="utf-8")


def _copy_store(src_db: Path, dst_db: Path, old: str, new: str) -> None:
    """Copy the SQLite store (a consistent snapshot, WAL included) and rewrite ``old`` to
    ``new`` in every text value (artifact locations, model sources, path tags and params)."""
    with sqlite3.connect(src_db) as a, sqlite3.connect(dst_db) as b:
        a.backup(b)
    con = sqlite3.connect(dst_db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            for col in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]:
                con.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) '
                            f'WHERE typeof("{col}") = \'text\' AND instr("{col}", ?) > 0',
                            (old, new, old))
        con.commit()
    finally:
        con.close()
