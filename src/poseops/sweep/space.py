"""The search space: what one trial samples (``suggest``), what it trains on (``TrainInputs``),
and the fingerprint that names a study after both (``space_hash``). Pure, no I/O."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.sweep import SweepParams
from poseops.core.errors import PoseopsError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """What every trial trains on: the consensus labels table, the split table, the DLC project."""

    labels: Any  # pandas DataFrame (consensus labels, poseops.core.schema columns)
    split: Any  # pandas DataFrame (image, video, group, split)
    source_project: Path


def space_hash(p: SweepParams, train_base: Mapping[str, Any], data: str = "") -> str:
    """Fingerprint of what a trial means: search space, budget, metric, the fixed train params
    and the data (``data``: a digest of the labels and split tables)."""
    keys = ("lr", "batch_size", "epochs", "net_type", "augmentation", "metric", "enqueue")
    doc: dict[str, Any] = {k: getattr(p, k) for k in keys}
    doc["train"] = {k: v for k, v in sorted(train_base.items()) if k != "device"}
    doc["data"] = data
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def study_name_for(p: SweepParams, fingerprint: str) -> str:
    """``sweep.study_name``, else ``poseops-<fingerprint>``."""
    return p.study_name or f"poseops-{fingerprint}"


def table_digest(*tables: Any) -> str:
    """Content digest of pandas tables (row order and values), for the study fingerprint."""
    import pandas as pd

    h = hashlib.sha256()
    for df in tables:
        if df is None:
            continue
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:12]


def suggest(trial: optuna.Trial, p: SweepParams) -> dict[str, Any]:
    """Sample one point of the search space; keys are ``train:`` keys of params.yaml."""
    out: dict[str, Any] = {
        "lr": trial.suggest_float("lr", p.lr[0], p.lr[1], log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(p.batch_size)),
    }
    if isinstance(p.epochs, list):
        out["epochs"] = trial.suggest_categorical("epochs", list(p.epochs))
    else:
        out["epochs"] = int(p.epochs)
    if p.net_type:
        out["net_type"] = trial.suggest_categorical("net_type", list(p.net_type))
    for key, choices in p.augmentation.items():
        out[key] = trial.suggest_categorical(key, list(choices))
    return out


def as_train_params(params: Mapping[str, Any], p: SweepParams) -> dict[str, Any]:
    """A trial's Optuna params as plain ``train:`` values (numpy scalars unwrapped; a fixed
    epoch budget, which is no search dimension, added)."""
    doc = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
    if not isinstance(p.epochs, list):
        doc["epochs"] = int(p.epochs)
    return doc


# --------------------------------------------------------------------------------------------
# checks of a search space against the train params (before any trial)


def check_enqueue(p: SweepParams) -> None:
    """Enqueued points must name searched keys only (lr, batch_size, ...)."""
    known = {"lr", "batch_size", *p.augmentation}
    if isinstance(p.epochs, list):
        known.add("epochs")
    if p.net_type:
        known.add("net_type")
    for i, point in enumerate(p.enqueue):
        if not isinstance(point, dict) or set(point) - known:
            raise PoseopsError(
                f"sweep.enqueue[{i}] = {point!r}: a mapping of searched keys {sorted(known)}"
            )


def check_metric(p: SweepParams) -> None:
    """The study minimizes ``sweep.metric``: a higher-is-better one (DLC's multi-animal mAP /
    mAR) would pick the worst trial."""
    name = p.metric.lower().rsplit(".", 1)[-1]
    if name.startswith(("map", "mar")):
        raise PoseopsError(
            f"sweep.metric {p.metric!r} is higher-is-better; the sweep minimizes an error: use "
            "val.rmse (multi-animal projects: DLC's rmse after matching animals)")


def check_augmentation_keys(p: SweepParams, train_fields: set[str]) -> None:
    """``sweep.augmentation`` keys must be ``train:`` keys, each with a non-empty choice list."""
    unknown = [k for k in p.augmentation if k not in train_fields]
    if unknown:
        raise PoseopsError(
            f"sweep.augmentation names unknown train key(s) {unknown}; train has {sorted(train_fields)}"
        )
    empty = [k for k, v in p.augmentation.items() if not isinstance(v, list) or not v]
    if empty:
        raise PoseopsError(f"sweep.augmentation: give a non-empty list of choices for {empty}")
