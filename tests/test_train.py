"""poseops.train: real DeepLabCut 3 training on the demo, tracked in MLflow (slow tests train)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.pg import free_port
from support.train import (
    assert_history_equals_stats,
    history,
    small_tables,
    tiny,
    train_killed_after_first_snapshot,
)

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.tracking.runs import mlflow_key
from poseops.train.project import prepare_dlc_project, training_frames
from poseops.train.trainer import train_model

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ fast
def test_mlflow_key_names_val_frames_as_val() -> None:
    assert mlflow_key("metrics/test.rmse") == "val.rmse"
    assert mlflow_key("losses/eval.total_loss") == "val.total_loss"
    assert mlflow_key("losses/train.total_loss") == "train.total_loss"


def test_training_frames_skip_unsplit_and_drop_unlabeled(caplog) -> None:
    """Frames not in the split (temporal-blocks leaves out the gap between splits) are not used,
    and said so; frames without a labeled keypoint are dropped."""
    labels = pd.DataFrame(
        {
            S.IMAGE: ["labeled-data/v/img1.png"] * 2 + ["labeled-data/v/img2.png"] * 2
            + ["labeled-data/v/img3.png"] * 2,
            S.VIDEO: "v",
            S.BODYPART: ["a", "b"] * 3,
            S.X: [1.0, 2.0, np.nan, np.nan, 3.0, 4.0],
            S.Y: [1.0, 2.0, np.nan, np.nan, 3.0, 4.0],
            S.SCORER: "consensus",
        }
    )
    split = pd.DataFrame(
        {S.IMAGE: [f"labeled-data/v/img{i}.png" for i in (1, 2, 3)], S.SPLIT: ["train", "train", "val"]}
    )
    frames = training_frames(labels, split)
    assert frames == {"train": ["labeled-data/v/img1.png"], "val": ["labeled-data/v/img3.png"], "test": []}
    with pytest.raises(PoseopsError, match="no labeled val"):
        training_frames(labels, split.iloc[:2])  # img3 (the val frame) not in the split
    assert "1 labeled image(s) are not in the split" in caplog.text and "img3.png" in caplog.text
    with pytest.raises(PoseopsError, match="no labeled val"):
        training_frames(labels, split.assign(split="train"))


def test_prepare_gives_dlc_train_and_val_frames_only(small_demo_root: Path, tmp_path: Path) -> None:
    """DLC's shuffle holds exactly our TRAIN frames as train and our VAL frames as its 'test';
    TEST frames are in no label file DLC reads; best-snapshot metric is validation RMSE."""
    import yaml
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader

    labels, split, project = small_tables(small_demo_root)
    ds = prepare_dlc_project(labels, split, project, tmp_path / "w", tiny())
    loader = DLCLoader(config=str(ds.config_path), shuffle=ds.shuffle, trainset_index=ds.trainset_index)
    want = {s: sorted(split.loc[split[S.SPLIT] == s, S.IMAGE]) for s in S.SPLITS}
    # DLC's own view: images of its train / test datasets
    dlc_train = sorted(loader.load_data(mode="train")["images"], key=lambda d: d["file_name"])
    dlc_test = sorted(loader.load_data(mode="test")["images"], key=lambda d: d["file_name"])

    def rel(d: dict) -> str:
        return Path(d["file_name"]).relative_to(ds.config_path.parent).as_posix()

    assert [rel(d) for d in dlc_train] == want["train"]
    assert [rel(d) for d in dlc_test] == want["val"]
    h5s = list((ds.config_path.parent / "labeled-data").glob("*/CollectedData_*.h5"))
    in_h5 = {"/".join(ix) for f in h5s for ix in pd.read_hdf(f).index}
    assert in_h5 == set(want["train"]) | set(want["val"])
    assert all((ds.config_path.parent / i).exists() for i in want["test"])  # for inference
    cfg = yaml.safe_load(ds.pytorch_config_path.read_text())
    assert cfg["runner"]["key_metric"] == "test.rmse" and cfg["runner"]["key_metric_asc"] is False
    # labels written under the config's scorer equal the consensus coordinates
    scorer = yaml.safe_load(ds.config_path.read_text())["scorer"]
    wide = pd.concat(pd.read_hdf(f) for f in h5s)
    row = labels[labels[S.IMAGE] == want["train"][0]].set_index(S.BODYPART)
    bp = row.index[0]
    got = wide.loc[tuple(want["train"][0].split("/")), (scorer, bp, "x")]
    assert got == pytest.approx(row.loc[bp, S.X], nan_ok=True)


# ------------------------------------------------------------------------------ slow: demo
@pytest.mark.slow
def test_trained_demo_run_params_metrics_artifacts(trained_demo) -> None:
    from mlflow import MlflowClient

    from poseops.train.trainer import flat_params

    res, uri = trained_demo.result, trained_demo.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for k, v in flat_params(trained_demo.params).items():
        assert params[k] == str(v), k
    tags = run.data.tags
    assert tags["net_type"] == "cspnext_s" and tags["shuffle"] == "1"
    for key in ("git_commit", "dataset_version", "dlc_iteration", "poseops_version"):
        assert tags[key]
    # one point per epoch, equal to DLC's learning_stats.csv
    stats = pd.read_csv(res.pytorch_config_path.parent / "learning_stats.csv")
    assert len(stats) == trained_demo.params.epochs
    assert_history_equals_stats(client, res.run_id, stats)
    # artifacts
    names = {f.path for d in ("train", "config", "snapshots") for f in client.list_artifacts(res.run_id, d)}
    assert {"train/learning_stats.csv", "train/train.txt", "config/pytorch_config.yaml"} <= names
    # the selected snapshot: the best by validation error, or the last when DLC kept no best
    # (a 2-epoch model's val rmse can be NaN throughout)
    assert f"snapshots/{res.snapshot.name}" in names
    # dataset input with the labels' digest
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest
    # registered model with the validation error
    mv = client.get_model_version("poseops-demo", res.model_version)
    assert float(mv.tags["val.rmse"]) == pytest.approx(res.metrics["val.rmse"], abs=1e-3, nan_ok=True)
    # run.json beside the model
    info = json.loads((trained_demo.workdir / "run.json").read_text())
    assert info["run_id"] == res.run_id and info["status"] == "complete"
    assert info["best_snapshot"] == str(res.best_snapshot)


@pytest.mark.slow
def test_pyfunc_model_predicts_like_dlc(trained_demo, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner
    from PIL import Image

    res = trained_demo.result
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_demo.tracking_uri)
    model = mlflow.pyfunc.load_model(res.model_uri)
    project = res.config_path.parent
    images = [str(project / i) for i in res.images["test"][:3]]
    pred = model.predict(images)
    bodyparts = ["snout", "leftear", "rightear", "tailbase"]
    assert list(pred.columns) == ["image", "individual", "bodypart", "x", "y", "likelihood"]
    assert len(pred) == len(images) * len(bodyparts)
    assert pred.groupby("image")["bodypart"].apply(list).tolist() == [bodyparts] * len(images)
    # same numbers as DLC's own inference runner on the same snapshot
    runner = get_pose_inference_runner(
        model_config=str(res.pytorch_config_path), snapshot_path=str(res.snapshot), device="cpu"
    )
    ref = np.concatenate([o["bodyparts"][0] for o in runner.inference(images)])
    np.testing.assert_allclose(pred[["x", "y", "likelihood"]].to_numpy(), ref, rtol=1e-4, atol=1e-3)
    # RGB arrays work too
    arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
    assert len(model.predict(arr)) == len(images) * len(bodyparts)


@pytest.mark.slow
def test_dlc_evaluate_network_runs_on_the_snapshot(trained_demo, tmp_path: Path) -> None:
    """DeepLabCut's own evaluation works on our working project (on a copy: fixture read-only)."""
    import shutil

    import deeplabcut
    import yaml

    res = trained_demo.result
    project = tmp_path / "project"
    shutil.copytree(res.config_path.parent, project)
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["project_path"] = str(project)
    (project / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    deeplabcut.evaluate_network(
        str(project / "config.yaml"), Shuffles=[res.shuffle], trainingsetindex=res.trainset_index,
        device="cpu",
    )
    out = list((project / "evaluation-results-pytorch").rglob("*-results.csv"))
    assert out, "evaluate_network wrote no results"
    table = pd.read_csv(out[0])
    assert np.isfinite(table["test rmse"]).all()  # DLC's "test" = our validation frames


# ------------------------------------------------------------------------------ slow: resume
@pytest.mark.slow
def test_resume_after_kill_continues_the_same_run(small_demo_root: Path, tmp_path: Path) -> None:

    from mlflow import MlflowClient

    labels, split, project = small_tables(small_demo_root)
    params = tiny(epochs=4)
    work, uri, stats = train_killed_after_first_snapshot(params, labels, split, project, tmp_path)

    killed_at = int(stats["step"].max())
    res = train_model(params, labels, split, project, work, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert [r.info.run_id for r in runs] == [res.run_id]
    resumed = int(client.get_run(res.run_id).data.tags["resumed_from_epoch"])
    assert 1 <= resumed <= killed_at
    assert client.get_run(res.run_id).info.status == "FINISHED"
    assert res.learning_stats["step"].tolist() == [1, 2, 3, 4]
    assert_history_equals_stats(client, res.run_id, res.learning_stats)


@pytest.mark.slow
def test_same_seed_same_learning_curve(small_demo_root: Path, tmp_path: Path) -> None:
    """Comparing two iterations means their difference is the data or the params, not chance:
    with ``pretrained: false`` the offline random init must be drawn from ``seed`` too."""
    labels, split, project = small_tables(small_demo_root)

    def curve(tag: str, seed: int) -> pd.DataFrame:
        res = train_model(tiny(epochs=1, seed=seed), labels, split, project, tmp_path / tag,
                          tracking_uri=f"sqlite:///{tmp_path / tag}.db")
        return res.learning_stats

    first, again, other = curve("a", 42), curve("b", 42), curve("c", 7)
    pd.testing.assert_frame_equal(first, again)
    loss = "losses/train.total_loss"
    assert first[loss].iloc[0] != other[loss].iloc[0], "the seed does not reach the weights"


@pytest.mark.slow
def test_pruning_callback_stops_training_and_marks_run(small_demo_root: Path, tmp_path: Path) -> None:
    import optuna
    from mlflow import MlflowClient

    labels, split, project = small_tables(small_demo_root)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen: list[tuple[int, float]] = []

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        seen.append((epoch, metrics["val.total_loss"]))
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        train_model(tiny(), labels, split, project, tmp_path / "w", epoch_callback=prune,
                    tracking_uri=uri, run_name="trial-0")
    assert [e for e, _ in seen] == [1]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
    assert run.info.run_name == "trial-0"
    assert [s for s, _ in history(client, run.info.run_id, "val.total_loss")] == [1]
    assert json.loads((tmp_path / "w" / "run.json").read_text())["status"] == "pruned"


# ------------------------------------------------------------------------------ slow: server
def _start_server(tmp: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
        "--artifacts-destination", str(tmp / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    log = (tmp / "server.log").open("a")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    import urllib.request

    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    _stop_server(proc)
    raise RuntimeError("mlflow server did not start: " + (tmp / "server.log").read_text()[-2000:])


def _stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
def test_server_killed_mid_run_loses_nothing(small_demo_root: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from poseops.commands.sync import run as sync

    labels, split, project = small_tables(small_demo_root)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    client = MlflowClient(tracking_uri=uri)

    def kill_server(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            deadline = time.time() + 60  # the run exists on the server before we kill it
            while time.time() < deadline:
                exp = client.get_experiment_by_name("t")
                if exp and client.search_runs([exp.experiment_id]):
                    break
                time.sleep(0.2)
            _stop_server(server)

    try:
        res = train_model(tiny(), labels, split, project, tmp_path / "w",
                          epoch_callback=kill_server, tracking_uri=uri)
    finally:
        _stop_server(server)
    assert res.learning_stats["step"].tolist() == [1, 2, 3]  # training finished
    assert res.tracking_pending > 0
    assert json.loads((tmp_path / "w" / "run.json").read_text())["tracking_pending"] > 0

    server = _start_server(tmp_path, port)
    try:
        out = sync(tmp_path / "w", timeout_s=60)
        assert out.pending == 0 and out.run_id == res.run_id
        run = client.get_run(res.run_id)
        assert run.info.status == "FINISHED"
        assert_history_equals_stats(client, res.run_id, res.learning_stats)
        info = json.loads((tmp_path / "w" / "run.json").read_text())
        assert info["model_uri"] and info["tracking_pending"] == 0
        assert client.get_model_version("t-model", info["model_version"])
    finally:
        _stop_server(server)


def _write_stage_inputs(demo_root: Path, folder: Path, train: dict) -> None:
    """consensus.parquet, split.csv and a params.yaml for the train stage, in ``folder``."""
    import yaml

    labels, split, project = small_tables(demo_root)
    labels.to_parquet(folder / "consensus.parquet")
    split.to_csv(folder / "split.csv", index=False)
    params = {"project": {"path": str(project)}, "consensus": {"out": "consensus.parquet"},
              "split": {"out": "split.csv"}, "train": train}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


# ------------------------------------------------------------------------------ slow: CLI stage
@pytest.mark.slow
def test_cli_train_stage_writes_run_json_and_metrics(
    small_demo_root: Path, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from poseops.cli import main

    _write_stage_inputs(small_demo_root, tmp_path, {
        "epochs": 3, "pretrained": False, "device": "cpu", "crop_width": 160, "crop_height": 120,
        "registered_model": None, "experiment": "cli"})
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-P", "epochs=1"]) == 0
    metrics = json.loads((tmp_path / "reports" / "train.json").read_text())
    info = json.loads((tmp_path / "data" / "train" / "run.json").read_text())
    assert info["status"] == "complete" and metrics["run_id"] == info["run_id"]
    run = MlflowClient(tracking_uri=mlflow_uri).get_run(info["run_id"])
    assert run.data.params["epochs"] == "1"
    assert metrics["val.total_loss"] == pytest.approx(run.data.metrics["val.total_loss"])
    assert main(["train", "-P", "nonsense=1"]) == 2


@pytest.mark.slow
def test_mlflow_ui_serves_the_trained_run(trained_demo, tmp_path: Path) -> None:
    """`mlflow ui/server` on the store shows the run: its REST API (what the UI calls) lists it
    with its val.rmse, and the UI page itself is served."""
    import urllib.request

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
           trained_demo.tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True,
                            cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        html = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "<html" in html.lower()
        exp = json.loads(urllib.request.urlopen(
            base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=poseops-tests",
            timeout=10).read())["experiment"]
        req = urllib.request.Request(
            base + "/api/2.0/mlflow/runs/search", method="POST",
            data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
        (run,) = [r for r in runs if r["info"]["run_id"] == trained_demo.result.run_id]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        stats = trained_demo.result.learning_stats
        # the loss is always finite; DLC's val rmse is NaN (sent as "NaN") while no prediction
        # of a young model matches a label
        assert metrics["val.total_loss"] == pytest.approx(stats["losses/eval.total_loss"].iloc[-1])
        assert float(metrics["val.rmse"]) == pytest.approx(
            stats["metrics/test.rmse"].iloc[-1], nan_ok=True)
    finally:
        _stop_server(proc)


@pytest.mark.slow
def test_mlflow_run_train_entry_point_logs_into_its_run(
    small_demo_root: Path, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run . -e train -P epochs=1 --env-manager local`: one run, the one MLflow made."""
    import shutil

    from mlflow import MlflowClient

    _write_stage_inputs(small_demo_root, tmp_path, {
        "registered_model": None, "experiment": "ignored-mlflow-run-chooses"})
    shutil.copy2(REPO / "MLproject", tmp_path / "MLproject")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(tmp_path), "-e", "train",
           "--env-manager", "local", "-P", "epochs=1", "-P", "device=cpu"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1" and "val.total_loss" in run.data.metrics
    info = json.loads((tmp_path / "data" / "train" / "run.json").read_text())
    assert info["run_id"] == run.info.run_id


# ------------------------------------------------------------------ per-epoch commit (no DLC)
class _Outbox:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def put(self, op: str, **kw) -> None:
        assert op == "log_metrics"
        self.steps.append(kw["step"])


class _Snapshots:
    def __init__(self, saved: set[int]) -> None:
        self.saved = saved

    def snapshots(self):
        from types import SimpleNamespace

        return [SimpleNamespace(epochs=e) for e in self.saved]


def test_epochs_are_logged_only_once_a_resumable_state_covers_them(tmp_path: Path) -> None:
    """A resume restarts after the last resumable state; epochs after it must not be in MLflow
    yet, or the re-run would log them twice. A long interval makes every epoch wait for the
    next DLC snapshot (or the last epoch); a zero interval logs each epoch at once."""
    from poseops.train.session import RESUME_FILE, TrainingSession

    out = _Outbox()
    s = TrainingSession(out, tmp_path, total_epochs=5, start_epoch=0, callback=None, best_metric=None,
                 resume_interval_s=3600)
    sm = _Snapshots(saved={3})
    for epoch in (1, 2):
        s.on_log({"losses/train.total_loss": 1.0 / epoch}, step=epoch)
        s.after_epoch(epoch, {"model": {}}, sm)
    assert out.steps == [] and not (tmp_path / RESUME_FILE).exists()
    s.after_epoch(3, {"model": {}}, sm)  # DLC's snapshot: epochs 1-3 are durable
    assert out.steps == [1, 2, 3]
    s.after_epoch(4, {"model": {}}, sm)
    s.after_epoch(5, {"model": {}}, sm)  # the last epoch is always durable
    assert out.steps == [1, 2, 3, 4, 5] and (tmp_path / RESUME_FILE).exists()

    eager = _Outbox()
    s = TrainingSession(eager, tmp_path, 5, 0, None, None, resume_interval_s=0)
    s.after_epoch(1, {"model": {}}, _Snapshots(set()))
    assert eager.steps == [1]


def test_a_pruned_run_keeps_the_epochs_it_ran(tmp_path: Path) -> None:
    import optuna

    from poseops.train.session import TrainingSession

    def prune(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise optuna.TrialPruned()

    out = _Outbox()
    s = TrainingSession(out, tmp_path, 5, 0, prune, None, resume_interval_s=3600)
    s.after_epoch(1, {"model": {}}, _Snapshots(set()))
    with pytest.raises(optuna.TrialPruned):
        s.after_epoch(2, {"model": {}}, _Snapshots(set()))
    assert out.steps == [1, 2]


def test_run_tags_the_md5_of_the_files_it_read_not_a_stale_dvc_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While `dvc repro` runs, dvc.lock still holds the previous run's md5 for the tables
    (the last match wins): the tags and the resume fingerprint must come from the bytes read."""
    import hashlib

    import yaml

    import poseops.commands.train as T
    from poseops.train.session import dataset_version

    (tmp_path / "data").mkdir()
    labels = pd.DataFrame({"image": ["a.png"], "x": [1.0]})
    labels.to_parquet(tmp_path / "data" / "consensus.parquet")
    pd.DataFrame({"image": ["a.png"], "split": ["train"]}).to_csv(tmp_path / "data" / "split.csv",
                                                                  index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "consensus": {"out": "data/consensus.parquet"}, "split": {"out": "data/split.csv"},
        "project": {"path": "data"}, "train": {"workdir": "w", "metrics": "m.json"}}))
    stale = {"stages": {
        "consensus": {"outs": [{"path": "data/consensus.parquet", "md5": "0" * 32}]},
        "train": {"deps": [{"path": "data/consensus.parquet", "md5": "1" * 32},
                           {"path": "data/split.csv", "md5": "2" * 32}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(stale))
    seen = {}

    def fake_train(params, labels, split, project, workdir, **kw):  # noqa: ANN001
        seen.update(kw["dvc_md5s"])
        seen["_version"] = dataset_version(labels, split, kw["dvc_md5s"])
        raise PoseopsError("stop")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(T, "train_model", fake_train)
    with pytest.raises(PoseopsError, match="stop"):
        T.run("params.yaml")
    md5 = {p: hashlib.md5((tmp_path / p).read_bytes()).hexdigest()
           for p in ("data/consensus.parquet", "data/split.csv")}
    assert {k: v for k, v in seen.items() if k != "_version"} == md5
    # a new labels table is a new dataset version (and fingerprint), whatever dvc.lock says
    before = seen["_version"]
    pd.DataFrame({"image": ["a.png"], "x": [2.0]}).to_parquet(tmp_path / "data" / "consensus.parquet")
    with pytest.raises(PoseopsError, match="stop"):
        T.run("params.yaml")
    assert seen["_version"] != before


def test_an_epoch_in_the_journal_is_never_logged_again(tmp_path: Path) -> None:
    """A logging callback error ends the run after its epochs were committed: the state saved
    must cover them (a resume starts after them), and a resumed session whose state is older
    than the journal must not log those epochs a second time."""

    import torch

    from poseops.tracking.outbox import Outbox
    from poseops.train.session import RESUME_FILE, TrainingSession

    def fail(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise RuntimeError("callback broke")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    box = Outbox(tmp_path / "tracking", dead)
    s = TrainingSession(box, tmp_path, 5, 0, fail, None, resume_interval_s=3600)
    for epoch in (1, 2):
        s.on_log({"losses/train.total_loss": 1.0 / epoch}, step=epoch)
        state = {"model": {}, "metadata": {"epoch": epoch}}
        if epoch == 2:
            with pytest.raises(RuntimeError, match="callback broke"):
                s.after_epoch(epoch, state, _Snapshots(set()))
        else:
            s.after_epoch(epoch, state, _Snapshots(set()))
    steps = [op["step"] for op in box._ops if op["op"] == "log_metrics"]
    assert steps == [1, 2]
    resume = tmp_path / RESUME_FILE
    assert resume.exists(), "the epochs just logged need a state a resume starts after"
    assert torch.load(resume, weights_only=False)["metadata"]["epoch"] == 2


def test_a_resumed_session_does_not_log_a_journaled_epoch_twice(tmp_path: Path) -> None:
    """The journal holds epochs 1-2 but the state a resume starts from is epoch 1's (its
    newer state was lost): epoch 2 is trained again, and must not reach MLflow twice."""

    from poseops.tracking.outbox import Outbox
    from poseops.train.session import TrainingSession

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    box = Outbox(tmp_path / "tracking", dead)
    for epoch in (1, 2):
        box.put("log_metrics", metrics={"train.total_loss": 1.0}, step=epoch, timestamp=epoch)
    again = Outbox(tmp_path / "tracking", dead)
    s = TrainingSession(again, tmp_path, 5, 1, None, None, resume_interval_s=0)
    for epoch in (2, 3):
        s.on_log({"losses/train.total_loss": 0.1}, step=epoch)
        s.after_epoch(epoch, {"model": {}, "metadata": {"epoch": epoch}}, _Snapshots(set()))
    assert [op["step"] for op in again._ops if op["op"] == "log_metrics"] == [1, 2, 3]


def test_a_corrupt_snapshot_is_set_aside_and_an_incompatible_one_stops_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from poseops.train.session import latest_state

    torch.save({"model": {}, "metadata": {"epoch": 1}}, tmp_path / "snapshot-001.pt")
    torch.save({"model": {"w": torch.zeros(256)}, "metadata": {"epoch": 2}},
               tmp_path / "snapshot-002.pt")
    data = (tmp_path / "snapshot-002.pt").read_bytes()
    (tmp_path / "snapshot-002.pt").write_bytes(data[: len(data) // 2])  # a kill while saving
    assert latest_state(tmp_path) == (tmp_path / "snapshot-001.pt", 1)
    kept = tmp_path / "snapshot-002.pt.corrupt"
    assert kept.read_bytes() == data[: len(data) // 2], "a corrupt state is moved, not deleted"
    assert not (tmp_path / "snapshot-002.pt").exists()

    # an intact file that this torch cannot load: kept, and the resume stops, naming it
    torch.save({"model": {}, "metadata": {"epoch": 3}}, tmp_path / "snapshot-003.pt")
    real_load = torch.load

    def load(path, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if Path(path).name == "snapshot-003.pt":
            raise RuntimeError("Unsupported checkpoint version 99 (saved by a newer torch)")
        return real_load(path, *a, **k)

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(PoseopsError, match=r"snapshot-003\.pt.*Unsupported checkpoint version") as e:
        latest_state(tmp_path)
    assert "\n" not in str(e.value)
    assert (tmp_path / "snapshot-003.pt").exists()
