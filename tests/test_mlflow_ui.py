"""The MLflow UI (3.x) in headless Chromium, on a store filled by a real (tiny) training and its
evaluation: the runs table names the run `<project>-it<iteration>-<net_type>` in the model-training
view, the LoggedModel page lists the val/test errors of the selected snapshot with their evaluation
datasets, and the registered model shows `@champion`."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.pg import free_port
from support.train import evaluate_store_copy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")]


@pytest.fixture
def filled_store(trained_demo, tmp_path, monkeypatch) -> dict:
    """A copy of the trained demo's store, then `poseops evaluate`'s MLflow logging on it (real
    predictions of the selected snapshot) and the registered version moved to @champion."""
    from mlflow import MlflowClient

    import poseops.commands.evaluate as E
    from poseops.tracking.registry import move_alias

    uri, ev, paths = evaluate_store_copy(trained_demo, tmp_path, monkeypatch)
    db = tmp_path / "mlflow.db"
    tr = trained_demo.result
    name = trained_demo.params.registered_model
    E.log_to_mlflow(ev, paths, tr.run_id, name, tr.model_version, model_uri=tr.model_uri,
                    frames=E.held_out_frames(trained_demo.labels, tr.images))
    move_alias(uri, name, tr.model_version)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(tr.run_id)
    (model,) = client.search_logged_models([run.info.experiment_id])
    cfg = yaml.safe_load(tr.config_path.read_text())
    return {"uri": uri, "db": db, "run": run, "model_id": model.model_id, "registered": name,
            "headline": ev.headline, "expected_name": f"{cfg['Task']}-it{cfg['iteration']}-"
                                                      f"{trained_demo.params.net_type}"}


@pytest.fixture
def ui(filled_store, tmp_path) -> Iterator[str]:
    """`mlflow server` on loopback over the filled store; its whole process group is stopped."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", filled_store["uri"],
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.read().strip() == b"OK":
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _page_text(tmp_path: Path, url: str) -> str:
    """The rendered page's visible text (headless Chromium, --dump-dom after the UI's requests)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1600,1000", "--virtual-time-budget=20000", "--dump-dom", url]
    dom = subprocess.run(cmd, check=True, timeout=180, capture_output=True, text=True).stdout
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).replace("\xa0", " ")


def test_mlflow_ui_shows_names_model_metrics_and_champion(filled_store, ui, tmp_path):
    run, exp_id = filled_store["run"], filled_store["run"].info.experiment_id
    name = filled_store["expected_name"]
    assert run.info.run_name == name  # the store itself, then what the UI makes of it

    runs_page = _page_text(tmp_path, f"{ui}/#/experiments/{exp_id}/runs")
    assert "Training runs" in runs_page, runs_page[:2000]  # the model-training view, not GenAI
    assert name in runs_page, runs_page[:3000]

    model_page = _page_text(tmp_path, f"{ui}/#/experiments/{exp_id}/models/{filled_store['model_id']}")
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    for split in ("val", "test"):
        value = filled_store["headline"][split]["rmse_px"]
        # a row of the model's metrics table: metric, dataset (#digest), source run, value
        row = (rf"{split}\.rmse_px {split}-frames \(#{inputs[f'{split}-frames'][:8]}\) "
               rf"{re.escape(name)} ([0-9.]+)")
        m = re.search(row, model_page)
        assert m, (row, model_page[:4000])
        assert float(m.group(1)) == pytest.approx(value, rel=1e-3, abs=1e-3)

    registry_page = _page_text(tmp_path, f"{ui}/#/models/{filled_store['registered']}")
    version = _version(filled_store)
    # the version's row of the versions table (its tags carry the headline numbers), up to the
    # next version or the table's pager: its aliases column holds @champion
    row = re.search(rf"Version {version} (.*?)(?: Version \d| Previous Next)", registry_page)
    assert row, registry_page[:3000]
    assert re.search(r"@ ?champion", row.group(1)), row.group(1)
    assert "test.rmse_px" in row.group(1)


def _version(store: dict) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    return str(client.get_model_version_by_alias(store["registered"], "champion").version)
