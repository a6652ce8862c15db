"""The whole iteration as a new user runs it: a copy of this repository, the README's demo steps
(`poseops demo`, `poseops init --in-place`, `dvc repro`), then what DVC and MLflow must show.

Slow (real DeepLabCut training, 2 epochs on the demo at 160x120 on the CPU).

The user's metadata CSV gets a second camera (by animal) and a new column `arena`, and params.yaml
three generalisation cohorts (issue 24): the same one `dvc repro` evaluates them side by side with
the standard test set and stratifies by the new columns, checked here from the files on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.e2e import BIN, STAGES, clone_repo, sh, user_env
from support.pg import free_port

from poseops.config.loader import update_params

# issue 24: the demo's 4 animals x 3 sessions, condition = a crossover; first matching cohort wins
# (m4's s3 and high_dose videos are new_animal): 8 of the 12 labeled videos are held out, 4 remain
COHORTS = {"new_animal": {"animal": "m4"}, "new_session": {"session": "s3"},
           "new_condition": {"condition": ["high_dose"]}}
CAMERA_OF_ANIMAL = {"m1": "top", "m2": "side", "m3": "top", "m4": "side"}  # two cameras


def _lab_metadata(path: Path) -> pd.DataFrame:
    """What a lab's metadata CSV says: a second camera, and a column no code knows (``arena``)."""
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    meta["camera"] = meta["animal"].map(CAMERA_OF_ANIMAL)
    meta["arena"] = np.where(meta["session"] == "s1", "A", "B")
    meta.to_csv(path, index=False)
    return meta


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    env = user_env()
    repo = clone_repo(tmp_path_factory.mktemp("clone"), env)
    return repo, env, demo_iteration(repo, env)


def demo_iteration(repo: Path, env: dict[str, str]) -> str:
    """The README's demo steps in ``repo`` with a lab's metadata and three cohorts: the log."""
    # keep the real training tiny; everything else as the README's `make demo`
    update_params({"train": {"epochs": 2, "save_epochs": 1}}, repo / "params.yaml")
    sh(["poseops", "demo"], repo, env)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    _lab_metadata(repo / p["project"]["metadata"])
    sh(["poseops", "init", "data/raw/demo", "--in-place", "--keep-metadata",
        "--remote", str(repo.parent / "remote")], repo, env)
    # three cohorts beside the test set (4 videos left: too few to stratify by condition), the new
    # columns as strata (params only), a cohort drop limit the GE suite checks (never reached)
    update_params({"split": {"cohorts": COHORTS, "stratify_by": None},
                   "evaluate": {"strata": [*p["evaluate"]["strata"], "camera", "arena"],
                                "max_cohort_drop_pct": 1.0e6}}, repo / "params.yaml")
    return sh(["dvc", "repro"], repo, env)


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
    # the standard splits and, beside them, the three cohorts (tested below)
    assert set(split["split"]) == {"train", "val", "test"} | {f"cohort:{c}" for c in COHORTS}
    assert split.groupby("video")["split"].nunique().max() == 1  # no video in two splits
    metrics = json.loads((repo / p["evaluate"]["metrics"]).read_text())
    assert metrics, "evaluate wrote no metrics"
    html = (repo / p["report"]["out"]).read_text()
    assert "<img" in html and "http://" not in html.replace("http://www.w3.org", "")
    run = json.loads((repo / p["train"]["workdir"] / "run.json").read_text())
    assert run["run_id"]


def _expected_cohorts(meta: pd.DataFrame) -> dict[str, str]:
    """video -> its cohort, from the metadata CSV alone (the first listed filter it matches)."""
    out = {}
    for _, row in meta.iterrows():
        for name, filt in COHORTS.items():
            if all(row[col] in ([v] if isinstance(v, str) else v) for col, v in filt.items()):
                out[row["video"]] = name
                break
    return out


def _dlc_training_images(workdir: Path) -> tuple[set[str], set[str], set[str]]:
    """What DeepLabCut was given, read from its own files: the images of its training set and
    of its test (= our val) set (Documentation_data-*.pickle: entries, trainIndices,
    testIndices into the merged CollectedData_*.h5), and every image of that merged table."""
    import pickle

    docs = sorted(workdir.glob("**/training-datasets/**/Documentation_data-*.pickle"))
    assert len(docs) == 1, docs
    with docs[0].open("rb") as f:
        entries, train_idx, test_idx, _ = pickle.load(f)
    (merged,) = docs[0].parent.glob("CollectedData_*.h5")
    index = ["/".join(i) for i in pd.read_hdf(merged).index]
    train = {"/".join(e["image"]) for e in entries}
    assert train == {index[i] for i in train_idx}
    return train, {index[i] for i in test_idx}, set(index)


@pytest.mark.slow
def test_three_cohorts_and_new_metadata_strata_in_one_repro(pipeline) -> None:
    """Issue 24: three cohorts side by side with the test set, none of their frames trained on,
    and the metadata's camera / arena columns as strata, all from one `dvc repro`."""
    repo = pipeline[0]
    check_no_cohort_frame_trained(repo)
    errors = independent_errors(repo)
    check_cohort_table(repo, errors)
    check_new_strata(repo, errors)
    check_cohort_records(repo)


def _inputs(repo: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, set[str]]]:
    """params, the metadata CSV, split.csv and, brute force, each cohort's frames: the PNG files
    of the videos whose metadata row matches its filter (first listed filter wins)."""
    p = yaml.safe_load((repo / "params.yaml").read_text())
    meta = pd.read_csv(repo / p["project"]["metadata"], dtype=str, keep_default_na=False)
    cohort_of = _expected_cohorts(meta)
    pngs = {name: {f"labeled-data/{v}/{f.name}" for v, c in cohort_of.items() if c == name
                   for f in (repo / p["project"]["path"] / "labeled-data" / v).glob("*.png")}
            for name in COHORTS}
    return p, meta, pd.read_csv(repo / p["split"]["out"]), pngs


def check_no_cohort_frame_trained(repo: Path) -> None:
    p, _, split, pngs = _inputs(repo)
    assert all(pngs.values()) and sum(map(len, pngs.values())) == 8 * 10
    held = set().union(*pngs.values())
    for name, images in pngs.items():
        assert set(split.loc[split["split"] == f"cohort:{name}", "image"]) == images, name
    train, val = (set(split.loc[split["split"] == s, "image"]) for s in ("train", "val"))
    assert train and val and not held & (train | val)
    # what DeepLabCut trained and chose its snapshot on: exactly train / val, no cohort frame
    dlc_train, dlc_val, dlc_all = _dlc_training_images(repo / p["train"]["workdir"])
    assert not held & dlc_all, sorted(held & dlc_all)[:3]
    assert (dlc_train, dlc_val) == (train, val)
    project = repo / p["train"]["workdir"] / "project"
    assert not any((project / img).exists() for img in held)  # never copied into the training
    for h5 in project.glob("labeled-data/*/CollectedData_*.h5"):
        assert not held & {"/".join(i) for i in pd.read_hdf(h5).index}, h5


def independent_errors(repo: Path) -> pd.DataFrame:
    """Per labeled keypoint: its error recomputed from the labels and predictions on disk, its
    split (split.csv) and camera / arena (metadata CSV); equal to evaluate's errors table."""
    p, meta, split, _ = _inputs(repo)
    out = Path(repo / p["evaluate"]["out"])
    labels = pd.read_parquet(repo / p["consensus"]["out"])
    preds = pd.read_parquet(out / "predictions.parquet")
    e = labels.merge(preds, on=["image", "bodypart"], suffixes=("", "_p"))
    e["e"] = np.hypot(e["x_p"] - e["x"], e["y_p"] - e["y"])
    e = e[e["e"].notna()].copy()
    e["split"] = e["image"].map(split.set_index("image")["split"])
    e["video"] = e["image"].str.split("/").str[1]
    for col in ("camera", "arena"):
        e[col] = e["video"].map(meta.set_index("video")[col])
    errors = pd.read_parquet(out / "errors.parquet")
    err = errors[errors["error_px"].notna()].merge(e, on=["image", "bodypart"])
    assert len(err) == len(e) and np.allclose(err["error_px"], err["e"])
    assert (err["split_x"] == err["split_y"]).all()
    return e


def check_cohort_table(repo: Path, e: pd.DataFrame) -> None:
    """data/eval/cohorts.csv and metrics.json: the test set and the three cohorts, frames counted
    by brute force, metrics and drops vs test recomputed with pandas."""
    p, _, split, pngs = _inputs(repo)
    rmse = e.groupby("split")["e"].apply(lambda s: float(np.sqrt((s**2).mean())))
    mean = e.groupby("split")["e"].mean()
    table = pd.read_csv(Path(repo / p["evaluate"]["out"]) / "cohorts.csv").set_index("cohort")
    assert list(table.index) == ["test", *sorted(COHORTS)]
    metrics = json.loads((repo / p["evaluate"]["metrics"]).read_text())
    for name in table.index:
        key = "test" if name == "test" else f"cohort:{name}"
        row, n_images = table.loc[name], (split["split"] == key).sum()
        assert row["split"] == key and row["n_images"] == n_images
        if name != "test":
            assert n_images == len(pngs[name])
        assert row["n_videos"] == e.loc[e["split"] == key, "video"].nunique()
        assert row["n"] == (e["split"] == key).sum()
        assert row["rmse_px"] == pytest.approx(rmse[key])
        drop = rmse[key] - rmse["test"]
        assert row["rmse_drop_px"] == pytest.approx(drop, abs=1e-9)
        assert row["rmse_drop_pct"] == pytest.approx(100 * drop / rmse["test"], abs=1e-9)
        assert row["mean_drop_pct"] == pytest.approx(
            100 * (mean[key] - mean["test"]) / mean["test"], abs=1e-9)
        assert metrics[key]["rmse_px"] == pytest.approx(rmse[key])
        if name != "test":
            assert metrics[key]["rmse_drop_pct"] == pytest.approx(100 * drop / rmse["test"])


def check_new_strata(repo: Path, e: pd.DataFrame) -> None:
    """The metadata's new columns are strata (params only): n per split x value recomputed."""
    p = yaml.safe_load((repo / "params.yaml").read_text())
    st = pd.read_csv(Path(repo / p["evaluate"]["out"]) / "stratified.csv")
    for col in ("camera", "arena"):
        got = st[st["stratum_type"] == col].set_index(["split", "stratum"])["n"]
        want = e.groupby(["split", col]).size()
        assert got.sort_index().to_dict() == want.sort_index().to_dict(), col
    assert set(st.loc[st["stratum_type"] == "camera", "stratum"]) == {"top", "side"}


def check_cohort_records(repo: Path) -> None:
    """The composition report records the cohorts; the GE suite checked the allowed drop; the
    HTML report names them."""
    p, _, _, pngs = _inputs(repo)
    comp = json.loads((repo / p["composition"]["metrics"]).read_text())["split"]
    assert "cohorts" in comp, sorted(comp)
    comp = comp["cohorts"]
    assert comp["frames_in_training"] == 0
    for name, images in pngs.items():
        assert comp["per_cohort"][name]["n_frames"] == len(images)
        assert comp["per_cohort"][name]["n_videos"] == len({i.split("/")[1] for i in images})
    report = json.loads((repo / p["validate_report"]["out"]).read_text())
    check = next(r for r in report["results"] if r["name"] == "cohort_drop_max")
    assert check["success"] is True and check["table"] == "cohorts"
    html = (repo / p["report"]["out"]).read_text()
    assert all(name in html for name in COHORTS)


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
