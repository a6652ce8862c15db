"""compare's backward-compatibility gate (expectations/compare.json) and the @champion alias:
constructed errors tables with a known RMSE rise / a known worse condition, through
`poseops compare` (exit code, the one error line, gate.json, MLflow's store)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.tables import compare_errors

from poseops.cli import main

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "expectations" / "compare.json"


def _errors(seed: int = 0, n_images: int = 40, n_videos: int = 8) -> pd.DataFrame:
    """A synthetic test-set errors table: 3 bodyparts, 2 conditions (constant per video)."""
    offset = {bp: 0.5 for bp in ("snout", "leftear", "tailbase")}
    return compare_errors(seed, offset, n_images, n_videos, train_row=False)


def _rmse(e: pd.Series) -> float:
    return float(np.sqrt(np.mean(np.square(e.to_numpy(float)))))


def _setup(tmp_path: Path, cand: pd.DataFrame, base: pd.DataFrame | None = None,
           **compare: object) -> list[str]:
    """Files + params.yaml; returns the argv of `poseops compare`."""
    base = _errors() if base is None else base
    base.to_parquet(tmp_path / "base.parquet")
    cand.to_parquet(tmp_path / "cand.parquet")
    section = {"n_boot": 100, "log_mlflow": False, "suite": str(SUITE),
               "out": str(tmp_path / "cmp"), "train_workdir": str(tmp_path / "no-train"),
               "history": str(tmp_path / "iterations.csv"),
               "merge_report": str(tmp_path / "merge.json"),
               **compare}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": section}))
    return ["compare", str(tmp_path / "base.parquet"), str(tmp_path / "cand.parquet"),
            "--params", str(tmp_path / "params.yaml")]


def _gate(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "cmp" / "gate.json").read_text())


@pytest.mark.parametrize(("factor", "passes"), [(1.049, True), (1.051, False)])
def test_rmse_rise_against_the_5_percent_bound(tmp_path, capsys, factor, passes):
    """Every error scaled by ``factor``: the RMSE rises by exactly (factor - 1) %, no stratum moves
    more than unchanged_tol_px; 4.9 % passes, 5.1 % fails naming the rise."""
    base = _errors()
    cand = base.assign(error_px=base.error_px * factor)
    rise = 100 * (_rmse(cand.error_px) / _rmse(base.error_px) - 1)
    assert rise == pytest.approx(100 * (factor - 1))
    assert (cand.groupby("condition").error_px.mean()
            - base.groupby("condition").error_px.mean()).max() < 0.5  # no "worse" stratum
    rc = main(_setup(tmp_path, cand, base))
    gate = _gate(tmp_path)
    assert gate["passed"] is passes
    assert gate["rmse_change_pct"] == pytest.approx(rise)
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["gate"]["passed"] is passes
    err = capsys.readouterr().err.strip()
    if passes:
        assert rc == 0 and gate["failed"] == []
    else:
        assert rc == 2 and gate["failed"] == ["test_rmse_rise"]
        assert len(err.splitlines()) == 1
        assert "compare gate failed" in err and "RMSE +5.1 %" in err
        assert "compare.max_rmse_rise_pct 5" in err


def test_a_worse_condition_fails_and_is_named(tmp_path, capsys):
    """+0.9 px on every 'drug' keypoint: that condition is worse (> 0.5 px), each bodypart
    only +0.45 px (unchanged); the RMSE bound is opened wide so only the condition fails."""
    base = _errors()
    drug = base.condition == "drug"
    cand = base.assign(error_px=base.error_px + 0.9 * drug)
    by_bp = cand.groupby("bodypart").error_px.mean() - base.groupby("bodypart").error_px.mean()
    assert by_bp.max() < 0.5
    rc = main(_setup(tmp_path, cand, base, max_rmse_rise_pct=100.0))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "condition worse: drug (+0.90 px" in err
    assert "vehicle" not in err and "bodypart worse" not in err
    assert _gate(tmp_path)["failed"] == ["no_condition_worse"]


def test_a_worse_bodypart_fails_and_is_named(tmp_path, capsys):
    base = _errors()
    cand = base.assign(error_px=base.error_px + 2.0 * (base.bodypart == "tailbase"))
    rc = main(_setup(tmp_path, cand, base, max_rmse_rise_pct=100.0))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "bodypart worse: tailbase (+2.00 px" in err and "snout" not in err


def test_fail_on_error_off_only_warns(tmp_path, caplog):
    base = _errors()
    cand = base.assign(error_px=base.error_px * 1.2)
    assert main(_setup(tmp_path, cand, base, fail_on_error=False)) == 0
    assert _gate(tmp_path)["passed"] is False
    assert any("compare gate failed" in r.message and r.levelname == "WARNING"
               for r in caplog.records)


def _registered(uri: str, tmp_path: Path) -> tuple[str, str]:
    """Two training runs, each with a registered version of 'pose'; @champion on version 1."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("tests").experiment_id
    runs = [client.create_run(exp).info.run_id for _ in range(2)]
    client.create_registered_model("pose")
    for r in runs:
        client.create_model_version("pose", (tmp_path / "model").as_uri(), run_id=r)
    client.set_registered_model_alias("pose", "champion", "1")
    return runs[0], runs[1]


def test_gate_pass_moves_champion_and_tags_the_candidate_run(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    _, cand_run = _registered(mlflow_uri, tmp_path)
    base = _errors()
    argv = _setup(tmp_path, base.assign(error_px=base.error_px * 0.9), base)
    assert main([*argv, "--candidate-run", cand_run]) == 0
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias("pose", "champion").version) == "2"
    run = client.get_run(cand_run)
    assert run.data.tags["compare_gate"] == "passed"
    assert run.data.metrics["compare_gate_passed"] == 1.0
    assert run.data.metrics["compare_rmse_change_pct"] == pytest.approx(-10.0)
    gate = _gate(tmp_path)
    assert (gate["alias_before"], gate["alias_after"], gate["alias_moved"]) == ("1", "2", True)


def test_gate_fail_leaves_champion_and_says_so(tmp_path, mlflow_uri, capsys):
    from mlflow import MlflowClient

    _, cand_run = _registered(mlflow_uri, tmp_path)
    base = _errors()
    argv = _setup(tmp_path, base.assign(error_px=base.error_px * 1.3), base)
    assert main([*argv, "--candidate-run", cand_run]) == 2
    assert "@champion stays on version 1" in capsys.readouterr().err
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias("pose", "champion").version) == "1"
    run = client.get_run(cand_run)
    assert run.data.tags["compare_gate"] == "failed"
    assert "RMSE +30.0 %" in run.data.tags["compare_gate_message"]
    assert run.data.metrics["compare_gate_passed"] == 0.0


def test_candidate_run_found_through_run_json(tmp_path, mlflow_uri):
    """A candidate given as a file: its run is the one in train.workdir/run.json."""
    from mlflow import MlflowClient

    _, cand_run = _registered(mlflow_uri, tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "run.json").write_text(json.dumps({"run_id": cand_run}))
    base = _errors()
    argv = _setup(tmp_path, base, base, train_workdir=str(tmp_path / "train"))
    assert main(argv) == 0
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias("pose", "champion").version) == "2"


def test_move_alias_and_holder(tmp_path, mlflow_uri):
    from poseops.core.errors import PoseopsError
    from poseops.tracking.registry import alias_holder, move_alias, versions_of_run

    r1, r2 = _registered(mlflow_uri, tmp_path)
    assert alias_holder(mlflow_uri, "pose", "champion") == "1"
    assert alias_holder(mlflow_uri, "pose", "staging") is None
    assert versions_of_run(mlflow_uri, r2) == [("pose", "2")]
    assert move_alias(mlflow_uri, "pose", 2) == "1"
    assert alias_holder(mlflow_uri, "pose") == "2"
    with pytest.raises(PoseopsError, match="no version 9"):
        move_alias(mlflow_uri, "pose", 9)


def test_stop_rule_in_the_summary(tmp_path):
    """|RMSE change| below compare.stop_change_pct: the summary says "stop refining"."""
    base = _errors()
    main(_setup(tmp_path, base.assign(error_px=base.error_px * 1.01), base, stop_change_pct=2.0))
    s = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert s["stop_refining"] is True and s["advice"].startswith("stop refining")
    main(_setup(tmp_path, base.assign(error_px=base.error_px * 0.95), base, stop_change_pct=2.0))
    s = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert s["stop_refining"] is False
