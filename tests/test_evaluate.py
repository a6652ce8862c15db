"""evaluate: the stage's tables, DVC plots that render offline, bad inputs, and (slow) agreement
with DeepLabCut's own evaluate_network on the same snapshot and frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.curves import overfitting
from support.tables import synthetic_tables
from support.train import evaluate_store_copy

from poseops.commands.evaluate import write_outputs
from poseops.config.evaluate import EvaluateParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.dlc.inference import predict
from poseops.evaluate import diagnose as D
from poseops.evaluate.tables import evaluate_tables, plot_tables

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _stats_from_curves(c: pd.DataFrame) -> pd.DataFrame:
    """DLC's learning_stats.csv layout for synthetic curves."""
    return pd.DataFrame({"step": c[D.EPOCH], "losses/train.total_loss": c[D.TRAIN_LOSS],
                         "losses/eval.total_loss": c[D.VAL_LOSS], "metrics/test.rmse": 1.0})


@pytest.fixture
def evaluation(tmp_path):
    labels, preds, split = synthetic_tables()
    params = EvaluateParams(out=str(tmp_path / "eval"), metrics=str(tmp_path / "metrics.json"),
                            plots=str(tmp_path / "plots"), log_mlflow=False)
    return evaluate_tables(labels, preds, split, _stats_from_curves(overfitting(0)), params,
                           config_pcutoff=0.6), params


def test_outputs_written_and_consistent(evaluation):
    ev, params = evaluation
    paths = write_outputs(ev, params)
    metrics = json.loads(Path(params.metrics).read_text())
    errors = pd.read_parquet(paths["errors"])
    test = errors.loc[(errors[S.SPLIT] == S.TEST), S.ERROR_PX].dropna().to_numpy()
    np.testing.assert_allclose(metrics["test"]["rmse_px"], np.sqrt(np.mean(test**2)))
    np.testing.assert_allclose(metrics["test"]["dlc_rmse_px"], test.mean())
    assert set(metrics) == {"train", "val", "test", "gap"}
    strat = pd.read_csv(paths["stratified"])
    assert {"stratum_type", "stratum", "split", "n", "mean_px", "rmse_px", "median_px",
            "p95_px"} <= set(strat.columns)
    diag = json.loads(paths["diagnosis"].read_text())
    assert diag["kind"] == D.OVERFITTING and diag["actions"] == D.ACTIONS[D.OVERFITTING]
    loss = pd.read_csv(Path(params.plots) / "loss_curves.csv")
    assert list(loss.columns) == ["epoch", "train_loss", "val_loss"] and len(loss) == 60
    pck = pd.read_csv(Path(params.plots) / "pck_curve.csv")
    assert list(pck.columns) == ["threshold_px", "train", "val", "test"]
    byc = pd.read_csv(Path(params.plots) / "error_by_condition.csv")
    assert set(byc[S.CONDITION]) == {"vehicle", "low_dose", "high_dose"}
    bias = pd.read_csv(paths["condition_bias"])
    assert list(bias["factor"]) == [S.CONDITION, S.ANIMAL]
    assert {"unit", "n_units", "n_frames", "note"} <= set(bias.columns)


def test_per_bodypart_pcutoff_override(evaluation):
    ev, params = evaluation
    labels, preds, split = synthetic_tables()
    params.pcutoff = {"snout": 0.9, "leftear": 0.1, "rightear": 0.1, "tailbase": 0.1}
    ev2 = evaluate_tables(labels, preds, split, None, params, config_pcutoff=0.6)
    e = ev2.errors[(ev2.errors[S.SPLIT] == S.TEST) & ev2.errors[S.ERROR_PX].notna()]
    cut = e[S.BODYPART].map(params.pcutoff)
    keep = e[S.LIKELIHOOD] >= cut
    np.testing.assert_allclose(ev2.headline["test"]["dlc_rmse_pcutoff_px"], e.loc[keep, S.ERROR_PX].mean())
    # no learning stats: the curves cannot tell, the evaluated errors still can
    assert ev2.diagnosis.curve_kind == D.INSUFFICIENT


def test_diagnosis_uses_the_evaluated_errors(evaluation):
    """Healthy-looking curves do not hide a train-test gap beyond max_gap_pct."""
    from support.curves import healthy

    ev, params = evaluation
    labels, preds, split = synthetic_tables()
    ev2 = evaluate_tables(labels, preds, split, _stats_from_curves(healthy(0)), params)
    tr, te = ev2.headline["train"]["rmse_px"], ev2.headline["test"]["rmse_px"]
    gap = ev2.headline["gap"]["train_test_gap_pct"]
    assert gap > 15 and ev2.diagnosis.curve_kind == D.HEALTHY
    assert ev2.diagnosis.kind == D.OVERFITTING and ev2.diagnosis.source == "errors"
    assert ev2.diagnosis.reason.startswith(
        f"overfitting: test error {te:.1f} px is {gap:.0f} % above train error {tr:.1f} px")
    params.diagnosis = {"max_gap_pct": gap + 1}
    loose = evaluate_tables(labels, preds, split, _stats_from_curves(healthy(0)), params)
    assert loose.diagnosis.kind == D.HEALTHY


def test_condition_bias_is_per_video_by_default(evaluation):
    ev, params = evaluation
    assert params.bias_unit == S.VIDEO
    assert set(ev.bias["unit"]) == {S.VIDEO}
    test_videos = ev.errors.loc[ev.errors[S.SPLIT] == S.TEST, S.VIDEO].nunique()
    assert (ev.bias["n_units"] == test_videos).all()
    # 4 test videos: too few per condition / animal for a p-value, and the table says so
    assert ev.bias["anova_p"].isna().all() and ev.bias["note"].str.contains("fewer than").all()


def test_missing_snapshot_is_a_clear_error(tmp_path):
    cfg = tmp_path / "pytorch_config.yaml"
    cfg.write_text("metadata: {bodyparts: [snout]}\n")
    with pytest.raises(PoseopsError, match="snapshot not found") as exc:
        predict(cfg, tmp_path / "snapshot-best-010.pt", tmp_path, ["labeled-data/v/img0.png"])
    assert "snapshot-best-010.pt" in str(exc.value)


def test_cli_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    from poseops.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train: {workdir: nowhere}\nconsensus: {out: c.parquet}\n"
                                          "split: {out: s.csv}\n")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame({"image": ["x"], "split": ["test"]}).to_csv(tmp_path / "s.csv")
    assert main(["evaluate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json" in err[0] and "poseops train" in err[0]


def _dvc_env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_dvc_plots_render_offline(evaluation, tmp_path):
    """`dvc plots show` with the committed template: no external script, charts drawn."""
    from PIL import Image

    ev, _ = evaluation
    repo = tmp_path / "repo"
    (repo / "reports" / "plots").mkdir(parents=True)
    for name, df in plot_tables(ev).items():
        df.to_csv(repo / "reports" / "plots" / name, index=False)
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copy(REPO / "params.yaml", repo)
    dvc = str(REPO / ".venv" / "bin" / "dvc")
    run = dict(cwd=repo, env=_dvc_env(), check=True, capture_output=True, timeout=120)
    subprocess.run([dvc, "init", "--no-scm", "-q"], **run)
    template = REPO / "dvc_plots" / "template.html"
    subprocess.run([dvc, "config", "plots.html_template", str(template)], **run)
    subprocess.run([dvc, "plots", "show", "-o", "plots_out"], **run)
    page = (repo / "plots_out" / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    for title in ("Loss curves", "PCK curve", "Error by bodypart", "Error by condition"):
        assert title.replace(" ", "_") in page  # DVC's div ids
    shot = tmp_path / "plots.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--no-first-run",
                    "--disable-component-update", f"--user-data-dir={tmp_path / 'prof'}",
                    "--virtual-time-budget=10000", "--window-size=1400,1800",
                    f"--screenshot={shot}", (repo / "plots_out" / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    colored = (rgb.max(axis=2) - rgb.min(axis=2)) > 60  # vega's series colours, not text
    # each chart, line or bar, draws coloured marks: count charts by their coloured regions
    assert colored.sum() > 5000, "DVC plots page rendered no chart"
    assert "var spec = {};" not in page, "a plot has an empty spec (bad x/y in dvc.yaml)"


# ------------------------------------------------------------------ real DLC (slow)


def _dlc_results(model_dir: Path) -> pd.DataFrame:
    csvs = [p for p in model_dir.parent.parent.parent.rglob("*-results.csv")
            if "Combined" not in p.name]
    assert len(csvs) == 1, csvs
    return pd.read_csv(csvs[0])


@pytest.mark.slow
def test_matches_deeplabcut_evaluate_network(trained_demo, tmp_path):
    """Our mean error (DLC's "rmse") and its pcutoff variant, and the OKS mAP / mAR, equal DLC's
    own evaluate_network on the same snapshot and the same frames (DLC's train = our train, DLC's
    test = our val)."""
    import deeplabcut
    import yaml

    tr = trained_demo.result
    # a private copy of the working project: evaluate_network writes into it
    src = Path(tr.config_path).parent
    dst = tmp_path / src.name
    shutil.copytree(src, dst, symlinks=True)
    cfg_path = dst / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["project_path"] = str(dst)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    model_dir = dst / Path(tr.model_dir).relative_to(src)
    snapshot = model_dir / "train" / tr.snapshot.name
    pytorch_cfg = model_dir / "train" / "pytorch_config.yaml"
    pcutoff = float(cfg.get("pcutoff", 0.6))

    deeplabcut.evaluate_network(str(cfg_path), shuffles=[tr.shuffle],
                                trainingsetindex=tr.trainset_index, device="cpu",
                                snapshots_to_evaluate=[snapshot.stem])
    dlc = _dlc_results(model_dir).iloc[0]

    images = sorted(set(tr.images[S.TRAIN]) | set(tr.images[S.VAL]) | set(tr.images[S.TEST]))
    preds = predict(pytorch_cfg, snapshot, dst, images, batch_size=8, device="cpu")
    params = EvaluateParams(reference_bodyparts=None, log_mlflow=False)
    ev = evaluate_tables(trained_demo.labels, preds, trained_demo.split, tr.learning_stats,
                         params, config_pcutoff=pcutoff)
    h = ev.headline
    # DLC rounds its table to 2 decimals: equal to 0.01 px
    assert abs(h["train"]["dlc_rmse_px"] - dlc["train rmse"]) <= 0.01
    assert abs(h["val"]["dlc_rmse_px"] - dlc["test rmse"]) <= 0.01
    for ours, theirs in [(h["train"]["dlc_rmse_pcutoff_px"], dlc["train rmse_pcutoff"]),
                         (h["val"]["dlc_rmse_pcutoff_px"], dlc["test rmse_pcutoff"])]:
        if np.isnan(theirs):
            assert np.isnan(ours)
        else:
            assert abs(ours - theirs) <= 0.01
    # issue 25: single-animal OKS mAP / mAR are DLC's (its table: 2 decimals)
    for ours, theirs in [("train", "train"), ("val", "test")]:
        for k in ("mAP", "mAR"):
            assert abs(h[ours][k] - dlc[f"{theirs} {k}"]) <= 0.005 + 1e-9, (ours, k)
    # the frames: DLC evaluated exactly our train and val images
    assert h["train"]["n"] == ev.errors.query("split == 'train'")[S.ERROR_PX].notna().sum()
    assert set(ev.errors.loc[ev.errors[S.SPLIT] == S.TEST, S.IMAGE]) == set(tr.images[S.TEST])


@pytest.mark.slow
def test_stage_logs_to_mlflow_and_registry(trained_demo, tmp_path, monkeypatch):
    """The stage on the trained demo: outputs, MLflow table/metrics/tag, test error on the model."""
    from mlflow import MlflowClient

    import poseops.commands.evaluate as E

    uri, ev, paths = evaluate_store_copy(trained_demo, tmp_path, monkeypatch)
    tr = trained_demo.result
    E.log_to_mlflow(ev, paths, tr.run_id, trained_demo.params.registered_model, tr.model_version)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(tr.run_id)
    np.testing.assert_allclose(run.data.metrics["test.rmse_px"], ev.headline["test"]["rmse_px"])
    np.testing.assert_allclose(run.data.metrics["test.dlc_rmse_px"], ev.headline["test"]["mean_px"])
    assert run.data.tags["diagnosis"] == ev.diagnosis.kind
    arts = {a.path for a in client.list_artifacts(tr.run_id, "eval")}
    assert {"eval/stratified.json", "eval/errors.parquet", "eval/stratified.csv"} <= arts
    if tr.model_version:
        mv = client.get_model_version(trained_demo.params.registered_model, tr.model_version)
        assert float(mv.tags["test.rmse_px"]) == pytest.approx(ev.headline["test"]["rmse_px"],
                                                               abs=1e-4)
