"""Warm start (issue 22): ``train.init: previous | <snapshot .pt>``, ``freeze_backbone_epochs``,
``finetune_lr``, the parent model on the MLflow run and in run.json.

The slow tests train a tiny parent on the small demo (single-animal) and on a tiny multi-animal
demo, then fine-tune from it in the same workdir (``init: previous``) and check, against the
parent's snapshot file read with torch.load, that DLC's model holds exactly those weights before
its first optimisation step and that the first epoch's train loss is far below a cold start's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.train import small_tables, tiny

from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.train.project import config_updates
from poseops.train.trainer import train_model

# ------------------------------------------------------------------------------ fast: params


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"init": "previus"}, ["init", "'previous'"]),
        ({"init": "models/last.ckpt"}, ["init", ".pt"]),
        ({"init": "random", "pretrained": True}, ["init", "contradicts pretrained"]),
        ({"init": "previous", "pretrained": True}, ["init", "contradicts pretrained"]),
        ({"freeze_backbone_epochs": -1}, ["freeze_backbone_epochs"]),
        ({"finetune_lr": 0.0}, ["finetune_lr"]),
    ],
    ids=["typo", "not-a-snapshot", "random-vs-pretrained", "previous-vs-pretrained", "freeze", "lr"],
)
def test_bad_or_contradictory_init_settings_are_one_line_errors(kw: dict, words: list[str]) -> None:
    with pytest.raises(PoseopsError) as e:
        TrainParams(**kw).validate()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_pretrained_maps_onto_init_and_finetune_lr_is_the_warm_start_lr() -> None:
    """pretrained true/false = init imagenet/random (unchanged behaviour); a warm start's
    optimizer gets finetune_lr in pytorch_config.yaml, a cold start keeps lr."""
    assert TrainParams(pretrained=True).init_mode == "imagenet"
    assert TrainParams(pretrained=False).init_mode == "random"
    assert TrainParams(pretrained=True, init="imagenet").init_mode == "imagenet"
    assert TrainParams(init="/x/snapshot-best-010.pt").init_mode == "snapshot"
    warm = TrainParams(init="previous", lr=1e-3, finetune_lr=1e-4)
    cold = TrainParams(init="random", lr=1e-3, finetune_lr=1e-4)
    assert config_updates(warm, (160, 120))["runner.optimizer"]["params"]["lr"] == 1e-4
    assert config_updates(cold, (160, 120))["runner.optimizer"]["params"]["lr"] == 1e-3
    assert config_updates(TrainParams(init="previous", lr=2e-3), (160, 120))[
        "runner.optimizer"]["params"]["lr"] == 2e-3


# ------------------------------------------------------------------------------ fast: refusals


def test_previous_without_a_previous_training_names_what_was_looked_for(
    small_demo_root: Path, tmp_path: Path
) -> None:
    labels, split, project = small_tables(small_demo_root)
    work = tmp_path / "train"
    with pytest.raises(PoseopsError) as e:
        train_model(tiny(1, init="previous"), labels, split, project, work,
                    tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    msg = str(e.value)
    assert "\n" not in msg and "previous" in msg
    assert str(work.resolve() / "run.json") in msg and str(work.resolve() / "previous" / "run.json") in msg
    assert not (work / "project").exists()  # refused before anything was built


def _fake_previous(work: Path, bodyparts: list[str]) -> tuple[Path, bytes]:
    """A complete earlier training in ``work`` whose model knew ``bodyparts``."""
    train = work / "project" / "dlc-models-pytorch" / "iteration-0" / "x" / "train"
    train.mkdir(parents=True)
    snap = train / "snapshot-best-005.pt"
    snap.write_bytes(b"not read: the bodyparts are checked first")
    cfg = train / "pytorch_config.yaml"
    cfg.write_text(yaml.safe_dump({"metadata": {"bodyparts": bodyparts, "unique_bodyparts": []}}))
    info = {"status": "complete", "selected_snapshot": str(snap), "pytorch_config_path": str(cfg),
            "config_path": str(work / "project" / "config.yaml"), "run_id": "abc"}
    (work / "run.json").write_text(json.dumps(info))
    return snap, (work / "run.json").read_bytes()


def test_a_changed_bodypart_set_is_refused_and_the_previous_training_kept(
    small_demo_root: Path, tmp_path: Path
) -> None:
    labels, split, project = small_tables(small_demo_root)
    work = (tmp_path / "train").resolve()
    demo_bps = yaml.safe_load((project / "config.yaml").read_text())["bodyparts"]
    snap, run_json = _fake_previous(work, [*demo_bps[:-1], "tail_tip"])
    with pytest.raises(PoseopsError) as e:
        train_model(tiny(1, init="previous"), labels, split, project, work,
                    tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    msg = str(e.value)
    assert "\n" not in msg and "bodyparts changed" in msg and "tail_tip" in msg and demo_bps[-1] in msg
    assert snap.read_bytes().startswith(b"not read") and (work / "run.json").read_bytes() == run_json


# ------------------------------------------------------------------------------ slow
def _capture_initial_weights(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The model's state dict when DLC's runner is built (snapshot loaded, before any step)."""
    from poseops.train.session import TrainingSession

    seen: list[dict] = []
    orig = TrainingSession.attach_runner

    def attach(self, runner):  # noqa: ANN001
        seen.append({k: v.detach().cpu().clone() for k, v in runner.model.state_dict().items()})
        return orig(self, runner)

    monkeypatch.setattr(TrainingSession, "attach_runner", attach)
    return seen


def _weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)


def _snapshot_at(train_dir: Path, epoch: int) -> Path:
    (path,) = [p for p in train_dir.glob("snapshot-*.pt") if p.stem.endswith(f"-{epoch:03d}")]
    return path


def _assert_continues_the_parent(warm_dir: Path, cold: pd.DataFrame) -> None:
    """The warm run's first-epoch train loss is near where the parent (trained from a random
    init on the same data, selected snapshot = its last epoch) ended, far below the cold
    start's first epoch: closer to the parent's last loss than to the cold first one."""
    loss = "losses/train.total_loss"
    cold_first, parent_last = float(cold[loss].iloc[0]), float(cold[loss].iloc[-1])
    warm_first = float(pd.read_csv(warm_dir / "learning_stats.csv")[loss].iloc[0])
    assert parent_last < 0.95 * cold_first, "the parent learned too little to tell a warm start"
    assert warm_first < cold_first - 0.5 * (cold_first - parent_last), (cold_first, parent_last, warm_first)


@pytest.mark.slow
def test_previous_loads_the_parent_weights_freezes_the_backbone_and_records_the_parent(
    small_demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    labels, split, project = small_tables(small_demo_root)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "train"
    cold = train_model(tiny(3, lr=1e-3, snapshot="last", tracking_timeout_s=120.0), labels, split, project,
                       work, tracking_uri=uri)
    parent = json.loads((work / "run.json").read_text())
    parent_snapshot = Path(parent["selected_snapshot"])
    parent_weights = _weights(parent_snapshot)  # read now: the folder moves during the new run

    seen = _capture_initial_weights(monkeypatch)
    warm = train_model(tiny(2, lr=1e-3, init="previous", finetune_lr=2e-4, freeze_backbone_epochs=1,
                            tracking_timeout_s=120.0), labels, split, project, work, tracking_uri=uri)
    # DLC's model held exactly the parent's weights before its first step
    assert len(seen) == 1
    _assert_same(seen[0], parent_weights)
    warm_dir = warm.pytorch_config_path.parent
    _assert_continues_the_parent(warm_dir, cold.learning_stats)
    # epoch 1: backbone frozen (weights and BN statistics), head trained; epoch 2: both trained
    e1, e2 = _weights(_snapshot_at(warm_dir, 1)), _weights(_snapshot_at(warm_dir, 2))
    backbone = [k for k in parent_weights if k.startswith("backbone.")]
    head = [k for k in parent_weights if k.startswith("heads.") and parent_weights[k].is_floating_point()]
    assert backbone and head
    _assert_same({k: e1[k] for k in backbone}, {k: parent_weights[k] for k in backbone})
    assert any(not np.array_equal(e1[k].numpy(), parent_weights[k].numpy()) for k in head)
    assert any(not np.array_equal(e2[k].numpy(), e1[k].numpy()) for k in backbone
               if e1[k].is_floating_point())
    # lineage: tags on the MLflow run, warm_start in run.json, finetune_lr used and logged
    run = MlflowClient(tracking_uri=uri).get_run(warm.run_id)
    assert run.data.tags["init"] == "previous"
    assert run.data.tags["warm_start.parent_run_id"] == cold.run_id
    assert run.data.tags["warm_start.parent_model_version"] == str(cold.model_version)
    assert run.data.tags["warm_start.snapshot"].endswith(parent_snapshot.name)
    lrs = MlflowClient(tracking_uri=uri).get_metric_history(warm.run_id, "train.lr")
    assert sorted((m.step, m.value) for m in lrs) == [(1, pytest.approx(2e-4)), (2, pytest.approx(2e-4))]
    info = json.loads((work / "run.json").read_text())
    assert info["warm_start"]["parent_run_id"] == cold.run_id
    assert info["status"] == "complete" and not (work / "previous").exists()


@pytest.mark.slow
def test_previous_warm_starts_a_multianimal_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from poseops.config.data import SplitParams
    from poseops.config.demo import DemoParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo

    project = tmp_path / "raw" / "demo"
    generate_demo(project, DemoParams.small_multi(unique_bodyparts=["marker"]),
                  metadata=tmp_path / "metadata" / "videos.csv")
    labels = build_consensus(ingest_project(project, tmp_path / "metadata" / "videos.csv"))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "train"
    cold = train_model(tiny(3, lr=1e-3, snapshot="last", registered_model=None), labels, split, project, work,
                       tracking_uri=uri)
    parent_weights = _weights(Path(json.loads((work / "run.json").read_text())["selected_snapshot"]))
    seen = _capture_initial_weights(monkeypatch)
    warm = train_model(tiny(1, lr=1e-3, init="previous", registered_model=None), labels, split, project,
                       work, tracking_uri=uri)
    _assert_same(seen[0], parent_weights)
    _assert_continues_the_parent(warm.pytorch_config_path.parent, cold.learning_stats)
