"""Sweep samplers (issue 25): TPE with constant liar and multivariate for parallel workers, the
GP sampler for small budgets, and what a sweep's MLflow runs are called."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import optuna
import pandas as pd
import pytest

from poseops.config.sweep import SweepParams
from poseops.core import schema as S
from poseops.sweep.space import suggest
from poseops.sweep.study import build_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _value(point: dict) -> float:
    """A cheap objective: best near lr = 1e-3 with small batches."""
    return abs(math.log10(point["lr"]) + 3) + point["batch_size"] / 16


def _journal_study(tmp_path: Path, p: SweepParams) -> optuna.storages.JournalStorage:
    """A journal study with n_startup_trials finished random points, so that every worker's
    next suggestion comes from TPE's model (random start-up points ignore running trials)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))
    study = optuna.create_study(study_name="s", storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(p.n_startup_trials):
        trial = study.ask()
        study.tell(trial, _value(suggest(trial, p)))
    return storage


def _two_workers(storage, p: SweepParams, rounds: int = 6) -> list[tuple[dict, dict]]:
    """Two worker threads on one study, each with its own sampler (the same seed: the worst
    case for collisions). Each round, worker 0 asks, then worker 1 asks while worker 0's trial
    is still running; both sleep, then report. Returns the two points of each round."""
    turns = [threading.Semaphore(1), threading.Semaphore(0)]
    barrier = threading.Barrier(2, timeout=60)
    points: dict[int, list] = {r: [None, None] for r in range(rounds)}
    errors = []

    def worker(i: int) -> None:
        try:
            study = optuna.load_study(study_name="s", storage=storage,
                                      sampler=build_sampler(p, seed=1))
            for r in range(rounds):
                turns[i].acquire()
                trial = study.ask()
                point = suggest(trial, p)
                turns[1 - i].release()
                barrier.wait()  # both trials RUNNING
                points[r][i] = point
                barrier.wait()
                study.tell(trial, _value(point))
                barrier.wait()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return [tuple(v) for v in points.values()]


def test_parallel_workers_never_run_the_same_point_under_constant_liar(tmp_path):
    """With the default settings (sweep.constant_liar on) no two trials running at once share
    their params. The control: with constant_liar false, the second worker cannot see the first
    one's running trial and, with the same history and seed, samples the very same point."""
    p = SweepParams(n_startup_trials=4)
    pairs = _two_workers(_journal_study(tmp_path / "liar", p), p)
    assert len(pairs) == 6
    assert all(a != b for a, b in pairs), pairs
    p = SweepParams(n_startup_trials=4, constant_liar=False)
    pairs = _two_workers(_journal_study(tmp_path / "blind", p), p)
    assert sum(a == b for a, b in pairs) >= 3, pairs


def test_multivariate_tpe_models_the_params_jointly(tmp_path):
    """sweep.multivariate: TPE samples lr and batch_size from one joint model (a relative
    search space), or each on its own when false."""
    spaces = {}
    for flag in (True, False):
        p = SweepParams(n_startup_trials=2, multivariate=flag)
        study = optuna.create_study(sampler=build_sampler(p, seed=0))
        study.optimize(lambda t, p=p: _value(suggest(t, p)), n_trials=3)
        trial = study.ask()
        spaces[flag] = set(study.sampler.infer_relative_search_space(study, trial))
    assert spaces == {True: {"lr", "batch_size"}, False: set()}


def test_gp_sampler_runs_a_study_to_completion(tmp_path):
    p = SweepParams(sampler="gp", n_startup_trials=3)
    sampler = build_sampler(p, seed=0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda t: _value(suggest(t, p)), n_trials=8)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 8
    for t in study.trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["batch_size"] in (4, 8, 16)
    assert study.best_value == min(_value(t.params) for t in study.trials)


def _inputs(tmp_path):
    from poseops.sweep.space import TrainInputs

    labels = pd.DataFrame({S.IMAGE: ["a.png", "b.png"], S.WIDTH: [160, 160], S.HEIGHT: [120, 120]})
    split = pd.DataFrame({S.IMAGE: ["a.png", "b.png"], S.SPLIT: [S.TRAIN, S.VAL]})
    return TrainInputs(labels, split, tmp_path)


def test_a_gp_sweep_names_its_runs_and_tags_the_dvc_experiment(tmp_path, mlflow_uri, monkeypatch):
    """A whole (simulated-training) sweep with sampler gp: the parent run is named after the
    study, each trial `trial-<n> lr=<lr> bs=<batch size>`, the experiment opens in MLflow's
    model-training view, and under `dvc exp run` every run carries the experiment's name."""
    from mlflow.tracking import MlflowClient

    from poseops.config.train import TrainParams
    from poseops.sweep.worker import run_worker

    monkeypatch.setenv("DVC_EXP_NAME", "gp-grid")

    def train(params, labels, split, source_project, workdir, *, epoch_callback, **kw):
        for epoch in range(1, params.epochs + 1):
            epoch_callback(epoch, {"val.rmse": 100 * params.lr / epoch})

    p = SweepParams(storage=f"sqlite:///{tmp_path / 'o.db'}", n_trials=4, epochs=2,
                    sampler="gp", n_startup_trials=2, pruner="none", out=str(tmp_path / "sweep"),
                    experiment="gp-names", log_test=False)
    rep = run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=train)
    study = optuna.load_study(study_name=rep.study_name, storage=p.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    client = MlflowClient()
    exp = client.get_experiment_by_name("gp-names")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[rep.parent_run_id]
    assert parent.info.run_name == rep.study_name
    children = [r for r in runs.values() if r.info.run_id != rep.parent_run_id]
    assert len(children) == 4
    for run in children:
        t = study.trials[int(run.data.tags["poseops.sweep.trial"])]
        first, lr, bs = run.info.run_name.split(" ")
        assert first == f"trial-{t.number}"
        assert lr.startswith("lr=") and float(lr[3:]) == pytest.approx(t.params["lr"], rel=0.06)
        assert bs == f"bs={t.params['batch_size']}"
    assert {r.data.tags.get("dvc.exp_name") for r in runs.values()} == {"gp-grid"}


def test_promote_moves_champion_to_the_promoted_trials_model(tmp_path, mlflow_uri, monkeypatch):
    """`poseops sweep --promote`: the registered version made by the best trial's run becomes
    `@champion` (read back from the registry), and promoted_test.json names it."""
    import yaml
    from mlflow.tracking import MlflowClient
    from support.sweep_doubles import EPOCH_SECONDS_ENV, sleepy_train

    from poseops import cli
    from poseops.commands import sweep as command
    from poseops.config.loader import section
    from poseops.config.train import TrainParams
    from poseops.sweep.worker import run_worker

    monkeypatch.setenv(EPOCH_SECONDS_ENV, "0")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({
        "train": {"lr": 0.0005, "batch_size": 8, "epochs": 50, "device": "cpu"},
        "sweep": {"storage": f"sqlite:///{tmp_path / 'o.db'}", "n_trials": 2, "epochs": 2,
                  "pruner": "none", "enqueue": [{"lr": 3e-3, "batch_size": 8}],
                  "experiment": "champion-test", "out": str(out)},
    }))
    rep = run_worker(section("sweep", SweepParams, pfile), TrainParams(), _inputs(tmp_path),
                     train_fn=sleepy_train)
    client = MlflowClient()
    exp = client.get_experiment_by_name("champion-test").experiment_id
    runs = {int(r.data.tags["poseops.sweep.trial"]): r.info.run_id for r in client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{rep.parent_run_id}'")}
    client.create_registered_model("pose")
    versions = {n: client.create_model_version("pose", f"runs:/{rid}/model", run_id=rid).version
                for n, rid in sorted(runs.items())}  # as each trial's training registers one
    monkeypatch.setattr(command, "trial_test_metrics", lambda *a: {"test.rmse_px": 4.5})
    assert cli.main(["sweep", "--promote", "--params", str(pfile)]) == 0
    best = rep.best["number"]
    held = client.get_model_version_by_alias("pose", "champion")
    assert str(held.version) == str(versions[best]) and held.run_id == runs[best]
    doc = yaml.safe_load((out / "promoted_test.json").read_text())
    assert doc["champion"] == {"pose": str(versions[best])}
