"""Warm start (``train.init: previous | <snapshot .pt>``): the parent model a training
fine-tunes from, found offline, checked, and handed to DLC's runner.

``previous`` is the selected snapshot (``run.json`` ``selected_snapshot``) of the last complete
training in the train workdir: ``<workdir>/run.json``, or ``<workdir>/previous/run.json`` once a
new training has set the complete one aside (poseops.train.trainer). The workdir is a DVC
``persist: true`` output, so ``dvc repro`` keeps it between iterations.

DLC's runner loads a ``snapshot_path`` into the whole model (``model.load_state_dict``, heads
included) but, given a training snapshot, also restores its optimizer and epoch counter (a
resume). DLC's ``train_settings.weight_init`` loads decoder weights only through heads with
``WeightConversionMixin`` (heatmap, RTMCC), not the PAF / DEKR heads of multi-animal nets. So
the parent's weights (``model`` only) are written to a weights-only snapshot, checked key by key
against the new model, and given to DLC's runner as ``snapshot_path``: epoch 1, a new optimizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError
from poseops.train.record import RUN_JSON, read_run_json

log = logging.getLogger(__name__)

PREVIOUS_DIR = "previous"  # the trainer's set-aside folder (poseops.train.trainer.PREVIOUS)
WHERE = "params.yaml [train] init"


@dataclass
class Parent:
    """The model a warm start fine-tunes from."""

    snapshot: Path
    mode: str  # previous | snapshot
    pytorch_config: Path | None = None  # the parent's pytorch_config.yaml (bodyparts), if known
    run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    dlc_iteration: int | None = None

    def tags(self) -> dict[str, str]:
        """MLflow tags of the child run: its lineage."""
        tags = {"init": self.mode, "warm_start.snapshot": str(self.snapshot)}
        if self.run_id:
            tags["warm_start.parent_run_id"] = self.run_id
        if self.model_name and self.model_version:
            tags["warm_start.parent_model"] = f"models:/{self.model_name}/{self.model_version}"
            tags["warm_start.parent_model_version"] = str(self.model_version)
        if self.dlc_iteration is not None:
            tags["warm_start.parent_iteration"] = str(self.dlc_iteration)
        return tags

    def record(self) -> dict[str, Any]:
        """run.json's ``warm_start`` entry."""
        return {"mode": self.mode, "snapshot": str(self.snapshot), "parent_run_id": self.run_id,
                "parent_model": self.model_name, "parent_model_version": self.model_version,
                "parent_iteration": self.dlc_iteration}


def _locate(path: Path, workdir: Path) -> Path:
    """``path`` as recorded, or where the trainer moved it (``<workdir>/previous/...``)."""
    if path.exists():
        return path
    try:
        return workdir / PREVIOUS_DIR / path.relative_to(workdir)
    except ValueError:
        return path


def find_parent(params: TrainParams, workdir: Path) -> Parent | None:
    """The parent of a warm start (None for imagenet / random); a one-line PoseopsError naming
    what was looked for when there is none."""
    mode = params.init_mode
    if mode == "snapshot":
        path = Path(str(params.init).strip()).expanduser().resolve()
        if not path.is_file():
            raise PoseopsError(f"{WHERE}: snapshot not found", file=path)
        cfg = path.parent / "pytorch_config.yaml"
        return Parent(path, "snapshot", cfg if cfg.is_file() else None)
    if mode != "previous":
        return None
    workdir = Path(workdir).resolve()
    looked = []
    for run_json in (workdir / RUN_JSON, workdir / PREVIOUS_DIR / RUN_JSON):
        info = read_run_json(run_json.parent)
        snap = info.get("selected_snapshot") if info.get("status") == "complete" else None
        looked.append(str(run_json))
        if not snap:
            continue
        path = _locate(Path(snap), workdir)
        if not path.is_file():
            raise PoseopsError(f"{WHERE}: previous: the previous training's selected snapshot is "
                               f"missing (recorded in {run_json})", file=path)
        cfg = info.get("pytorch_config_path")
        return Parent(path, "previous", _locate(Path(cfg), workdir) if cfg else None,
                      run_id=info.get("run_id"), model_name=info.get("model_name"),
                      model_version=_str(info.get("model_version")), dlc_iteration=info.get("iteration"))
    raise PoseopsError(f"{WHERE}: previous: no complete previous training with a selected snapshot "
                       f"(looked for {' and '.join(looked)}); train once with init: random or "
                       "imagenet, or give the path of a snapshot .pt")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _keypoints(pytorch_config: Path) -> tuple[list[str], list[str]]:
    import yaml

    meta = (yaml.safe_load(Path(pytorch_config).read_text()) or {}).get("metadata") or {}
    return list(meta.get("bodyparts") or []), list(meta.get("unique_bodyparts") or [])


def check_bodyparts(parent: Parent, pytorch_config: Path) -> None:
    """The new training's bodyparts (and unique bodyparts) are the parent's, in the same order:
    a warm start cannot map a changed set (one-line PoseopsError)."""
    if parent.pytorch_config is None or not parent.pytorch_config.is_file():
        return  # a bare .pt: the state-dict check of prepare_init still catches other shapes
    old, old_u = _keypoints(parent.pytorch_config)
    new, new_u = _keypoints(pytorch_config)
    if (old, old_u) != (new, new_u):
        gone = sorted(set(old + old_u) - set(new + new_u))
        added = sorted(set(new + new_u) - set(old + old_u))
        what = f"removed {gone}, added {added}" if gone or added else "same names in another order"
        raise PoseopsError(f"{WHERE}: {parent.mode}: the bodyparts changed since the parent model "
                           f"({what}); a warm start needs the same bodyparts: set init: random or "
                           "imagenet", file=parent.pytorch_config)


def prepare_init(loader: Any, parent: Parent, dest: Path) -> Path:
    """Write the parent's model weights (only) to ``dest`` after checking every key and shape
    against the model the new training builds (``loader.model_cfg``); DLC's runner loads it."""
    import torch
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    try:
        snap = torch.load(parent.snapshot, map_location="cpu", weights_only=False)
        weights = snap["model"]
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise PoseopsError(f"{WHERE}: {parent.mode}: not a DeepLabCut snapshot with model weights "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:200]})",
                           file=parent.snapshot) from e
    model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in weights.items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        key = (missing or extra)[0]
        raise PoseopsError(f"{WHERE}: {parent.mode}: the snapshot does not fit train.net_type "
                           f"{loader.model_cfg.get('net_type', '')} ({'missing' if missing else 'unexpected'} weight {key!r}: another net type?)",
                           file=parent.snapshot)
    bad = next((k for k in want if want[k] != have[k]), None)
    if bad is not None:
        raise PoseopsError(f"{WHERE}: {parent.mode}: weight {bad!r} has shape {have[bad]}, the new "
                           f"model needs {want[bad]} (other bodyparts or net settings?)",
                           file=parent.snapshot)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights}, dest)
    log.info("warm start (%s) from %s", parent.mode, parent.snapshot)
    return dest
