"""Early stopping and reduce-on-plateau for plain training (issue 22): ``train.early_stopping_patience``
/ ``early_stopping_min_delta`` on the key metric DLC's snapshot selection uses (validation),
``train.lr_on_plateau`` (torch's ReduceLROnPlateau, stepped after each validation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from support.train import small_tables, tiny

from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.train.trainer import train_model


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"early_stopping_patience": 0}, ["early_stopping_patience", ">= 1"]),
        ({"early_stopping_min_delta": -1.0}, ["early_stopping_min_delta"]),
        ({"lr_on_plateau": {"factor": 0.5}}, ["lr_on_plateau", "scheduler: none"]),
        ({"lr_on_plateau": {"factr": 0.5}, "scheduler": "none"}, ["lr_on_plateau", "'factor'"]),
        ({"lr_on_plateau": {"factor": 1.5}, "scheduler": "none"}, ["lr_on_plateau.factor"]),
    ],
    ids=["patience-0", "negative-delta", "plateau-with-a-scheduler", "plateau-typo", "plateau-factor"],
)
def test_bad_early_stopping_settings_are_one_line_errors(kw: dict, words: list[str]) -> None:
    with pytest.raises(PoseopsError) as e:
        TrainParams(**kw).validate()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.slow
def test_a_run_that_cannot_improve_stops_early_and_records_it(small_demo_root: Path, tmp_path: Path) -> None:
    """min_delta 1e9: no epoch can beat the first validated one, so training stops ``patience``
    epochs after it; the plateau scheduler halves the lr after each finite, non-improving
    validation. Key metric mAP (finite from the first epoch on, unlike the RMSE of a barely
    trained model). Expected values computed from learning_stats.csv on disk."""
    from mlflow.tracking import MlflowClient

    labels, split, project = small_tables(small_demo_root)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "train"
    params = tiny(6, lr=1e-3, early_stopping_patience=2, early_stopping_min_delta=1e9, scheduler="none",
                  lr_on_plateau={"factor": 0.5, "patience": 0}, key_metric="test.mAP",
                  registered_model=None)
    res = train_model(params, labels, split, project, work, tracking_uri=uri)

    stats = pd.read_csv(res.pytorch_config_path.parent / "learning_stats.csv")
    key = dict(zip(stats["step"], stats["metrics/test.mAP"], strict=True))
    first = min(s for s, v in key.items() if math.isfinite(v))  # the best: nothing beats it by 1e9
    stop = first + 2
    assert stop < params.epochs, "the first validated epoch came too late to test a stop"
    assert sorted(key) == list(range(1, stop + 1))  # no epoch after the stop
    info = json.loads((work / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["early_stopping"]["stopped_at_epoch"] == stop
    assert info["early_stopping"]["best_epoch"] == first
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stopped_early_at_epoch"] == str(stop)
    assert info["selected_snapshot"] and Path(info["selected_snapshot"]).is_file()
    # lr per epoch: halved after each finite validation that did not improve
    lr = {m.step: m.value for m in client.get_metric_history(res.run_id, "train.lr")}
    for step in range(1, stop + 1):
        cuts = sum(1 for t in range(first + 1, step) if math.isfinite(key[t]))
        assert lr[step] == pytest.approx(1e-3 * 0.5 ** cuts), step


def test_the_stop_rule_counts_epochs_since_the_last_real_improvement() -> None:
    """Patience 2, min_delta 0.5 px on DLC's validation RMSE (``metrics/test.rmse``, smaller is
    better): 10 -> 9.8 (not better by > 0.5) -> 9.7 (not) stops at epoch 3, best epoch 1; NaN
    epochs (no validation value) count as epochs without improvement; the plateau scheduler
    halves the lr only after finite, non-improving validations."""
    import torch

    from poseops.train.steering import Steering

    class Runner:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    params = TrainParams(early_stopping_patience=2, early_stopping_min_delta=0.5, scheduler="none",
                         lr_on_plateau={"factor": 0.5, "patience": 0})
    s, r = Steering(params), Runner()
    lrs = []
    for epoch, rmse in enumerate([10.0, 9.8, 9.7], start=1):
        stop = s.after_epoch(r, epoch, {"metrics/test.rmse": rmse})
        lrs.append(r.optimizer.param_groups[0]["lr"])
    assert stop is not None and (stop.epoch, stop.best_epoch, stop.best) == (3, 1, 10.0)
    assert lrs == [1.0, 0.5, 0.25]
    s = Steering(params)
    assert s.after_epoch(r, 1, {"metrics/test.rmse": 10.0}) is None
    assert s.after_epoch(r, 2, {"metrics/test.rmse": float("nan")}) is None
    assert s.after_epoch(r, 3, {"metrics/test.rmse": 9.0}) is None  # better by 1 px: patience restarts
    assert s.after_epoch(r, 4, {}) is None  # no validation this epoch
    assert s.after_epoch(r, 5, {"metrics/test.rmse": float("nan")}).epoch == 5
