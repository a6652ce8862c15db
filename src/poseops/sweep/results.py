"""What a sweep leaves behind: the best trial, the trials table, figures, ``summary.json`` and
``best_params.yaml`` (also on the MLflow parent run), and the one test measurement of the promoted
trial (``poseops sweep --promote``), the only place the sweep looks at the test split."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseops.config.sweep import SweepParams
from poseops.sweep.runs import (
    TAG_PROMOTED,
    client,
    close_failed_child_runs,
    find_child_run,
    log_parent_summary,
)
from poseops.sweep.space import TrainInputs, as_train_params
from poseops.sweep.study import ATTR_EPOCHS, ATTR_WORKER, redact, state_counts

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

MeasureFn = Callable[[Path], Mapping[str, float]]
"""(a trial's working copy) -> its test metrics ({} when they cannot be measured)."""


# --------------------------------------------------------------------------------------------
# summary: best params file, study table, figures, MLflow parent


def best_trial_info(study: optuna.Study) -> dict[str, Any] | None:
    """Best complete trial: number, value (validation error), params; None if none completed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    best = min(done, key=lambda t: t.value)
    return {"number": best.number, "value": best.value, "params": dict(best.params)}


def trials_table(study: optuna.Study) -> Any:
    """One row per trial: number, state, value, epochs_trained, retry_of, worker, params_*."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs_trained": t.user_attrs.get(ATTR_EPOCHS, 0),
            "retry_of": t.system_attrs.get("failed_trial"),
            "worker": t.user_attrs.get(ATTR_WORKER),
        }
        row.update({f"params_{k}": v for k, v in t.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(study: optuna.Study, p: SweepParams, parent_run_id: str) -> dict[str, Any]:
    """best_params.yaml + summary.json + figures (atomic), and the same on the MLflow parent."""
    from poseops.core.fileio import write_csv, write_json, write_yaml

    out = Path(p.out)
    best = best_trial_info(study)
    counts = state_counts(study)
    table = trials_table(study)
    summary = {
        "study_name": study.study_name,
        "storage": redact(p.storage),
        "mlflow_parent_run_id": parent_run_id,
        "counts": counts,
        "epochs_trained": int(table["epochs_trained"].sum()) if len(table) else 0,
        "best": best,
        "importances": param_importances(study),
    }
    write_json(summary, p.summary_path)
    write_csv(table, out / "trials.csv")
    if best is not None:
        best_doc = {"train": as_train_params(best["params"], p)}
        write_yaml(best_doc, p.best_params_path)
    close_failed_child_runs(study)
    figures = write_figures(study, out / "figures")
    log_parent_summary(parent_run_id, summary, [p.summary_path, out / "trials.csv", *figures], p)
    return summary


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importances, or None with fewer than 2 complete trials or a constant space."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:  # e.g. every trial has the same params
        log.info("no parameter importances: %s", e)
        return None
    return {k: float(v) for k, v in imp.items()}


def write_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """optimization_history.png, intermediate_values.png, parallel_coordinate.png (from one
    complete trial on) and param_importances.png (from two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from poseops.core.fileio import atomic_path

    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots: dict[str, Callable[[], Any]] = {}
    if n_done >= 1:
        plots["optimization_history"] = lambda: ovm.plot_optimization_history(study)
        plots["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
        plots["parallel_coordinate"] = lambda: ovm.plot_parallel_coordinate(study)
    if n_done >= 2:
        if param_importances(study):
            plots["param_importances"] = lambda: ovm.plot_param_importances(study)
    written = []
    for fname, plot in plots.items():
        try:
            with warnings.catch_warnings():  # e.g. singular axis limits with one trial
                warnings.simplefilter("ignore")
                ax = plot()
        except Exception as e:  # noqa: BLE001 - a figure is a nice-to-have, never a failure
            log.warning("figure %s skipped: %s", fname, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        path = folder / f"{fname}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# the test error of the promoted trial (once, after the choice)


def info_test_metrics(result: Any, inputs: TrainInputs, device: str) -> dict[str, float]:
    """Test error of a finished trial's selected snapshot: ``test.mean_px`` (DLC's "rmse": mean
    distance) and ``test.rmse_px``; multi-animal projects also ``test.mAP`` and ``test.mAR``
    (DLC's, after matching predictions to labeled animals as ``poseops evaluate`` does). Only
    for the promoted trial, after the choice (:func:`report_promoted_test`); never on a trial
    run. ``result``: a TrainResult (``images``, ``snapshot``, ``pytorch_config_path``,
    ``config_path``)."""
    images = (getattr(result, "images", None) or {}).get("test") or []
    snapshot = getattr(result, "snapshot", None)
    if not images or snapshot is None:
        return {}
    from poseops.dlc.inference import predict
    from poseops.evaluate.matching import is_multianimal

    multi = is_multianimal(inputs.labels)
    try:
        preds = predict(
            result.pytorch_config_path,
            snapshot,
            Path(result.config_path).parent,
            list(images),
            device=device,
            multi_animal=multi,
        )
        return split_test_metrics(inputs.labels, preds, inputs.split, Path(result.config_path))
    except Exception as e:  # noqa: BLE001 - information only: never fail a trial for it
        log.warning("test error not logged: %s", e)
        return {}


def split_test_metrics(labels: Any, preds: Any, split: Any, config_path: Path | None = None,
                       ) -> dict[str, float]:
    """``test.mean_px`` / ``test.rmse_px`` of the predictions of the split's test images (the
    evaluate stage's errors table). Multi-animal labels: the assemblies are matched to the
    labeled animals first (evaluate's matching, config order of the individuals from
    ``config_path``) and DLC's own ``test.mAP`` / ``test.mAR`` are added."""
    import numpy as np

    from poseops.core import schema as S
    from poseops.evaluate.matching import (
        dlc_multianimal_metrics,
        is_multianimal,
        match_predictions,
    )
    from poseops.evaluate.metrics import compute_errors

    test = split[split[S.SPLIT] == S.TEST]
    preds = preds[preds[S.IMAGE].isin(test[S.IMAGE])]
    out: dict[str, float] = {}
    if is_multianimal(labels):
        cfg = _dlc_config(config_path) if config_path else {}
        inds = cfg.get("individuals")
        individuals = [str(i) for i in inds] if inds else None
        preds = match_predictions(labels, preds, individuals)
        images = sorted(set(test[S.IMAGE]) & set(preds[S.IMAGE]))
        pcutoff = float(cfg.get("pcutoff", 0.6))
        dlc = dlc_multianimal_metrics(labels, preds, images, pcutoff, individuals)
        out.update({f"test.{k}": dlc[k] for k in ("mAP", "mAR") if np.isfinite(dlc[k])})
    err = compute_errors(labels, preds, test)[S.ERROR_PX].dropna().to_numpy()
    if not len(err):
        return out
    return {"test.mean_px": float(err.mean()), "test.rmse_px": float(np.sqrt((err**2).mean())),
            **out}


def _dlc_config(config_path: Path) -> dict[str, Any]:
    """A DLC config.yaml as it is, unchecked: only ``individuals`` (config order) and
    ``pcutoff`` are read (``poseops.dlc.files.read_config`` would refuse a partial config)."""
    import yaml

    return yaml.safe_load(Path(config_path).read_text()) or {}


def report_promoted_test(p: SweepParams, *, measure: MeasureFn) -> dict[str, Any] | None:
    """The test error of the promoted (best) trial, measured once and logged on that trial's
    MLflow run (``test.mean_px``, ``test.rmse_px``); the parent run is tagged with the trial.

    The only place the sweep looks at the test split, after the choice is made. Needs the best
    trial's working copy (kept by the sweep when ``log_test``); without it (trained on another
    machine, or an older sweep) nothing is measured: ``poseops evaluate`` reports the test error
    of the model ``dvc repro`` retrains with the promoted params. A second promotion of the same
    trial reuses the logged numbers (no second look). ``measure(workdir)`` measures a trial's
    working copy. Returns ``{trial, run_id, metrics}`` or None; also written to
    ``<out>/promoted_test.json``."""
    try:
        summary = json.loads(p.summary_path.read_text())
    except (OSError, ValueError):
        log.warning("no %s: test error of the promoted trial not measured", p.summary_path)
        return None
    best = summary.get("best") or {}
    if "number" not in best:
        return None
    try:
        return _report_promoted_test(p, summary, int(best["number"]), measure)
    except Exception as e:  # noqa: BLE001 - the params are promoted already; say why, go on
        log.warning("test error of the promoted trial not reported: %s", e)
        return None


def _report_promoted_test(p: SweepParams, summary: Mapping[str, Any], number: int,
                          measure: MeasureFn) -> dict[str, Any] | None:
    from mlflow.entities import Metric, RunTag

    from poseops.core.fileio import write_json

    study_name, parent = summary["study_name"], summary["mlflow_parent_run_id"]
    mlflow = client()
    run_id = find_child_run(mlflow.get_run(parent).info.experiment_id, study_name, number)
    workdir = Path(p.out) / "trials" / f"trial-{number}"
    if run_id is None:
        log.warning("no MLflow run for trial %d of %s: test error not logged", number, study_name)
        return None
    logged = mlflow.get_run(run_id).data.metrics
    metrics = {k: v for k, v in logged.items() if k.startswith("test.")}
    if not metrics:
        if not workdir.exists():
            log.warning("trial %d's model is not kept in %s (another machine, or "
                        "sweep.log_test was off): its test error is reported by `poseops "
                        "evaluate` after `dvc repro` retrains the promoted params",
                        number, workdir)
            return None
        metrics = dict(measure(workdir))
        if not metrics:
            return None
        now = int(time.time() * 1000)
        mlflow.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         tags=[RunTag("poseops.sweep.promoted", "true")])
    mlflow.set_tag(parent, TAG_PROMOTED, str(number))
    champion = promote_champion(run_id)
    out = {"trial": number, "study_name": study_name, "run_id": run_id, "metrics": metrics,
           **({"champion": champion} if champion else {})}
    write_json(out, Path(p.out) / "promoted_test.json")
    return out


def promote_champion(run_id: str) -> dict[str, str]:
    """Point ``@champion`` of each registered model the promoted trial's run made a version of
    at that (newest) version; registered model -> version ({} when the trial registered none)."""
    from poseops.tracking.registry import CHAMPION, move_alias, versions_of_run

    moved: dict[str, str] = {}
    for name, version in versions_of_run(None, run_id):  # newest first
        if name not in moved:
            move_alias(None, name, version, CHAMPION)
            moved[name] = version
    return moved
