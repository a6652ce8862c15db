"""`poseops sweep`: search space, pruners, race-free study, promote, and a small real sweep."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from poseops import cli
from poseops.commands.sweep import promote
from poseops.config.sweep import SweepParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.sweep.space import suggest
from poseops.sweep.study import build_pruner, no_improvement, open_storage, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------ search space and pruners


def test_suggest_samples_log_lr_within_bounds_and_listed_choices():
    p = SweepParams(
        lr=[1e-5, 1e-1],
        batch_size=[4, 16],
        epochs=[3, 6],
        net_type=["cspnext_s", "resnet_50"],
        augmentation={"motion_blur": [False, True], "hflip": [0.0, 0.5]},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    lrs = []
    for _ in range(200):
        t = study.ask()
        d = suggest(t, p)
        assert 1e-5 <= d["lr"] <= 1e-1
        assert d["batch_size"] in (4, 16) and d["epochs"] in (3, 6)
        assert d["net_type"] in ("cspnext_s", "resnet_50")
        assert d["motion_blur"] in (False, True) and d["hflip"] in (0.0, 0.5)
        lrs.append(d["lr"])
        study.tell(t, 0.0)
    # log-uniform: about half the draws below the geometric middle 1e-3 (a uniform draw
    # would put only ~1 % there)
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.35 < below < 0.65


def test_fixed_epoch_budget_is_not_a_search_dimension():
    study = optuna.create_study()
    t = study.ask()
    d = suggest(t, SweepParams(epochs=7))
    assert d["epochs"] == 7 and "epochs" not in t.params


@pytest.mark.parametrize(
    ("field", "value", "msg"),
    [
        ("pruner", "early", "sweep.pruner"),
        ("sampler", "grid", "sweep.sampler"),
        ("lr", [1e-2, 1e-4], "sweep.lr"),
        ("n_trials", 0, "sweep.n_trials"),
        ("percentile", 100.0, "sweep.percentile"),
    ],
)
def test_bad_settings_name_the_key(field, value, msg):
    with pytest.raises(PoseopsError, match=msg):
        SweepParams(**{field: value})


def _prune_step(
    pruner: optuna.pruners.BasePruner, values: list[float], n_before: int = 0
) -> int | None:
    """Report ``values`` (one per epoch) in a fresh trial (after ``n_before`` complete trials
    with a flat curve at 1.0); the 1-based epoch at which the pruner stops it, else None."""
    study = optuna.create_study(pruner=pruner)
    for _ in range(n_before):
        t = study.ask()
        for e in range(1, len(values) + 1):
            t.report(1.0, e)
        study.tell(t, 1.0)
    return _stop_epoch(study, values)


def _stop_epoch(study: optuna.Study, values: list[float]) -> int | None:
    """Report ``values`` (one per epoch) in a new trial of ``study``; the 1-based epoch at which
    its pruner stops the trial, else None."""
    t = study.ask()
    for e, v in enumerate(values, start=1):
        t.report(v, e)
        if t.should_prune():
            return e
    return None


def test_patience_pruner_stops_after_n_epochs_without_improvement():
    # the guide: no improvement for N evaluations -> stop. Best so far 5.0 at epoch 2; epochs
    # 3 and 4 do not beat it by min_delta 0.1 -> stopped at epoch 4 (patience 2).
    p = SweepParams(pruner="patience", patience=2, min_delta=0.1)
    assert _prune_step(build_pruner(p), [9.0, 5.0, 4.95, 5.2, 3.0, 2.0]) == 4
    # steady improvement is never stopped; a plateau is (Optuna's PatientPruner would not stop
    # it: it needs the recent values to be worse than the best)
    assert _prune_step(build_pruner(p), [9.0, 8.0, 7.0, 6.0, 5.0]) is None
    assert _prune_step(build_pruner(p), [9.0, 4.0, 4.0, 4.0, 4.0]) == 4


@pytest.mark.parametrize(
    ("values", "patience", "delta", "stop"),
    [
        ([3.0, 2.0], 2, 0.0, False),  # not enough evaluations yet
        ([3.0, 2.0, 2.5, 2.1], 2, 0.0, True),  # best 2.0 not beaten in the last 2
        ([3.0, 2.0, 2.5, 1.99], 2, 0.0, False),
        ([3.0, 2.0, 2.5, 1.99], 2, 0.05, True),  # 0.01 px is below min_delta
        ([3.0, float("nan"), 2.0], 1, 0.0, False),  # NaN evaluations are skipped
    ],
)
def test_no_improvement_rule(values, patience, delta, stop):
    assert no_improvement(values, patience, delta) is stop


def test_median_pruner_waits_for_startup_trials_and_warmup():
    p = SweepParams(pruner="median", n_startup_trials=2, n_warmup_steps=2)
    worse = [3.0, 3.0, 3.0, 3.0]
    assert _prune_step(build_pruner(p), worse, n_before=1) is None  # fewer than 2 finished
    assert _prune_step(build_pruner(p), worse, n_before=2) == 2  # epoch n_warmup_steps
    assert _prune_step(build_pruner(p), [0.5] * 4, n_before=2) is None  # better than median


def _finished(study: optuna.Study, curves: list[list[float]]) -> None:
    """Complete one trial per curve (asking the pruner each epoch, as a sweep does: successive
    halving records a trial's value at a rung only then; its verdict is ignored here)."""
    for curve in curves:
        t = study.ask()
        for e, v in enumerate(curve, start=1):
            t.report(v, e)
            t.should_prune()
        study.tell(t, min(curve))


def test_percentile_pruner_keeps_only_the_best_quarter():
    # four finished trials at 1, 2, 3, 4 px from epoch 2 on: the 25th percentile is 1.75 px
    # (numpy's linear interpolation); a trial whose best so far is above it stops at epoch 2
    p = SweepParams(pruner="percentile", percentile=25.0, n_startup_trials=4, n_warmup_steps=2)
    for best, stop in [(1.7, None), (1.8, 2), (2.5, 2)]:
        study = optuna.create_study(pruner=build_pruner(p))
        _finished(study, [[9.0] + [v] * 3 for v in (1.0, 2.0, 3.0, 4.0)])
        assert _stop_epoch(study, [9.0, best, best, best]) == stop, best


def test_sha_pruner_promotes_the_best_third_at_each_rung():
    # rungs at min_resource * reduction_factor**k epochs: 2, 6, 18. Six finished trials reached
    # the epoch-2 rung with 1..6 px; with the new one there are 7 competitors and only the best
    # 7 // 3 = 2 go on: 1.5 px is second (goes on to the epoch-6 rung), 2.5 px is third (stops).
    p = SweepParams(pruner="sha", min_resource=2, reduction_factor=3, epochs=12)
    pr = build_pruner(p)
    assert isinstance(pr, optuna.pruners.SuccessiveHalvingPruner)
    for value, stop in [(1.5, None), (2.5, 2)]:
        study = optuna.create_study(pruner=build_pruner(p))
        _finished(study, [[float(v), float(v)] for v in range(1, 7)])
        assert _stop_epoch(study, [value] * 3) == stop, value


def test_hyperband_budget_is_the_epoch_budget():
    pr = build_pruner(
        SweepParams(pruner="hyperband", epochs=27, min_resource=1, reduction_factor=3)
    )
    assert isinstance(pr, optuna.pruners.HyperbandPruner)
    assert pr._max_resource == 27 and pr._min_resource == 1
    wrapped = build_pruner(SweepParams(pruner="median", patience=3))
    assert isinstance(wrapped.wrapped, optuna.pruners.MedianPruner) and wrapped.patience == 3
    assert isinstance(build_pruner(SweepParams(pruner="none")), optuna.pruners.NopPruner)


# ------------------------------------------------------------------ study creation


def test_study_is_created_once_and_joined_by_later_workers(tmp_path):
    p = SweepParams(storage=f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}", seed=3)
    parents: list[str] = []

    def make_parent(name: str) -> tuple[str, str]:
        parents.append(name)
        return f"run-{len(parents)}", "exp-1"

    storage = open_storage(p)  # creates the folder and the tables
    first, pid1 = open_study(p, storage, "s", "fp-1", make_parent)
    second, pid2 = open_study(p, open_storage(p), "s", "fp-1", make_parent, wait_s=5)
    assert parents == ["s"]  # exactly one MLflow parent for the study
    assert pid1 == pid2 == "run-1"
    assert first._study_id == second._study_id
    assert second.user_attrs["mlflow_experiment_id"] == "exp-1"
    with pytest.raises(PoseopsError, match="another search space"):
        open_study(p, open_storage(p), "s", "fp-2", make_parent, wait_s=5)


def test_a_joiner_waits_for_the_parent_and_then_gives_up(tmp_path):
    p = SweepParams(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    storage = open_storage(p)
    optuna.create_study(storage=storage, study_name="orphan")  # creator died before the parent
    with pytest.raises(PoseopsError, match="no MLflow parent run"):
        open_study(p, storage, "orphan", "fp", lambda n: ("x", "y"), wait_s=1)


# ------------------------------------------------------------------ promote


PARAMS_TEXT = """\
# the project's parameters
train:
  net_type: cspnext_s   # backbone
  lr: 0.0005            # AdamW learning rate
  batch_size: 8
  epochs: 50
sweep:
  out: {out}
"""


def test_promote_copies_best_params_into_train_keeping_comments(tmp_path):
    out = tmp_path / "sweep"
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT.format(out=out))
    out.mkdir()
    (out / "best_params.yaml").write_text(
        yaml.safe_dump({"train": {"lr": 0.0021, "batch_size": 16, "epochs": 50}})
    )
    assert cli.main(["sweep", "--promote", "--params", str(params)]) == 0
    text = params.read_text()
    doc = yaml.safe_load(text)
    assert doc["train"] == {"net_type": "cspnext_s", "lr": 0.0021, "batch_size": 16, "epochs": 50}
    assert "# backbone" in text and "# the project's parameters" in text


def test_promote_without_a_sweep_names_the_missing_file(tmp_path):
    with pytest.raises(PoseopsError, match="best_params.yaml.*run `poseops sweep` first"):
        promote(tmp_path / "best_params.yaml", tmp_path / "params.yaml")


# ------------------------------------------------------------------ a small real sweep


@pytest.mark.slow
def test_real_sweep_on_the_demo(tmp_path, small_demo_root, mlflow_uri, monkeypatch):
    """Real DeepLabCut training (cspnext_s, CPU, 3-epoch budget): a sane learning rate, a
    hopeless one (0.5 with AdamW: the weights blow up, so its validation error is far above the
    first trial's and the median rule stops it after its first epoch) and one TPE draw. The
    objective here is the validation loss: on a model this young DLC's val rmse is mostly NaN
    (no prediction matched to a label), which would make every trial look equally bad."""
    from mlflow.tracking import MlflowClient

    from poseops.config.data import SplitParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.sweep import worker as SW

    project = small_demo_root / "raw" / "demo"
    labels = build_consensus(ingest_project(project, small_demo_root / "metadata" / "videos.csv"))
    split = make_split(labels, SplitParams(stratify_by=None))  # 6 videos: too few to stratify
    labels.to_parquet(tmp_path / "consensus.parquet", index=False)
    split.to_csv(tmp_path / "split.csv", index=False)
    budget = 3
    params = {
        "project": {"path": str(project)},
        "consensus": {"out": str(tmp_path / "consensus.parquet")},
        "split": {"out": str(tmp_path / "split.csv")},
        "train": {
            "net_type": "cspnext_s",
            "epochs": 50,
            "batch_size": 8,
            "pretrained": False,
            "device": "cpu",
            "save_epochs": 1,
            "experiment": "sweep-real",
            "workdir": str(tmp_path / "train"),
        },
        "sweep": {
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "n_trials": 3,
            "epochs": budget,
            "lr": [1e-4, 1.0],
            "batch_size": [8],
            "metric": "val.total_loss",
            "pruner": "median",
            "n_startup_trials": 1,
            "n_warmup_steps": 1,
            "enqueue": [{"lr": 1e-3}, {"lr": 0.5}],
            "out": str(tmp_path / "sweep"),
        },
    }
    pfile = tmp_path / "params.yaml"
    pfile.write_text("# sweep test\n" + yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "--params", str(pfile)]) == 0

    summary = yaml.safe_load((tmp_path / "sweep" / "summary.json").read_text())
    study = optuna.load_study(study_name=summary["study_name"], storage=params["sweep"]["storage"])
    trials = study.get_trials()
    assert len(trials) == 3
    states = {t.number: t.state.name for t in trials}
    assert states[0] == "COMPLETE"  # the only trial before pruning may start
    assert states[1] == "PRUNED", (
        f"lr=0.5 was not pruned: {[t.intermediate_values for t in trials]}"
    )

    client = MlflowClient()
    exp = client.get_experiment_by_name("sweep-real")
    parents = client.search_runs([exp.experiment_id], "tags.`poseops.sweep.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == summary["mlflow_parent_run_id"]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    # named trial-<n> plus the searched values (trial-0 lr=3e-4 bs=16)
    assert sorted(r.info.run_name.split(" ")[0] for r in children) == ["trial-0", "trial-1", "trial-2"]
    best_val = {}
    for run in children:
        n = int(run.data.tags["poseops.sweep.trial"])
        assert run.data.tags["poseops.sweep.state"] == states[n].lower()
        # per-epoch validation curve logged by the training into the child run
        hist = client.get_metric_history(run.info.run_id, "val.total_loss")
        epochs = sorted(m.step for m in hist)
        if states[n] == "PRUNED":
            assert len(epochs) < budget, f"pruned trial {n} trained {epochs}"
        else:
            assert epochs == list(range(1, budget + 1))
            best_val[n] = min(m.value for m in hist)
            # the objective is the validation error: its best epoch, not the test error
            assert study.trials[n].value == pytest.approx(best_val[n])
            assert not [k for k in run.data.metrics if SW.is_test_metric(k)]  # never on a trial
        assert run.data.metrics["epochs_trained"] == len(epochs)
        assert study.trials[n].user_attrs["epochs_trained"] == len(epochs)
    # best params file = the complete trial with the lowest validation error (from MLflow)
    best_n = min(best_val, key=best_val.get)
    best = yaml.safe_load((tmp_path / "sweep" / "best_params.yaml").read_text())["train"]
    assert best == {
        "lr": pytest.approx(study.trials[best_n].params["lr"]),
        "batch_size": 8,
        "epochs": budget,
    }
    assert parent.data.metrics["best_val_error"] == pytest.approx(best_val[best_n])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    for name in (
        "best_params.yaml",
        "summary.json",
        "trials.csv",
        "optimization_history.png",
        "parallel_coordinate.png",
    ):
        assert f"sweep/{name}" in arts, arts
    table = pd.read_csv(tmp_path / "sweep" / "trials.csv")
    assert table["epochs_trained"].sum() == summary["epochs_trained"]
    assert summary["epochs_trained"] < 3 * budget  # pruning saved compute
    # promote: the next `dvc repro` trains the best params
    assert cli.main(["sweep", "--promote", "--params", str(pfile)]) == 0
    promoted = yaml.safe_load(pfile.read_text())["train"]
    assert math.isclose(promoted["lr"], best["lr"]) and promoted["epochs"] == budget
    assert promoted["net_type"] == "cspnext_s"
    assert pfile.read_text().startswith("# sweep test")
    # trial copies cleaned up, except the promoted (best) one: promote measured its test error
    assert [d.name for d in (tmp_path / "sweep" / "trials").iterdir()] == [f"trial-{best_n}"]
    for run in children:
        n = int(run.data.tags["poseops.sweep.trial"])
        metrics = client.get_run(run.info.run_id).data.metrics
        assert ("test.mean_px" in metrics) == (n == best_n), (n, metrics)


# ------------------------------------------------------------------ the worker, in process


def _inputs(tmp_path):
    from poseops.sweep.space import TrainInputs

    labels = pd.DataFrame({S.IMAGE: ["a.png", "b.png"], S.WIDTH: [160, 160], S.HEIGHT: [120, 120]})
    split = pd.DataFrame({S.IMAGE: ["a.png", "b.png"], S.SPLIT: [S.TRAIN, S.VAL]})
    return TrainInputs(labels, split, tmp_path)


def test_nan_validation_error_counts_as_the_worst_error(tmp_path, mlflow_uri):
    """DLC reports NaN while no prediction matches a label: the sweep reports the image
    diagonal instead (160x120 -> 200 px), and the objective is the best finite epoch."""
    from mlflow.tracking import MlflowClient

    from poseops.config.train import TrainParams
    from poseops.sweep.worker import run_worker

    seen = []

    def train(params, labels, split, source_project, workdir, *, epoch_callback, **kw):
        seen.append((params.lr, params.batch_size, params.epochs, params.device, kw["run_name"]))
        for epoch, v in enumerate([float("nan"), 5.0, 4.0], start=1):
            epoch_callback(epoch, {"val.rmse": v, "val.total_loss": 0.1})

    p = SweepParams(
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        n_trials=1,
        epochs=3,
        pruner="none",
        out=str(tmp_path / "sweep"),
        experiment="nan-test",
        log_test=False,
    )
    rep = run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=train, device="cuda:3")
    study = optuna.load_study(study_name=rep.study_name, storage=p.storage)
    (t,) = study.trials
    assert t.intermediate_values == {1: 200.0, 2: 5.0, 3: 4.0}
    assert t.value == 4.0
    exp = math.floor(math.log10(t.params["lr"]))  # run names: trial-0 lr=3e-4 bs=16
    mant = f"{t.params['lr'] / 10**exp:.1f}".removesuffix(".0")
    name = f"trial-0 lr={mant}e{exp} bs={t.params['batch_size']}"
    assert seen == [(t.params["lr"], t.params["batch_size"], 3, "cuda:3", name)]
    # the training function made no MLflow run: the sweep made the child itself
    client = MlflowClient()
    (child,) = client.search_runs(
        [client.get_experiment_by_name("nan-test").experiment_id],
        f"tags.`mlflow.parentRunId` = '{rep.parent_run_id}'",
    )
    assert child.info.run_name == name and child.info.status == "FINISHED"
    assert child.data.tags["poseops.sweep.state"] == "complete"
    assert child.data.metrics["best_val_error"] == 4.0
    assert float(child.data.params["lr"]) == pytest.approx(t.params["lr"])


def test_a_worker_stops_when_its_trials_keep_failing(tmp_path, mlflow_uri):
    from poseops.config.train import TrainParams
    from poseops.sweep.worker import run_worker

    def broken(params, *args, **kw):
        raise RuntimeError("CUDA out of memory")

    p = SweepParams(
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        n_trials=5,
        out=str(tmp_path / "sweep"),
        max_consecutive_failures=2,
        experiment="fail-test",
    )
    with pytest.raises(PoseopsError, match="2 trials in a row failed"):
        run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=broken)
    (study,) = optuna.get_all_study_summaries(p.storage)
    states = [
        t.state.name
        for t in optuna.load_study(study_name=study.study_name, storage=p.storage).trials
    ]
    assert states == ["FAIL", "FAIL"]


def test_a_journal_file_is_shared_storage_too(tmp_path, mlflow_uri):
    """A plain file path (e.g. on an NFS share) selects Optuna's journal storage."""
    from poseops.config.train import TrainParams
    from poseops.sweep.study import open_storage
    from poseops.sweep.worker import run_worker

    def train(params, labels, split, source_project, workdir, *, epoch_callback, **kw):
        for epoch in range(1, params.epochs + 1):
            epoch_callback(epoch, {"val.rmse": 10.0 * params.lr / epoch})

    journal = tmp_path / "shared" / "optuna.log"
    p = SweepParams(
        storage=str(journal),
        n_trials=3,
        epochs=2,
        pruner="none",
        out=str(tmp_path / "sweep"),
        experiment="journal-test",
        log_test=False,
    )
    assert isinstance(open_storage(p), optuna.storages.JournalStorage)
    rep = run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=train)
    assert journal.stat().st_size > 0
    study = optuna.load_study(study_name=rep.study_name, storage=open_storage(p))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    best = min(study.trials, key=lambda t: t.value)
    assert best.value == pytest.approx(10.0 * best.params["lr"] / 2)
    doc = yaml.safe_load((tmp_path / "sweep" / "best_params.yaml").read_text())
    assert doc == {
        "train": {"lr": best.params["lr"], "batch_size": best.params["batch_size"], "epochs": 2}
    }


def test_a_trial_that_reached_its_last_epoch_completes(tmp_path, mlflow_uri):
    """Pruning saves epochs still to come: a trial worse than the median only at its final
    epoch has nothing left to save, so it completes with its value (not 'pruned')."""
    from poseops.config.train import TrainParams
    from poseops.sweep.worker import run_worker

    curves = iter([[5.0, 4.0], [4.5, 4.5]])  # trial 1 is worse than trial 0 only at epoch 2

    def train(params, labels, split, source_project, workdir, *, epoch_callback, **kw):
        for epoch, v in enumerate(next(curves), start=1):
            epoch_callback(epoch, {"val.rmse": v})

    p = SweepParams(storage=f"sqlite:///{tmp_path / 'o.db'}", n_trials=2, epochs=2,
                    pruner="median", n_startup_trials=1, n_warmup_steps=0,
                    out=str(tmp_path / "sweep"), experiment="last-epoch", log_test=False)
    rep = run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=train)
    study = optuna.load_study(study_name=rep.study_name, storage=p.storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.value for t in study.trials] == [4.0, 4.5]


# ------------------------------------------------------------------ test error: once, at promote


def test_trials_carry_no_test_error_and_promotion_reports_it_once(tmp_path, mlflow_uri,
                                                                  monkeypatch):
    """The sweep double's result carries a test metric (as a careless training function might):
    no trial run may show it. ``--promote`` measures the promoted trial's test error once, on
    that trial's run, from the working copy the sweep kept (only the best trial's)."""
    from mlflow.tracking import MlflowClient
    from support.sweep_doubles import EPOCH_SECONDS_ENV, sleepy_train

    from poseops.commands import sweep as command
    from poseops.config.loader import section
    from poseops.sweep.runs import TAG_PROMOTED
    from poseops.sweep.worker import run_worker

    monkeypatch.setenv(EPOCH_SECONDS_ENV, "0")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({
        "train": {"lr": 0.0005, "batch_size": 8, "epochs": 50, "device": "cpu"},
        "sweep": {"storage": storage, "n_trials": 4, "epochs": 2, "pruner": "none",
                  "enqueue": [{"lr": 3e-3, "batch_size": 8}], "experiment": "promote-test",
                  "out": str(out)},
    }))
    p = section("sweep", SweepParams, pfile)
    assert p.log_test
    from poseops.config.train import TrainParams

    rep = run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=sleepy_train)
    client = MlflowClient()
    exp = client.get_experiment_by_name("promote-test").experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{rep.parent_run_id}'")
    assert len(children) == 4
    for run in children:
        assert "best_val_error" in run.data.metrics
        assert not [k for k in run.data.metrics if "test" in k], run.data.metrics
    best = rep.best["number"]
    assert best == 0  # the enqueued point is the double's optimum
    # only the best trial's working copy is kept (for the one test evaluation)
    assert [d.name for d in (out / "trials").iterdir()] == [f"trial-{best}"]

    calls = []

    def measure(workdir, params_file, device):
        calls.append((Path(workdir).name, device))
        return {"test.mean_px": 3.25, "test.rmse_px": 4.5}

    monkeypatch.setattr(command, "trial_test_metrics", measure)
    for _ in range(2):  # promoting twice: still one look at the test set
        assert cli.main(["sweep", "--promote", "--params", str(pfile)]) == 0
    assert calls == [(f"trial-{best}", "cpu")]
    assert yaml.safe_load(pfile.read_text())["train"]["lr"] == pytest.approx(3e-3)
    runs = {int(r.data.tags["poseops.sweep.trial"]): r.info.run_id for r in children}
    for n, run_id in runs.items():
        metrics = client.get_run(run_id).data.metrics
        tests = {k: v for k, v in metrics.items() if "test" in k}
        if n == best:
            assert tests == {"test.mean_px": 3.25, "test.rmse_px": 4.5}
            assert len(client.get_metric_history(run_id, "test.rmse_px")) == 1
        else:
            assert tests == {}
    assert client.get_run(rep.parent_run_id).data.tags[TAG_PROMOTED] == str(best)
    assert not [k for k in client.get_run(rep.parent_run_id).data.metrics if "test" in k]
    doc = yaml.safe_load((out / "promoted_test.json").read_text())
    assert doc["trial"] == best and doc["metrics"]["test.rmse_px"] == 4.5


def test_promotion_without_the_best_trials_model_measures_nothing(tmp_path, mlflow_uri,
                                                                  monkeypatch):
    from support.sweep_doubles import EPOCH_SECONDS_ENV, sleepy_train

    from poseops.config.train import TrainParams
    from poseops.sweep import results as R
    from poseops.sweep import worker as SW

    monkeypatch.setenv(EPOCH_SECONDS_ENV, "0")
    p = SweepParams(storage=f"sqlite:///{tmp_path / 'o.db'}", n_trials=2, epochs=1,
                    pruner="none", out=str(tmp_path / "sweep"), experiment="no-copy",
                    log_test=False)
    SW.run_worker(p, TrainParams(), _inputs(tmp_path), train_fn=sleepy_train)
    assert not list((tmp_path / "sweep" / "trials").glob("*"))  # log_test off: nothing kept
    called = []
    got = R.report_promoted_test(p, measure=lambda *a: called.append(a) or {"test.x": 1.0})
    assert got is None and not called


@pytest.mark.parametrize("name, test", [("test.rmse_px", True), ("final_test.rmse", True),
                                        ("test_mean_px", True), ("val.rmse", False),
                                        ("final_val.rmse", False), ("latest_epoch", False)])
def test_test_metric_names(name, test):
    from poseops.sweep.worker import is_test_metric

    assert is_test_metric(name) is test


def test_a_removed_trial_copy_keeps_its_unsent_mlflow_operations(tmp_path: Path) -> None:
    """The sweep removes each finished trial's working copy; a journal still holding unsent
    MLflow operations (the server was away) must survive it, for `poseops sync`."""
    import socket

    from mlflow import MlflowClient

    from poseops.sweep.worker import tidy_trial_dirs
    from poseops.tracking.outbox import Outbox
    from poseops.tracking.sync import sync

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "sweep"
    trial = out / "trials" / "trial-0"
    box = Outbox(trial / "tracking", dead)
    box.put("create_run", experiment="e", run_name="trial-0")
    box.put("log_metrics", metrics={"val.rmse": 3.0}, step=1, timestamp=1)
    box.put("end_run", status="FINISHED")
    assert box.close(timeout_s=0) is False
    study = optuna.create_study()
    tidy_trial_dirs(study, SweepParams(out=str(out), log_test=False), 0, 3.0)
    assert not trial.exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = sync(out, uri=uri, timeout_s=5)
    assert res.pending == 0
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val.rmse")] == [3.0]
