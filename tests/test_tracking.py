"""poseops.tracking: the MLflow outbox keeps every operation until a store acknowledges it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from poseops.core.errors import PoseopsError
from poseops.tracking.outbox import Outbox
from poseops.tracking.runs import artifact_location, tracking_uri
from poseops.tracking.sync import sync


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _fill(box: Outbox, artifact: Path) -> None:
    box.put("create_run", experiment="offline", run_name="r1", tags={"net_type": "cspnext_s"})
    box.put("log_params", params={"epochs": 3, "lr": 0.001})
    for step, loss in ((1, 0.5), (2, 0.25), (3, 0.125)):
        box.put("log_metrics", metrics={"train.total_loss": loss}, step=step, timestamp=1000 + step)
    box.put("log_artifact", path=str(artifact), artifact_path="train")
    box.put("end_run", status="FINISHED")


def test_tracking_uri_prefers_explicit_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert tracking_uri() == "http://team:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_artifacts_live_beside_the_database(tmp_path: Path) -> None:
    loc = artifact_location(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    assert loc == (tmp_path / "mlruns" / "exp").as_uri()
    assert artifact_location("http://server:5000", "exp") is None


def test_unreachable_server_keeps_everything_then_sync_sends_it(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    artifact = tmp_path / "learning_stats.csv"
    artifact.write_text("step,loss\n1,0.5\n")
    work = tmp_path / "train"
    box = Outbox(work / "tracking", _dead_uri())
    _fill(box, artifact)
    assert box.close(timeout_s=0) is False
    assert len(box.pending) == 7 and box.run_id is None
    # a new process sees the same pending operations (journal on disk)
    assert len(Outbox(work / "tracking").pending) == 7
    with pytest.raises(PoseopsError, match="still pending"):
        sync(work, timeout_s=0)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = sync(work, uri=uri, timeout_s=10)
    assert res.pending == 0 and res.sent == 7
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params == {"epochs": "3", "lr": "0.001"}
    hist = sorted((m.step, m.value) for m in client.get_metric_history(res.run_id, "train.total_loss"))
    assert hist == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert [f.path for f in client.list_artifacts(res.run_id, "train")] == ["train/learning_stats.csv"]
    # sending again sends nothing twice
    again = sync(work, uri=uri, timeout_s=10)
    assert again.sent == 0
    assert len(client.get_metric_history(res.run_id, "train.total_loss")) == 3


def test_an_unknown_operation_is_refused_when_queued(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "t", _dead_uri())
    box.put("log_params", params={"a": 1})
    before = box.journal.read_bytes()
    with pytest.raises(ValueError, match="log_metric'"):
        box.put("log_metric", metrics={"loss": 1.0}, step=1, timestamp=1)  # a typo
    assert box.journal.read_bytes() == before
    assert [op["op"] for op in box.pending] == ["log_params"]


def test_truncated_journal_line_is_skipped(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "t", _dead_uri())
    box.put("log_params", params={"a": 1})
    with box.journal.open("a") as f:
        f.write('{"seq": 2, "op": "log_met')  # a kill in the middle of a write
    again = Outbox(tmp_path / "t")
    assert [op["seq"] for op in again.pending] == [1]
    assert json.loads(again.state_path.read_text())["sent"] == 0


def test_json_outputs_are_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    import math

    import numpy as np

    from poseops.core.fileio import write_json

    obj = {"a": float("nan"), "b": np.float64("inf"), "c": [1.5, np.nan, {"d": -math.inf}],
           "e": np.array([np.nan, 2.0]), "f": np.int64(3), "g": "NaN"}
    text = write_json(obj, tmp_path / "m.json").read_text()

    def refuse(const: str) -> None:
        raise ValueError(const)

    back = json.loads(text, parse_constant=refuse)  # RFC 8259: no NaN / Infinity literals
    assert back == {"a": None, "b": None, "c": [1.5, None, {"d": None}], "e": [None, 2.0],
                    "f": 3, "g": "NaN"}


class _StackingRunner:
    """Mimics DeepLabCut's inference runner: images are preprocessed, then stacked into
    batches of ``batch_size`` with ``np.stack`` (torch.stack in DLC), which fails on two sizes;
    each ``inference`` call flushes its last partial batch."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.calls = batch_size, []

    def inference(self, images: list) -> list[dict]:
        import numpy as np

        self.calls.append(len(images))
        arrays = [np.zeros((im.shape[0], im.shape[1])) for im in images]
        out = []
        for start in range(0, len(arrays), self.batch_size):
            batch = np.stack(arrays[start:start + self.batch_size])  # raises on mixed sizes
            out += [{"bodyparts": np.full((1, 1, 3), b.shape[1], float)} for b in batch]
        return out


def test_inference_batches_images_of_one_size_and_keeps_the_order() -> None:
    import numpy as np

    from poseops.dlc.inference import inference_by_size
    from poseops.train.model import predict_images

    sizes = [(48, 64), (30, 40), (48, 64), (30, 40), (30, 40)]  # (h, w) of two cameras
    images = [np.zeros((h, w, 3), np.uint8) for h, w in sizes]
    runner = _StackingRunner(batch_size=8)
    with pytest.raises(ValueError):
        runner.inference(images)  # what DLC does with a mixed list
    out = inference_by_size(runner, images)
    assert [int(o["bodyparts"][0, 0, 0]) for o in out] == [w for _, w in sizes]  # input order
    assert sorted(runner.calls[1:]) == [2, 3]  # one call per size
    table = predict_images(_StackingRunner(8), images, ["snout"], ["animal"])
    assert list(table["x"]) == [64.0, 40.0, 64.0, 40.0, 40.0]


def test_multianimal_predictions_name_assemblies_like_dlc() -> None:
    """The k-th assembly is the k-th individual (``individual<k>`` past the list), the unique
    bodyparts come under ``single``; the evaluate table numbers them (-1: unique)."""
    import numpy as np

    from poseops.dlc.inference import assemblies_table
    from poseops.train.model import predict_images

    pose = np.arange(3 * 2 * 3, dtype=float).reshape(3, 2, 3)  # 3 assemblies, 2 bodyparts
    out = {"bodyparts": pose, "unique_bodyparts": np.array([[[7.0, 8.0, 0.9]]])}

    class Runner:
        def inference(self, images: list) -> list[dict]:
            return [out for _ in images]

    table = predict_images(Runner(), np.zeros((1, 4, 4, 3), np.uint8), ["snout", "tail"],
                           ["a1", "a2"], ["corner"])
    assert list(table["individual"]) == ["a1", "a1", "a2", "a2", "individual2", "individual2",
                                         "single"]
    assert list(table.columns) == ["image", "individual", "bodypart", "x", "y", "likelihood"]
    assert table.iloc[-1][["x", "y", "likelihood"]].tolist() == [7.0, 8.0, 0.9]
    numbered = assemblies_table(["img.png"], [out], ["snout", "tail"], ["corner"])
    assert list(numbered["assembly"]) == [0, 0, 1, 1, 2, 2, -1]
    assert numbered[["x", "y", "likelihood"]].to_numpy().tolist() == \
        table[["x", "y", "likelihood"]].to_numpy().tolist()


# ------------------------------------------------------------------------------ nothing lost
def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_refused_operation_blocks_with_its_name_then_skip_failed_skips_it(tmp_path: Path) -> None:
    """A permanent 4xx answer is not 'server unreachable': the journal stops at that op with a
    one-line error naming it, and only `sync --skip-failed` skips it (recorded)."""
    from mlflow import MlflowClient

    work = tmp_path / "train"
    box = Outbox(work / "tracking", _sqlite(tmp_path))
    box.put("create_run", experiment="e", run_name="r")
    box.put("set_tags", tags={"k" * 300: "too long a key"})  # MLflow answers 400
    box.put("log_metrics", metrics={"train.total_loss": 0.5}, step=1, timestamp=1)
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=0) is False
    assert box.blocked is not None and box.blocked["seq"] == 2
    assert "refused operation #2 set_tags" in (box.last_error or "")
    assert "\n" not in box.last_error and "--skip-failed" in box.last_error
    with pytest.raises(PoseopsError, match="refused operation #2 set_tags"):
        sync(work, timeout_s=0)
    res = sync(work, timeout_s=5, skip_failed=True)
    assert res.pending == 0 and res.skipped == 1 and res.sent == 2
    state = json.loads((work / "tracking" / "state.json").read_text())
    assert [s["seq"] for s in state["skipped"]] == [2] and "failed" not in state
    client = MlflowClient(tracking_uri=_sqlite(tmp_path))
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(res.run_id, "train.total_loss")] == [0.5]


def test_transient_and_permanent_errors_are_told_apart() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INTERNAL_ERROR,
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    from poseops.tracking.outbox import is_permanent

    assert is_permanent(MlflowException("bad", INVALID_PARAMETER_VALUE))
    assert is_permanent(MlflowException("gone", RESOURCE_DOES_NOT_EXIST))
    assert not is_permanent(MlflowException("API request failed: Max retries exceeded"))  # 500
    assert not is_permanent(MlflowException("x", INTERNAL_ERROR))
    assert not is_permanent(MlflowException("x", TEMPORARILY_UNAVAILABLE))
    assert not is_permanent(ConnectionError("refused")) and not is_permanent(TimeoutError())


def test_a_replayed_create_run_finds_the_run_its_lost_answer_made(tmp_path: Path) -> None:
    """The server made the run but the answer was lost (state.json has no run id): the replay
    must adopt that run (client-side id tag), not make a second one."""
    from mlflow import MlflowClient

    from poseops.tracking.runs import ensure_experiment

    uri = _sqlite(tmp_path)
    box = Outbox(tmp_path / "t", _dead_uri())
    box.put("create_run", experiment="e", run_name="r", tags={"a": "1"})
    box.put("end_run", status="FINISHED")
    cid = box._ops[0].get("client_run_id")
    assert cid, "the client-side run id must be in the journal before the create is sent"
    client = MlflowClient(tracking_uri=uri)
    first = client.create_run(ensure_experiment(client, "e", uri), run_name="r",
                              tags={"poseops.client_run_id": cid})  # the attempt whose answer was lost
    box2 = Outbox(tmp_path / "t", uri)
    assert box2.close(timeout_s=5)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert [r.info.run_id for r in runs] == [first.info.run_id] == [box2.run_id]
    assert runs[0].info.status == "FINISHED"


def test_a_replayed_registration_finds_the_version_its_lost_answer_made(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = _sqlite(tmp_path)
    box = Outbox(tmp_path / "t", uri)
    box.put("create_run", experiment="e", run_name="r")
    assert box.flush_once()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = f"runs:/{box.run_id}/model"
    client.create_registered_model("m")
    client.create_model_version("m", source, run_id=box.run_id, tags={"run_id": box.run_id})
    box.state["model_uri"] = source
    box.put("register_model", name="m", tags={"val.rmse": "1.0"})
    assert box.close(timeout_s=5)
    versions = client.search_model_versions("name = 'm'")
    assert [str(v.version) for v in versions] == ["1"] and box.state["model_version"] == "1"


def test_one_process_at_a_time_sends_a_journal(tmp_path: Path) -> None:
    import fcntl

    box = Outbox(tmp_path / "t", _sqlite(tmp_path))
    box.lock_wait_s = 0.2
    box.put("create_run", experiment="e", run_name="r")
    with (tmp_path / "t" / "send.lock").open("a") as other:  # e.g. `poseops sync` sending now
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        assert box.flush_once() is False
        assert "another process is sending" in (box.last_error or "")
        assert box.run_id is None
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    assert box.flush_once() and box.run_id


def test_a_process_takes_over_what_another_one_sent(tmp_path: Path) -> None:
    """`poseops sync` sent the journal while training ran: training's sender must not send the
    same operations again (it reads the shared progress under the lock)."""
    from mlflow import MlflowClient

    uri = _sqlite(tmp_path)
    training = Outbox(tmp_path / "train" / "tracking", uri)
    training.put("create_run", experiment="e", run_name="r")
    training.put("log_metrics", metrics={"loss": 1.0}, step=1, timestamp=1)
    sync(tmp_path / "train", uri=uri, timeout_s=5)
    training.put("log_metrics", metrics={"loss": 0.5}, step=2, timestamp=2)
    assert training.close(timeout_s=5)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert len(runs) == 1
    assert [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [
        (1, 1.0), (2, 0.5)]


def test_a_new_training_sets_unsent_operations_aside_for_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new (non-resume) training in a workdir whose journal still holds unsent operations
    must keep them (and the files they upload) where `poseops sync` sends them."""
    import pandas as pd
    from mlflow import MlflowClient

    import poseops.train.trainer as T

    work = tmp_path / "train"
    stats = work / "project" / "learning_stats.csv"
    stats.parent.mkdir(parents=True)
    stats.write_text("step,loss\n1,0.5\n")
    old = Outbox(work / "tracking", _dead_uri())
    old.put("create_run", experiment="e", run_name="old")
    old.put("log_metrics", metrics={"loss": 0.5}, step=1, timestamp=1)
    old.put("log_artifact", path=str(stats), artifact_path="train")
    old.put("end_run", status="FINISHED")
    assert old.close(timeout_s=0) is False

    def stop(*a, **k):  # noqa: ANN002, ANN003 - the new training rebuilds the project here
        import shutil

        shutil.rmtree(work / "project")
        raise PoseopsError("stop")

    monkeypatch.setattr(T, "prepare_dlc_project", stop)
    labels = pd.DataFrame({"image": ["a.png"], "scorer": ["s"], "x": [1.0]})
    split = pd.DataFrame({"image": ["a.png"], "split": ["train"]})
    with pytest.raises(PoseopsError, match="stop"):
        T.train_model(T.TrainParams(), labels, split, tmp_path, work, tracking_uri=_dead_uri())
    uri = _sqlite(tmp_path)
    res = sync(work, uri=uri, timeout_s=5)
    assert res.pending == 0 and res.journals == 1
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert run.info.run_name == "old" and run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
    assert [f.path for f in client.list_artifacts(run.info.run_id, "train")] == [
        "train/learning_stats.csv"]
    assert not list((work / "tracking-pending").glob("*")), "a sent journal is not kept"


def test_a_replayed_log_model_adopts_the_model_its_lost_answer_made(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = _sqlite(tmp_path)
    box = Outbox(tmp_path / "t", uri)
    box.put("create_run", experiment="e", run_name="r")
    assert box.flush_once()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e").experiment_id
    made = client.create_logged_model(exp, name="model", source_run_id=box.run_id)
    client.finalize_logged_model(made.model_id, "READY")  # uploaded; the answer was lost
    box.put("log_model", pytorch_config=str(tmp_path / "missing.yaml"),
            snapshot=str(tmp_path / "missing.pt"))  # logging it again would fail here
    assert box.close(timeout_s=5)
    assert box.state["model_uri"] == f"models:/{made.model_id}"
    assert len(client.search_logged_models([exp])) == 1


def test_sync_command_sends_a_buffered_journal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from poseops.cli import main

    work = tmp_path / "train"
    box = Outbox(work / "tracking", _dead_uri())
    box.put("create_run", experiment="e", run_name="r")
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=0) is False
    uri = _sqlite(tmp_path)
    assert main(["sync", "--workdir", str(work), "--tracking-uri", uri, "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synced run ") and "2 operation(s) sent, 0 pending" in out


# ------------------------------------------------------------------ issue 25: model-centric MLflow


def test_experiments_poseops_uses_open_in_the_model_training_view(tmp_path: Path) -> None:
    """MLflow 3's UI shows untagged experiments in its GenAI view: the experiment a training
    creates through the outbox, and an older untagged one it logs into, carry
    mlflow.experimentKind = custom_model_development; a kind chosen by hand is kept."""
    from mlflow import MlflowClient

    uri = _sqlite(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    chosen = client.create_experiment("genai", artifact_location=(tmp_path / "b").as_uri(),
                                      tags={"mlflow.experimentKind": "genai_development"})
    for i, name in enumerate(("fresh", "old", "genai")):
        box = Outbox(tmp_path / f"t{i}", uri)
        box.put("create_run", experiment=name, run_name="r")
        box.put("end_run", status="FINISHED")
        assert box.close(timeout_s=10)
    kinds = {e.name: e.tags.get("mlflow.experimentKind") for e in client.search_experiments()}
    assert kinds["fresh"] == kinds["old"] == "custom_model_development"
    assert kinds["genai"] == "genai_development"
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_run_names_say_what_the_run_is() -> None:
    from poseops.tracking.runs import training_run_name, trial_run_name

    assert training_run_name("openfield", 2, "cspnext_s") == "openfield-it2-cspnext_s"
    assert trial_run_name(7, {"lr": 3e-4, "batch_size": 16}) == "trial-7 lr=3e-4 bs=16"
    assert trial_run_name(3, {"lr": 1.24e-3, "batch_size": 8, "net_type": "resnet_50",
                              "hflip": 0.5}) == "trial-3 lr=1.2e-3 bs=8 net=resnet_50 hflip=0.5"
    assert trial_run_name(0) == "trial-0"


def test_dvc_experiment_name_comes_from_the_variable_dvc_exp_run_sets() -> None:
    """`dvc exp run` puts DVC_EXP_NAME (and DVC_EXP_BASELINE_REV) in the stage's environment
    (dvc/repo/experiments/queue/base.py); outside it there is no tag."""
    import dvc.env

    from poseops.tracking.runs import dvc_tags

    env = {dvc.env.DVC_EXP_NAME: "lr-grid-1", dvc.env.DVC_EXP_BASELINE_REV: "abc123"}
    assert dvc_tags(env) == {"dvc.exp_name": "lr-grid-1", "dvc.exp_baseline_rev": "abc123"}
    assert dvc_tags({}) == {}


def _run_with_model(client, exp_id: str, name: str) -> tuple[str, str]:
    run = client.create_run(exp_id, run_name=name)
    model = client.create_logged_model(exp_id, name="model", source_run_id=run.info.run_id)
    client.finalize_logged_model(model.model_id, "READY")
    return run.info.run_id, model.model_id


def test_held_out_errors_are_linked_to_the_model_and_its_evaluation_datasets(tmp_path: Path) -> None:
    """The evaluate stage's val/test errors land on the LoggedModel (model_id) tied to the
    frames they were measured on (run inputs with digests), so search_logged_models ranks the
    models of an experiment by test error."""
    import pandas as pd
    from mlflow import MlflowClient

    from poseops.tracking.runs import add_test_metrics, ensure_experiment

    uri = _sqlite(tmp_path)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = ensure_experiment(client, "models", uri)
    frames = {
        "val": pd.DataFrame({"image": ["v/a.png", "v/b.png"], "bodypart": ["nose"] * 2,
                             "x": [1.0, 2.0], "y": [3.0, 4.0]}),
        "test": pd.DataFrame({"image": ["t/c.png"], "bodypart": ["nose"], "x": [5.0], "y": [6.0]}),
    }
    errors = {"worse": 4.0, "better": 2.5, "middle": 3.0}
    ids = {}
    for name, test_px in errors.items():
        run_id, model_id = _run_with_model(client, exp, name)
        ids[model_id] = name
        add_test_metrics(run_id, {"val.rmse_px": test_px - 1, "test.rmse_px": test_px,
                                  "gap.rmse_pct": 10.0}, uri=uri, model_id=model_id,
                         datasets=frames)
    ranked = client.search_logged_models([exp], order_by=[
        {"field_name": "metrics.test.rmse_px", "ascending": True}])
    assert [ids[m.model_id] for m in ranked] == ["better", "middle", "worse"]
    best = client.get_logged_model(ranked[0].model_id)
    linked = {m.key: m for m in best.metrics}
    assert linked["test.rmse_px"].value == 2.5 and linked["val.rmse_px"].value == 1.5
    run = client.get_run(best.source_run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"val-frames", "test-frames"}
    contexts = {n: {t.key: t.value for t in d.tags}["mlflow.data.context"] for n, d in inputs.items()}
    assert contexts == {"val-frames": "val", "test-frames": "test"}
    for split in ("val", "test"):
        m = linked[f"{split}.rmse_px"]
        assert m.dataset_name == f"{split}-frames"
        assert m.dataset_digest == inputs[f"{split}-frames"].dataset.digest
    assert inputs["val-frames"].dataset.digest != inputs["test-frames"].dataset.digest
    assert linked["gap.rmse_pct"].dataset_name is None  # a gap belongs to no single split
    assert run.data.metrics["test.rmse_px"] == 2.5  # and on the run, as before
    # ranked on one dataset only: the test frames
    on_test = client.search_logged_models([exp], datasets=[{"dataset_name": "test-frames"}],
                                          order_by=[{"field_name": "metrics.test.rmse_px",
                                                     "ascending": False}])
    assert [ids[m.model_id] for m in on_test] == ["worse", "middle", "better"]


def test_the_pose_model_declares_its_signature(tmp_path: Path, mlflow_uri: str) -> None:
    """The pyfunc model says what it returns (the keypoint table, as its signature's outputs) and
    what it takes (paths or arrays: no input schema, which MLflow would enforce on every call,
    but the model's metadata says it), read back from the model's MLmodel file."""
    import mlflow
    import yaml

    from poseops.train.model import log_pose_model

    cfg, snap = tmp_path / "pytorch_config.yaml", tmp_path / "snapshot-001.pt"
    cfg.write_text("metadata: {bodyparts: [nose]}\n")
    snap.write_bytes(b"not a real snapshot")
    with mlflow.start_run():
        info = log_pose_model(cfg, snap)
    from urllib.parse import urlparse

    location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    mlmodel = yaml.safe_load((Path(urlparse(location).path) / "MLmodel").read_text())
    assert mlmodel["signature"]["inputs"] is None
    assert "image paths" in mlmodel["metadata"]["input"] and "arrays" in mlmodel["metadata"]["input"]
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("image", "string"), ("individual", "string"), ("bodypart", "string"),
        ("x", "double"), ("y", "double"), ("likelihood", "double")]
