"""A DVC experiment grid over `train.lr` on the tiny demo, as docs/training-and-tracking.md tells a
user to run it: `dvc exp run --queue` twice, `dvc exp run --run-all -j 1`, then `dvc exp show`
lists both experiments with their metrics, and each MLflow run (in the repository's own store,
not in DVC's temporary workspace) carries its DVC experiment's name.

Slow (two real DeepLabCut trainings, 1 epoch each, on the small demo at 160x120, CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.e2e import clone_repo, sh, user_env

from poseops.config.loader import update_params

GRID = {"lr-low": 5e-4, "lr-high": 2e-3}


def _experiments(node: Any) -> Iterator[dict]:
    """Every entry of `dvc exp show --json` that names an experiment and holds its data."""
    if isinstance(node, dict):
        if node.get("name") in GRID and isinstance(node.get("data"), dict):
            yield node
        for v in node.values():
            yield from _experiments(v)
    elif isinstance(node, list):
        for v in node:
            yield from _experiments(v)


@pytest.mark.slow
def test_a_queued_lr_grid_is_listed_by_dvc_and_tagged_in_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = user_env()  # no MLFLOW_TRACKING_URI: the repository's default store
    repo = clone_repo(tmp_path, env)
    update_params({"train": {"epochs": 1, "save_epochs": 1, "batch_size": 8,
                             "system_metrics": False, "tracking_timeout_s": 5.0},
                   "split": {"stratify_by": None, "test_fraction": 0.2, "val_fraction": 0.2}},
                  repo / "params.yaml")
    sh(["poseops", "demo", "--small"], repo, env)
    sh(["poseops", "init", "data/raw/demo", "--in-place", "--keep-metadata"], repo, env)
    sh(["dvc", "repro", "split"], repo, env)  # the data stages once, in the baseline commit
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "baseline"], repo, env)
    for name, lr in GRID.items():
        sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}", "train"], repo, env)
    sh(["dvc", "exp", "run", "--run-all", "-j", "1"], repo, env)

    shown = {e["name"]: e["data"] for e in
             _experiments(json.loads(sh(["dvc", "exp", "show", "--json"], repo, env)))}
    assert set(shown) == set(GRID), shown
    for name, lr in GRID.items():
        data = shown[name]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == pytest.approx(lr)
        metrics = data["metrics"]["reports/train.json"]["data"]
        # (val.rmse is left out when DLC matched no keypoint after one epoch: NaN)
        assert metrics["selected_epoch"] == 1 and metrics["val.total_loss"] > 0, metrics
    # the experiments trained in DVC's temporary copies, not in this workspace's data/train
    assert not (repo / "data" / "train" / "run.json").exists()

    db = repo / "mlflow.db"  # DVC_ROOT: the repository's store, not one in a temporary copy
    assert db.exists(), sorted(p.name for p in repo.iterdir())
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("poseops")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.data.tags.get("dvc.exp_name"): r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(GRID), {k: r.info.run_name for k, r in runs.items()}
    for name, lr in GRID.items():
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) == pytest.approx(lr)
        assert run.info.run_name == "demo-it0-cspnext_s"
        assert run.data.metrics["selected.selected_epoch"] == 1
        val_rmse = shown[name]["metrics"]["reports/train.json"]["data"].get("val.rmse")
        if val_rmse is not None:
            assert run.data.metrics["selected.val.rmse"] == pytest.approx(val_rmse)
