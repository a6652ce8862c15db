"""Helpers for the distributed sweep tests (several workers, --gpus, --slurm): a workspace with
params.yaml and tiny train inputs, the MLflow experiment made up front, Optuna look-ups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from poseops.core import schema as S


def make_workspace(root: Path, sweep: dict) -> Path:
    """A working folder with params.yaml and tiny train inputs (the double does not read them)."""
    project = root / "project"
    project.mkdir(parents=True)
    (project / "config.yaml").write_text("Task: t\nscorer: s\n")
    labels = pd.DataFrame(
        {S.IMAGE: ["labeled-data/v/img0.png"], S.VIDEO: ["v"], S.BODYPART: ["snout"]}
    )
    labels.to_parquet(root / "consensus.parquet", index=False)
    pd.DataFrame(
        {S.IMAGE: ["labeled-data/v/img0.png"], S.VIDEO: ["v"], S.GROUP: ["v"], S.SPLIT: ["train"]}
    ).to_csv(root / "split.csv", index=False)
    params = {
        "project": {"path": str(project)},
        "consensus": {"out": str(root / "consensus.parquet")},
        "split": {"out": str(root / "split.csv")},
        "train": {},
        "sweep": {"out": str(root / "sweep"), "experiment": "sweep-test", **sweep},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def init_tracking() -> None:
    """Create the MLflow store and experiment first, as a team's tracking server already is
    (two workers creating an empty SQLite store at once would race on its tables)."""
    from mlflow.tracking import MlflowClient

    MlflowClient().create_experiment("sweep-test")


def load_study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def running_trials(url: str, name: str) -> dict[int, tuple[int, int]]:
    """RUNNING trials of the study: number -> (worker pid, epochs trained so far)."""
    from optuna.trial import TrialState

    try:
        study = load_study(url, name)
    except Exception:  # noqa: BLE001 - tables or study not created yet
        return {}
    out = {}
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", ":0")
        out[t.number] = (int(worker.rsplit(":", 1)[1]), int(t.user_attrs.get("epochs_trained", 0)))
    return out
