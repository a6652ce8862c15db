"""The backward-compatibility gate of ``poseops compare``: may the candidate replace the champion?

The Great Expectations suite ``compare.suite`` (``expectations/compare.json``) runs on compare's
tables (:func:`gate_tables`): the test RMSE on the fixed test set may rise by at most
``compare.max_rmse_rise_pct`` %, and no bodypart or condition may have status ``worse`` (its mean
error up by more than ``compare.unchanged_tol_px``); with ``compare.min_gain_seed_sd`` set, the
candidate's test RMSE gain must reach that many of the baseline's seed-to-seed SDs (table
``seed_spread``, from ``compare.seed_spread``). The suite runs through a ``validate``
callable the command gives (``poseops.quality.gx.validate_tables``: quality/ is on this floor).

The outcome (:func:`run_gate`) goes to ``<compare.out>/gate.json`` and ``summary.json`` (key
``gate``), onto the candidate's MLflow training run (tags ``compare_gate``,
``compare_gate_message``; metrics ``compare_gate_passed``, ``compare_rmse_change_pct``) and, when
it passes, the registry alias ``compare.champion_alias`` moves to the candidate's model version
(found from its run id). A failure leaves the alias where it was and raises one line naming
what got worse (only a warning when ``compare.fail_on_error`` is false).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.config.refine import CompareParams
from poseops.core.errors import PoseopsError

log = logging.getLogger(__name__)

STRATA = ("bodypart", "condition")
GATE_TAG, GATE_MESSAGE_TAG = "compare_gate", "compare_gate_message"
SEED_TABLE, SEED_RULE = "seed_spread", "gain_beyond_seed_noise"


# ---------------------------------------------------------------- pure
def gate_tables(result: dict) -> dict[str, pd.DataFrame]:
    """The tables the suite checks: ``summary`` (one row: rmse_change_pct, rmse_px_baseline,
    rmse_px_candidate) and ``bodypart`` / ``condition`` (stratum, status, delta_px, change_pct;
    ``condition`` only when the errors have conditions)."""
    s = result["summary"]
    tables = {"summary": pd.DataFrame([{
        "rmse_change_pct": _f(s.get("rmse_change_pct")),
        "rmse_px_baseline": _f(s.get("rmse_px_baseline")),
        "rmse_px_candidate": _f(s.get("rmse_px_candidate")),
    }])}
    for name in STRATA:
        t = result.get(name)
        if isinstance(t, pd.DataFrame) and not t.empty:
            tables[name] = t[["stratum", "status", "delta_px", "change_pct"]].assign(
                stratum=t["stratum"].astype(str)).reset_index(drop=True)
    if "gain_seed_sd" in s:  # the baseline's seed-to-seed SD is known (compare.seed_spread)
        tables[SEED_TABLE] = pd.DataFrame([{k: _f(s.get(k)) for k in
                                            ("gain_seed_sd", "gain_px", "seed_sd_px")}])
    return tables


def _f(v: Any) -> float:
    return float(v) if v is not None and pd.notna(v) else float("nan")


def worse_strata(result: dict) -> dict[str, pd.DataFrame]:
    """Per stratum type (bodypart, condition): its rows with status ``worse``, worst first."""
    out = {}
    for name in STRATA:
        t = result.get(name)
        if isinstance(t, pd.DataFrame) and not t.empty:
            w = t[t["status"] == "worse"].sort_values("delta_px", ascending=False)
            if len(w):
                out[name] = w
    return out


def gate_message(result: dict, failed: list[str], params: CompareParams,
                 other: str = "") -> str:
    """One line naming what got worse: the RMSE rise against its bound, then every worse
    condition and bodypart with its change (``failed``: names of the failed expectations;
    ``other``: text for failures of expectations this function does not know)."""
    s = result["summary"]
    parts = []
    if "test_rmse_rise" in failed:
        parts.append(f"{s['split']} RMSE {s['rmse_change_pct']:+.1f} % ({s['rmse_px_baseline']:.2f}"
                     f" -> {s['rmse_px_candidate']:.2f} px) > compare.max_rmse_rise_pct "
                     f"{params.max_rmse_rise_pct:g}")
    if SEED_RULE in failed:
        parts.append(f"gain {s['gain_px']:+.2f} px = {s['gain_seed_sd']:+.2f} x the baseline's "
                     f"seed-to-seed SD ({s['seed_sd_px']:.2f} px over {s['seed_n']} seeds) < "
                     f"compare.min_gain_seed_sd {params.min_gain_seed_sd:g}")
    worse = worse_strata(result)
    for name in ("condition", "bodypart"):
        if f"no_{name}_worse" in failed and name in worse:
            items = ", ".join(f"{r.stratum} ({r.delta_px:+.2f} px, {r.change_pct:+.0f} %)"
                              for r in worse[name].itertuples())
            parts.append(f"{name} worse: {items}")
    if other:
        parts.append(other)
    return "; ".join(parts) or "failed"


def stop_rule(summary: dict, stop_change_pct: float) -> dict:
    """``stop_refining`` when the candidate changed the test RMSE by less than
    ``stop_change_pct`` % (either way): the last round did not move the error."""
    change = _f(summary.get("rmse_change_pct"))
    stop = bool(math.isfinite(change) and abs(change) < stop_change_pct)
    text = (f"stop refining: the last round changed test RMSE by {change:+.1f} % (|change| < "
            f"compare.stop_change_pct {stop_change_pct:g})" if stop else
            f"keep refining: test RMSE changed {change:+.1f} % (>= {stop_change_pct:g} %)")
    return {"stop_refining": stop, "advice": text}


# ---------------------------------------------------------------- edges
def candidate_run_id(cinfo: dict, params: CompareParams, explicit: str | None = None
                     ) -> tuple[str | None, str]:
    """The candidate's MLflow training run id and where it came from: ``explicit`` (--candidate-
    run), the run its errors came from, else ``<compare.train_workdir>/run.json`` (the model the
    pipeline trained last: the usual candidate after ``dvc repro``)."""
    if explicit:
        return explicit, "given"
    if cinfo.get("run_id"):
        return str(cinfo["run_id"]), "errors source"
    from poseops.train.record import read_run_json

    info = read_run_json(Path(params.train_workdir))
    wanted, have = cinfo.get("iteration"), info.get("iteration")
    if wanted is not None and have is not None and int(wanted) != int(have):
        log.warning("compare gate: %s holds iteration %s, not the candidate's %s: give "
                    "--candidate-run", Path(params.train_workdir) / "run.json", have, wanted)
        return None, ""
    if info.get("run_id"):
        return str(info["run_id"]), f"{Path(params.train_workdir) / 'run.json'}"
    return None, ""


def run_gate(result: dict, params: CompareParams,
             validate: Callable[[dict[str, pd.DataFrame]], Any],
             candidate_run: str | None = None, uri: str | None = None) -> dict:
    """Run the suite on ``result`` (from compare_tables), record the outcome (gate.json, summary,
    the candidate's MLflow run), move the alias when it passes; raise when it fails and
    ``params.fail_on_error``. Returns the gate record."""
    from poseops.core.fileio import write_json

    tables = gate_tables(result)
    if params.min_gain_seed_sd is None:  # the seed rule is off: its optional check is skipped
        tables.pop(SEED_TABLE, None)
    elif SEED_TABLE not in tables:
        raise PoseopsError("compare.min_gain_seed_sd is set but the baseline's seed-to-seed SD is "
                           "unknown: set compare.seed_spread (or --seed-spread)")
    validation = validate(tables)
    failures = validation.failures()
    known = {"test_rmse_rise", "no_bodypart_worse", "no_condition_worse", SEED_RULE}
    failed = failures["name"].tolist()
    unknown = failures[~failures["name"].isin(known)]
    other = "; ".join(f"{r.name}: observed {r.observed}" for r in unknown.itertuples())
    passed = bool(validation.success)
    cinfo = (result["summary"].get("sources") or {}).get("candidate") or {}
    run_id, run_source = candidate_run_id(cinfo, params, candidate_run)
    gate: dict[str, Any] = {
        "passed": passed, "suite": params.suite, "max_rmse_rise_pct": params.max_rmse_rise_pct,
        "rmse_change_pct": result["summary"].get("rmse_change_pct"),
        "gain_seed_sd": result["summary"].get("gain_seed_sd"),
        "min_gain_seed_sd": params.min_gain_seed_sd,
        "failed": failed, "message": "" if passed else gate_message(result, failed, params, other),
        "checks": validation.to_json_dict()["results"],
        "candidate_run_id": run_id, "candidate_run_source": run_source,
        "alias": params.champion_alias, "model_name": None, "model_version": None,
        "alias_before": None, "alias_after": None, "alias_moved": False,
    }
    if run_id:
        _record_on_run(run_id, gate, uri)
        _registry_step(run_id, gate, uri)
    elif passed:
        log.warning("compare gate passed but the candidate's MLflow run is unknown (no run id in "
                    "its source, no %s): @%s not moved", Path(params.train_workdir) / "run.json",
                    params.champion_alias)
    result["summary"]["gate"] = {k: v for k, v in gate.items() if k != "checks"}
    out = Path(params.out)
    write_json(gate, out / "gate.json")
    write_json(result["summary"], out / "summary.json")
    if not passed:
        stays = (f"@{params.champion_alias} stays on version {gate['alias_before']}"
                 if gate["alias_before"] else f"@{params.champion_alias} not moved")
        line = f"compare gate failed: {gate['message']} ({stays})"
        if params.fail_on_error:
            raise PoseopsError(line)
        log.warning("%s (compare.fail_on_error is off: continuing)", line)
    else:
        log.info("compare gate passed%s", f": {params.champion_alias} -> version "
                 f"{gate['model_version']}" if gate["alias_moved"] else "")
    return gate


def _record_on_run(run_id: str, gate: dict, uri: str | None) -> None:
    """Tags and metrics of the outcome on the candidate's training run (a missing or unreachable
    run: a warning, the gate's verdict stands)."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from poseops.tracking.runs import quiet_env, tracking_uri

    quiet_env()
    client = MlflowClient(tracking_uri=tracking_uri(uri))
    try:
        client.set_tag(run_id, GATE_TAG, "passed" if gate["passed"] else "failed")
        client.set_tag(run_id, GATE_MESSAGE_TAG, (gate["message"] or "passed")[:4000])
        now = int(time.time() * 1000)
        metrics = [Metric("compare_gate_passed", float(gate["passed"]), now, 0)]
        change = _f(gate["rmse_change_pct"])
        if np.isfinite(change):
            metrics.append(Metric("compare_rmse_change_pct", change, now, 0))
        ratio = _f(gate.get("gain_seed_sd"))
        if np.isfinite(ratio):
            metrics.append(Metric("compare_gain_seed_sd", ratio, now, 0))
        client.log_batch(run_id, metrics=metrics)
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing run
        log.warning("compare gate: cannot record on MLflow run %s: %s", run_id, e)


def _registry_step(run_id: str, gate: dict, uri: str | None) -> None:
    """Find the candidate's registered version; move the alias only when the gate passed."""
    from poseops.tracking.registry import alias_holder, move_alias, versions_of_run

    try:
        versions = versions_of_run(uri, run_id)
    except Exception as e:  # noqa: BLE001 - an unreachable registry must not hide the verdict
        log.warning("compare gate: registry not reachable (%s): @%s not moved", e, gate["alias"])
        return
    if not versions:
        log.warning("compare gate: run %s has no registered model version: @%s not moved",
                    run_id, gate["alias"])
        return
    name, version = versions[0]
    before = alias_holder(uri, name, gate["alias"])
    gate.update(model_name=name, model_version=version, alias_before=before, alias_after=before)
    if gate["passed"]:
        move_alias(uri, name, version, gate["alias"])
        gate.update(alias_after=version, alias_moved=before != version)
