"""One arm x seed of the augmentation ablation (``poseops ablation arm``), and reading every run
back (``poseops ablation results``).

An arm's run trains ``train:`` + ``ablation.train`` + the arm's overrides with ``train.seed`` =
the seed, on the split every arm shares, in ``<ablation.out>/runs/<arm>-<seed>`` (its own working
DLC project and MLflow run, nested under the ablation's parent run, never registered), then
predicts the ``ablation.split`` images (the fixed test set) and writes ``eval/errors.parquet``,
``eval/predictions.parquet`` and ``eval/headline.json`` there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.config.ablation import AblationParams
from poseops.config.evaluate import EvaluateParams
from poseops.config.loader import from_dict
from poseops.config.train import TrainParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json, write_parquet

log = logging.getLogger(__name__)

TAG = "poseops.ablation"
TAG_ROLE = "poseops.ablation_role"
EVAL = "eval"


def arm_params(base: TrainParams, p: AblationParams, arm: str, seed: int) -> TrainParams:
    """The train params of one run: ``base`` + ``ablation.train`` + the arm's overrides, the
    seed, the run's own workdir, never registered (checked like params.yaml: unknown keys name
    the closest one)."""
    merged = {**dataclasses.asdict(base), **p.overrides(arm)}
    merged.update(seed=int(seed), workdir=str(run_dir(p, arm, seed)), registered_model=None,
                  metrics=str(metrics_path(p, arm, seed)),
                  experiment=p.experiment or base.experiment)
    params = from_dict(TrainParams, merged, where=f"params.yaml [ablation] arms.{arm}")
    params.validate()
    return params


def run_dir(p: AblationParams, arm: str, seed: int) -> Path:
    return Path(p.out) / "runs" / p.run_name(arm, seed)


def metrics_path(p: AblationParams, arm: str, seed: int) -> Path:
    return Path(p.out) / "metrics" / f"{p.run_name(arm, seed)}.json"


def ablation_id(p: AblationParams, base: TrainParams) -> str:
    """``<name>-<hash>`` of what the runs mean (arms, seeds, shared train params): the parent
    run every arm's run is nested under."""
    keep = {k: v for k, v in dataclasses.asdict(base).items()
            if k not in {"device", "workdir", "metrics", "tracking_timeout_s", "dataloader_workers"}}
    doc = {"arms": p.arms, "seeds": p.seeds, "train": p.train, "base": keep, "split": p.split}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{p.name}-{digest}"


def parent_run(experiment: str, ident: str, p: AblationParams) -> str | None:
    """The ablation's parent run (found by its tag, else created); None when MLflow cannot be
    reached (the arm's run is then not nested; its own journal still keeps it)."""
    try:
        from mlflow import MlflowClient

        from poseops.tracking.runs import ensure_experiment, quiet_env, tracking_uri

        quiet_env()
        client = MlflowClient(tracking_uri())
        exp_id = ensure_experiment(client, experiment, tracking_uri())
        found = client.search_runs([exp_id], f"tags.`{TAG}` = '{ident}' and tags.`{TAG_ROLE}` = 'parent'",
                                   max_results=1, order_by=["attributes.start_time ASC"])
        if found:
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=f"ablation-{ident}",
                                tags={TAG: ident, TAG_ROLE: "parent"})
        client.log_param(run.info.run_id, "ablation.arms", json.dumps(p.arms, sort_keys=True)[:6000])
        client.log_param(run.info.run_id, "ablation.seeds", json.dumps(p.seeds))
        client.log_param(run.info.run_id, "ablation.baseline", p.baseline)
        client.set_terminated(run.info.run_id)
        return run.info.run_id
    except Exception as e:  # noqa: BLE001 - tracking must not stop the training
        log.warning("MLflow parent run of the ablation not reachable (%s): the arm's run is not "
                    "nested", type(e).__name__)
        return None


def evaluate_run(result: Any, labels: pd.DataFrame, split: pd.DataFrame, p: AblationParams,
                 ev: EvaluateParams, source_project: str | Path | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Predict the ``p.split`` images with the run's selected snapshot, and (``p.cohorts``) the
    generalisation cohorts' images (split ``cohort:<name>``: not in the working project, read
    from ``source_project``); errors, predictions and the ``p.split`` headline into
    ``<workdir>/eval``. Returns the headline per evaluated split ``{split: {metric: value}}``."""
    from poseops.dlc.inference import predict_with_cohorts, project_pcutoff
    from poseops.evaluate import metrics as M
    from poseops.evaluate.tables import metric_spec

    images = sorted(result.images.get(p.split) or [])
    if not images:
        raise PoseopsError(f"the split has no {p.split!r} images: the ablation needs a fixed test set")
    if S.INDIVIDUAL in labels.columns:
        raise PoseopsError("the ablation supports single-animal projects (multi-animal: not yet)")
    held = (sorted(split.loc[split[S.SPLIT].map(S.is_cohort), S.IMAGE])
            if p.cohorts and source_project is not None else [])
    preds = predict_with_cohorts(result.pytorch_config_path, result.snapshot,
                                 result.config_path.parent, images, held, source_project,
                                 batch_size=ev.batch_size, device=ev.device)
    images = images + held
    on = split[split[S.IMAGE].isin(images)]
    errors = M.compute_errors(labels[labels[S.IMAGE].isin(images)], preds, on, ev.reference_bodyparts)
    spec = metric_spec(ev, project_pcutoff(result.config_path))
    heads = M.headline_metrics(M.stratified_table(errors, spec))
    out = Path(result.workdir) / EVAL
    write_parquet(errors, out / "errors.parquet")
    write_parquet(preds, out / "predictions.parquet")
    write_json(heads.get(p.split, {}), out / "headline.json")
    return {s: h for s, h in heads.items() if s == p.split or S.is_cohort(s)}


def log_test_metrics(run_id: str | None, headlines: dict[str, dict[str, Any]]) -> None:
    """The run's ``<split>.*`` headline numbers (each evaluated split) onto its MLflow run (best
    effort)."""
    if not run_id:
        return
    try:
        from mlflow import MlflowClient

        from poseops.tracking.runs import tracking_uri

        client = MlflowClient(tracking_uri())
        for split, headline in headlines.items():
            for k, v in headline.items():
                if isinstance(v, (int, float)) and v == v:
                    client.log_metric(run_id, f"{split}.{k}", float(v))
    except Exception as e:  # noqa: BLE001
        log.warning("test metrics of run %s not logged to MLflow (%s)", run_id, type(e).__name__)


def read_runs(p: AblationParams) -> tuple[dict, dict, dict]:
    """Every arm x seed's (errors, predictions, headline) written by :func:`evaluate_run`,
    keyed (arm, seed); a missing run is an error naming its folder."""
    errors, preds, heads = {}, {}, {}
    for arm in p.arms:
        for seed in p.seeds:
            folder = run_dir(p, arm, seed) / EVAL
            path = folder / "errors.parquet"
            if not path.exists():
                raise PoseopsError("ablation run missing (dvc repro pipelines/ablation/dvc.yaml)",
                                   file=path)
            errors[(arm, seed)] = pd.read_parquet(path)
            preds[(arm, seed)] = pd.read_parquet(folder / "predictions.parquet")
            heads[(arm, seed)] = json.loads((folder / "headline.json").read_text())
    return errors, preds, heads
