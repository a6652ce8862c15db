"""The whole iteration as a new user runs it: a copy of this repository, the README's demo steps
(`poseops demo`, `poseops init --in-place`, `dvc repro`), then what DVC and MLflow must show.

Slow (real DeepLabCut training, 2 epochs on the demo at 160x120 on the CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support.e2e import BIN, STAGES, clone_repo, sh, user_env
from support.pg import free_port

from poseops.config.loader import update_params


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    env = user_env()
    repo = clone_repo(tmp_path_factory.mktemp("clone"), env)
    # keep the real training tiny; everything else as the README's `make demo`
    update_params({"train": {"epochs": 2, "save_epochs": 1}}, repo / "params.yaml")
    sh(["poseops", "demo"], repo, env)
    sh(["poseops", "init", "data/raw/demo", "--in-place", "--keep-metadata",
        "--remote", str(repo.parent / "remote")], repo, env)
    log = sh(["dvc", "repro"], repo, env)
    return repo, env, log


@pytest.mark.slow
def test_repro_runs_every_stage_and_leaves_the_outputs(pipeline) -> None:
    repo, _, log = pipeline
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log, stage
    p = yaml.safe_load((repo / "params.yaml").read_text())
    labels = pd.read_parquet(repo / p["ingest"]["out"])
    # 12 labeled videos x 10 frames, 4 bodyparts; every frame by alice, 40 % also by bob and carol
    assert labels["image"].nunique() == 120
    assert set(labels["scorer"]) == {"alice", "bob", "carol"}
    consensus = pd.read_parquet(repo / p["consensus"]["out"])
    assert len(consensus) == 120 * 4 and set(consensus["scorer"]) == {"consensus"}
    split = pd.read_csv(repo / p["split"]["out"])
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("video")["split"].nunique().max() == 1  # no video in two splits
    metrics = json.loads((repo / p["evaluate"]["metrics"]).read_text())
    assert metrics, "evaluate wrote no metrics"
    html = (repo / p["report"]["out"]).read_text()
    assert "<img" in html and "http://" not in html.replace("http://www.w3.org", "")
    run = json.loads((repo / p["train"]["workdir"] / "run.json").read_text())
    assert run["run_id"]


@pytest.mark.slow
def test_second_repro_is_a_noop_and_dag_shows_the_stages(pipeline) -> None:
    repo, env, _ = pipeline
    out = sh(["dvc", "repro"], repo, env)
    assert "Running stage" not in out
    assert "up to date" in sh(["dvc", "status", "dvc.yaml"], repo, env).lower()
    dag = sh(["dvc", "dag"], repo, env)
    for stage in STAGES:
        assert stage in dag


def _touch_function_body(path: Path) -> str:
    """Add a statement to the end of the first top-level function in ``path`` (a real code
    change, same behaviour); returns the original text."""
    import ast

    text = path.read_text()
    fn = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef))
    last = fn.body[-1]
    lines = text.splitlines(keepends=True)
    indent = " " * fn.body[0].col_offset
    at = last.end_lineno if not isinstance(last, ast.Return) else last.lineno - 1
    lines.insert(at, f"{indent}_touched = True  # noqa: F841\n")
    path.write_text("".join(lines))
    return text


@pytest.mark.slow
def test_code_change_in_an_indirect_import_makes_evaluate_stale(pipeline) -> None:
    """dvc.yaml deps cover every module a stage's command imports, not only its own files:
    the evaluate command reads DLC's files only through the inference adapter (dlc/files.py is
    an indirect import; the old hand-written deps missed it)."""
    repo, env, _ = pipeline
    module = repo / "src/poseops/dlc/files.py"
    original = _touch_function_body(module)
    try:
        r = subprocess.run(["dvc", "status", "--json", "dvc.yaml"], cwd=repo, env=env,
                           capture_output=True, text=True, check=True)
        status = json.loads(r.stdout)
        assert "evaluate" in status, status
        changed = [d for entry in status["evaluate"] if isinstance(entry, dict)
                   for d in entry.get("changed deps", {})]
        assert any(d.startswith("src/poseops/dlc") for d in changed), status["evaluate"]
    finally:
        module.write_text(original)
    assert "up to date" in sh(["dvc", "status", "dvc.yaml"], repo, env).lower()


@pytest.mark.slow
def test_metrics_diff_between_two_parameter_settings(pipeline) -> None:
    repo, env, _ = pipeline
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "iteration 0"], repo, env)
    metrics_path = repo / yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["metrics"]
    test = json.loads(metrics_path.read_text())["test"]
    # a cutoff that changes how many keypoints pass it (counts: always numbers, never null)
    cutoff = 0.0 if test["n_pcutoff"] < test["n"] else 1.0
    update_params({"evaluate": {"pcutoff": cutoff}}, repo / "params.yaml")
    log = sh(["dvc", "repro"], repo, env)
    assert "Running stage 'train'" not in log  # an evaluation setting does not retrain
    assert "Running stage 'evaluate'" in log
    r = subprocess.run(["dvc", "metrics", "diff", "--json"], cwd=repo, env=env,
                       capture_output=True, text=True, check=True)
    diff = json.loads(r.stdout)
    metrics_file = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["metrics"]
    changed = diff.get(metrics_file, {})
    assert any("pcutoff" in k for k in changed), sorted(changed)


@pytest.mark.slow
def test_training_run_is_in_the_mlflow_ui(pipeline) -> None:
    """`mlflow ui` on the default store (sqlite:///mlflow.db at the repo root) serves the run."""
    repo, env, _ = pipeline
    run_id = json.loads((repo / "data/train/run.json").read_text())["run_id"]
    assert (repo / "mlflow.db").is_file()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", "sqlite:///mlflow.db",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=repo, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(1)
        assert body is not None, "mlflow ui did not answer"
        data = body["run"]["data"]
        params = {p["key"]: p["value"] for p in data["params"]}
        metrics = {m["key"] for m in data["metrics"]}
        assert params, "no params logged"
        assert any("val" in m for m in metrics), sorted(metrics)
        assert body["run"]["info"]["status"] == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
