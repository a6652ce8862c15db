"""A params mistake destroys nothing (issue 20, items 1-2): after a complete `poseops train`, a
bad value in ``train:`` (or a deleted ``train:`` section) stops the next `poseops train` with one
line naming the key, exit 2, before anything in ``data/train`` is touched: the previous
training's snapshots stay byte-identical and its run.json still says complete."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError

TRAIN = {"epochs": 1, "pretrained": False, "device": "cpu", "crop_width": 160, "crop_height": 120,
         "save_epochs": 1, "registered_model": None, "experiment": "guard", "tracking_timeout_s": 5.0,
         "system_metrics": False}

# (the edit to train:, the key the one-line error must name)
BAD_EDITS = {
    "scheduler-without-params": ({"scheduler": "StepLR"}, "scheduler_params"),
    "device-gpu": ({"device": "gpu"}, "device"),
    "net-type-typo": ({"net_type": "resnet_5O"}, "net_type"),
    "optimizer-typo": ({"optimizer": "Adamm"}, "optimizer"),
    "negative-lr": ({"lr": -0.001}, "lr"),
    "negative-crop": ({"crop_width": -160}, "crop_width"),
    "key-metric-typo": ({"key_metric": "test.rmsee"}, "key_metric"),
    "train-section-deleted": (None, "[train]"),
}


def _write_params(folder: Path, project: Path, train: dict | None) -> None:
    params = {"project": {"path": str(project)}, "consensus": {"out": "consensus.parquet"},
              "split": {"out": "split.csv"}}
    if train is not None:
        params["train"] = train
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_stage(small_demo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """One complete tiny `poseops train` in its own folder (private MLflow store)."""
    from support.train import small_tables

    from poseops.cli import main

    folder = tmp_path_factory.mktemp("guard")
    labels, split, project = small_tables(small_demo_root)
    labels.to_parquet(folder / "consensus.parquet")
    split.to_csv(folder / "split.csv", index=False)
    _write_params(folder, project, TRAIN)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        assert main(["train"]) == 0
    info = json.loads((folder / "data" / "train" / "run.json").read_text())
    assert info["status"] == "complete" and info["best_snapshot"]
    snaps = list((folder / "data" / "train").rglob("snapshot-*.pt"))
    assert snaps
    return folder, project


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_a_params_mistake_keeps_the_previous_training(trained_stage, case, capsys) -> None:
    from poseops.cli import main

    folder, project = trained_stage
    edit, key = BAD_EDITS[case]
    work = folder / "data" / "train"
    before = _tree_hashes(work)
    assert any(name.endswith(".pt") for name in before)
    _write_params(folder, project, None if edit is None else {**TRAIN, **edit})
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        rc = main(["train"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert len(err) == 1 and key in err[0], err
    assert _tree_hashes(work) == before  # snapshots, run.json, labels: byte-identical
    assert json.loads((work / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_failed_start_puts_the_previous_training_back(trained_stage, monkeypatch, capsys) -> None:
    """Valid params, but the new start fails once the new DLC project is built (fault injected
    after DeepLabCut's own preparation, as a full disk would): the previous training is back in
    place, byte for byte, and its run.json still says complete."""
    from poseops.cli import main
    from poseops.train import trainer

    folder, project = trained_stage
    work = folder / "data" / "train"
    before = _tree_hashes(work)
    real = trainer.prepare_dlc_project

    def prepare_then_fail(*args, **kwargs):
        ds = real(*args, **kwargs)
        assert ds.config_path.exists()  # the new project was really built over the old place
        raise PoseopsError("no space left on device (injected)")

    monkeypatch.setattr(trainer, "prepare_dlc_project", prepare_then_fail)
    _write_params(folder, project, {**TRAIN, "lr": 0.002})
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    assert main(["train"]) == 2
    assert "injected" in capsys.readouterr().err
    # all but tracking/: the previous run's journal, all sent, is cleared by any new start
    # (unsent operations would be set aside for `poseops sync`), as before this change
    kept = {k: v for k, v in before.items() if not k.startswith("tracking/")}
    assert {k: v for k, v in _tree_hashes(work).items() if not k.startswith("tracking/")} == kept
    assert any(k.endswith(".pt") for k in kept)
    assert json.loads((work / "run.json").read_text())["status"] == "complete"
    assert not (work / trainer.PREVIOUS).exists()


# ------------------------------------------------------------------ fast: the checks themselves
@pytest.mark.parametrize("case", [c for c, (e, _) in BAD_EDITS.items() if e is not None])
def test_validate_refuses_each_bad_value_naming_the_key(case) -> None:
    edit, key = BAD_EDITS[case]
    with pytest.raises(PoseopsError) as e:
        TrainParams(**{**TRAIN, **edit}).validate()
    assert key in str(e.value) and "\n" not in str(e.value)


def test_choices_come_from_dlc_registries_and_a_typo_gets_the_closest_name() -> None:
    """Every name DeepLabCut's and torch's own registries offer is accepted (not a copied list);
    a near miss is refused with the closest valid name."""
    import torch
    from deeplabcut.pose_estimation_pytorch.config.utils import available_models

    for net in ("resnet_50", "cspnext_s", "hrnet_w32", "dekr_w18", "top_down_resnet_50"):
        assert net in available_models()
        TrainParams(net_type=net).validate()
    for opt in ("SGD", "Adam", "AdamW", "RMSprop"):
        assert hasattr(torch.optim, opt)
        TrainParams(optimizer=opt).validate()
    TrainParams(scheduler="StepLR", scheduler_params={"step_size": 10}).validate()
    TrainParams(scheduler="LRListScheduler", scheduler_params={"milestones": [5], "lr_list": [[1e-4]]}).validate()
    for metric in ("test.rmse", "test.rmse_pcutoff", "test.mAP", "test.mAR"):
        TrainParams(key_metric=metric).validate()
    for dev in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        TrainParams(device=dev).validate()
    with pytest.raises(PoseopsError, match=re.escape("did you mean 'resnet_50'?")):
        TrainParams(net_type="resnet_5O").validate()
    with pytest.raises(PoseopsError, match=re.escape("did you mean 'test.rmse'?")):
        TrainParams(key_metric="test.rmsee").validate()
    with pytest.raises(PoseopsError, match=re.escape("did you mean 'StepLR'?")):
        TrainParams(scheduler="StepLr", scheduler_params={"step_size": 1}).validate()


def test_a_deleted_train_section_is_an_error_not_defaults(tmp_path: Path) -> None:
    from poseops.commands.train import train_params

    _write_params(tmp_path, tmp_path, None)
    with pytest.raises(PoseopsError, match=r"no \[train\] section"):
        train_params(str(tmp_path / "params.yaml"))
