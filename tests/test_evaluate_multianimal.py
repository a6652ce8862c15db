"""evaluate on multi-animal projects: the stage's tables and headline, and (slow) agreement with
DeepLabCut's own ``evaluate_network`` on the same multi-animal snapshot and frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.multianimal import dlc_arrays, random_project

from poseops.commands.evaluate import write_outputs
from poseops.config.evaluate import EvaluateParams
from poseops.core import schema as S
from poseops.evaluate import matching as MA
from poseops.evaluate.common import REF_LENGTH
from poseops.evaluate.tables import evaluate_tables


def _params(tmp_path: Path) -> EvaluateParams:
    return EvaluateParams(out=str(tmp_path / "eval"), metrics=str(tmp_path / "metrics.json"),
                          plots=str(tmp_path / "plots"), log_mlflow=False,
                          reference_bodyparts=["nose", "tail"])


def test_multianimal_outputs_carry_individuals_dlc_metrics_and_swaps(tmp_path):
    labels, preds, names = random_project(11)
    images = sorted(preds[S.IMAGE].unique())
    split = pd.DataFrame({S.IMAGE: images, S.SPLIT: [S.TRAIN, S.VAL, S.TEST] * 4})
    labels[S.CONDITION] = np.where(labels[S.VIDEO] == "v0", "vehicle", "drug")
    params = _params(tmp_path)
    ev = evaluate_tables(labels, preds, split, None, params, 0.6, individuals=names)
    paths = write_outputs(ev, params)
    metrics = json.loads(Path(params.metrics).read_text())
    errors = pd.read_parquet(paths["errors"])
    predictions = pd.read_parquet(paths["predictions"])
    identity = pd.read_csv(paths["identity"])
    assert {S.INDIVIDUAL, S.ASSEMBLY, MA.OKS} <= set(predictions.columns)
    assert {S.INDIVIDUAL, S.ANIMALS_IN_FRAME, MA.SWAPPED} <= set(errors.columns)
    from deeplabcut.core.metrics import compute_metrics

    for split_name in (S.TRAIN, S.VAL, S.TEST):
        imgs = split.loc[split[S.SPLIT] == split_name, S.IMAGE].tolist()
        m = metrics[split_name]
        # DLC's own metrics on exactly the split's frames: its arrays built here from the tables
        # and DeepLabCut's compute_metrics called directly (not through poseops)
        gt, pr, gu, pu = dlc_arrays(labels, preds, imgs, names)
        dlc = compute_metrics(gt, pr, single_animal=False, unique_bodypart_gt=gu,
                              unique_bodypart_poses=pu, pcutoff=0.6, compute_detection_rmse=False)
        want = {"mAP": dlc["mAP"], "mAR": dlc["mAR"], "dlc_rmse_px": dlc["rmse"]}
        for k in ("mAP", "mAR", "dlc_rmse_px"):
            assert m[k] == pytest.approx(want[k], abs=1e-9)
        e = errors.loc[errors[S.SPLIT] == split_name, S.ERROR_PX].dropna()
        assert m["mean_px"] == pytest.approx(e.mean()) == pytest.approx(want["dlc_rmse_px"])
        ids = identity[identity[S.SPLIT] == split_name]
        assert m["identity_swaps"] == ids["n_swapped"].sum()
        # swapped assemblies counted from the per-keypoint flags, independently
        sw = errors[(errors[S.SPLIT] == split_name) & errors[MA.SWAPPED]]
        assert m["identity_swaps"] == len(sw.drop_duplicates([S.IMAGE, S.INDIVIDUAL]))
        assert m["n_animals"] == m["n_matched_animals"] + m["n_missed_animals"]
    strat = pd.read_csv(paths["stratified"])
    assert {S.INDIVIDUAL, S.ANIMALS_IN_FRAME, S.BODYPART, S.CONDITION} <= set(strat.stratum_type)
    # the reference length is per animal: nose-tail distance of that individual
    row = errors[(errors[S.INDIVIDUAL] == "a2") & errors[REF_LENGTH].notna()].iloc[0]
    lab = labels[(labels[S.IMAGE] == row[S.IMAGE]) & (labels[S.INDIVIDUAL] == "a2")]
    nose, tail = (lab[lab[S.BODYPART] == b][[S.X, S.Y]].to_numpy()[0] for b in ("nose", "tail"))
    assert row[REF_LENGTH] == pytest.approx(np.hypot(*(nose - tail)))


# ------------------------------------------------------------------ slow: DLC's evaluate_network

IND, BPS, UBPS = ["animal1", "animal2"], ["nose", "body", "tail"], ["corner"]
W, H = 160, 120
COLORS = [(255, 60, 60), (60, 255, 60), (60, 60, 255)]


def _make_project(root: Path, n_frames: int = 10) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A tiny maDLC project: two animals (three coloured blocks each) crossing on noise, a
    unique 'corner' marker; CollectedData .h5 under the config scorer; labels as a tidy table."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for v in ("v1", "v2"):
        d = root / "labeled-data" / v
        d.mkdir(parents=True)
        for f in range(n_frames):
            img = rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
            image = f"labeled-data/{v}/img{f:03d}.png"
            for k, ind in enumerate(IND):
                t = f / n_frames
                cx = 40 + 80 * (t if k == 0 else 1 - t) + (v == "v2") * 5
                cy = 45 + 30 * k + 6 * np.sin(3 * t + k)
                for j, (dx, dy) in enumerate([(14, -6), (0, 0), (-14, 7)]):
                    x, y = cx + dx, cy + dy
                    img[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4] = COLORS[j]
                    rows.append((image, v, f, ind, BPS[j], x, y))
            img[4:12, 4:12] = 255
            rows.append((image, v, f, S.SINGLE, "corner", 8.0, 8.0))
            Image.fromarray(img).save(d / f"img{f:03d}.png")
    labels = pd.DataFrame(rows, columns=[S.IMAGE, S.VIDEO, S.FRAME, S.INDIVIDUAL, S.BODYPART,
                                         S.X, S.Y])
    labels[S.SCORER], labels[S.LABELED] = S.CONSENSUS_SCORER, True
    labels[S.WIDTH], labels[S.HEIGHT] = W, H
    cols = [(i, b) for i in IND for b in BPS] + [(S.SINGLE, b) for b in UBPS]
    for v, g in labels.groupby(S.VIDEO):
        imgs = sorted(g[S.IMAGE].unique())
        x = g.pivot(index=S.IMAGE, columns=[S.INDIVIDUAL, S.BODYPART], values=S.X)
        y = g.pivot(index=S.IMAGE, columns=[S.INDIVIDUAL, S.BODYPART], values=S.Y)
        x, y = x.reindex(index=imgs, columns=cols), y.reindex(index=imgs, columns=cols)
        vals = np.empty((len(imgs), 2 * len(cols)))
        vals[:, 0::2], vals[:, 1::2] = x.to_numpy(), y.to_numpy()
        mi = pd.MultiIndex.from_tuples([("alice", i, b, c) for i, b in cols for c in "xy"],
                                       names=["scorer", "individuals", "bodyparts", "coords"])
        wide = pd.DataFrame(vals, columns=mi,
                            index=pd.MultiIndex.from_tuples([tuple(i.split("/")) for i in imgs]))
        wide.to_hdf(root / "labeled-data" / v / "CollectedData_alice.h5", key="df_with_missing")
    import yaml

    cfg = {"Task": "ma", "scorer": "alice", "date": "Jan1", "multianimalproject": True,
           "identity": False, "project_path": str(root), "engine": "pytorch",
           "video_sets": {str(root / f"videos/{v}.mp4"): {"crop": f"0, {W}, 0, {H}"}
                          for v in ("v1", "v2")},
           "bodyparts": "MULTI!", "individuals": IND, "uniquebodyparts": UBPS,
           "multianimalbodyparts": BPS, "skeleton": [], "pcutoff": 0.6, "dotsize": 8,
           "alphavalue": 0.7, "colormap": "rainbow", "TrainingFraction": [0.75], "iteration": 0,
           "default_net_type": "cspnext_s", "default_augmenter": "default",
           "snapshotindex": -1, "detector_snapshotindex": -1, "batch_size": 4,
           "cropping": False, "start": 0, "stop": 1, "numframes2pick": 10}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    images = sorted(labels[S.IMAGE].unique())
    # every 4th frame in test: 15 train / 5 test, the 0.75 TrainingFraction of the config
    split = pd.DataFrame({S.IMAGE: images, S.VIDEO: [i.split("/")[1] for i in images],
                          S.SPLIT: [S.TEST if k % 4 == 3 else S.TRAIN
                                    for k in range(len(images))]})
    return config, labels, split


@pytest.mark.slow
def test_multianimal_metrics_equal_dlc_evaluate_network(tmp_path):
    """A tiny cspnext_s (PAF) maDLC model trained 2 epochs from random init: our mAP, mAR and
    rmse after matching on DLC's train and test frames equal evaluate_network's results file."""
    import deeplabcut
    import torch
    from deeplabcut.core.engine import Engine
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets,
    )
    from deeplabcut.pose_estimation_pytorch.apis.training import train
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.pose_estimation_pytorch.task import Task
    from deeplabcut.utils import auxiliaryfunctions

    from poseops.dlc.inference import predict

    root = tmp_path / "proj"
    config, labels, split = _make_project(root)
    cfg = auxiliaryfunctions.read_config(str(config))
    folder = root / auxiliaryfunctions.get_training_set_folder(cfg)
    folder.mkdir(parents=True)
    merged = merge_annotateddatasets(cfg, folder)
    pos = {"/".join(ix): k for k, ix in enumerate(merged.index)}
    idx = {s: [pos[i] for i in split.loc[split[S.SPLIT] == s, S.IMAGE]] for s in (S.TRAIN, S.TEST)}
    deeplabcut.create_training_dataset(
        str(config), Shuffles=[1], trainIndices=[idx[S.TRAIN]], testIndices=[idx[S.TEST]],
        net_type="cspnext_s", engine=Engine.PYTORCH, userfeedback=False)
    loader = DLCLoader(config=str(config), shuffle=1, trainset_index=0)
    for k, v in {"train_settings.epochs": 2, "train_settings.batch_size": 4,
                 "data.train.crop_sampling.width": W, "data.train.crop_sampling.height": H,
                 "runner.snapshots.save_epochs": 2, "train_settings.seed": 0}.items():
        loader.model_cfg.set_nested(k, v)
    loader.model_cfg.to_yaml(loader.model_config_path)
    torch.manual_seed(0)
    model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
    init = tmp_path / "init.pt"
    torch.save({"model": model.state_dict()}, init)
    train(loader=loader, run_config=loader.model_cfg, task=Task(loader.model_cfg["method"]),
          device="cpu", snapshot_path=str(init))
    snapshot = sorted(loader.model_folder.glob("snapshot-*.pt"))[-1]
    deeplabcut.evaluate_network(str(config), shuffles=[1], device="cpu",
                                snapshots_to_evaluate=[snapshot.stem])
    dlc = pd.read_csv(next(root.glob("evaluation-results-pytorch/*/*/*-results.csv"))).iloc[0]

    images = sorted(split[S.IMAGE])
    preds = predict(loader.model_config_path, snapshot, root, images, device="cpu",
                    multi_animal=True)
    params = _params(tmp_path)
    ev = evaluate_tables(labels, preds, split[[S.IMAGE, S.SPLIT]], None, params, 0.6,
                         individuals=IND)
    for s in (S.TRAIN, S.TEST):
        ours = ev.headline[s]
        # DLC rounds its results file to 2 decimals
        assert ours["dlc_rmse_px"] == pytest.approx(dlc[f"{s} rmse"], abs=0.005 + 1e-9)
        assert ours["mean_px"] == pytest.approx(dlc[f"{s} rmse"], abs=0.005 + 1e-9)
        assert ours["mAP"] == pytest.approx(dlc[f"{s} mAP"], abs=0.005 + 1e-9)
        assert ours["mAR"] == pytest.approx(dlc[f"{s} mAR"], abs=0.005 + 1e-9)
        if np.isfinite(dlc[f"{s} rmse_pcutoff"]):
            assert ours["dlc_rmse_pcutoff_px"] == pytest.approx(dlc[f"{s} rmse_pcutoff"],
                                                                abs=0.005 + 1e-9)
        # a 2-epoch model may match no animal (then only the unique bodypart counts): the
        # animal matching itself is checked against DLC's compute_metrics in
        # test_metrics_multianimal; here the whole path (runner -> tables -> DLC metrics)
        assert np.isfinite(ours["dlc_rmse_px"])
    # unrounded: DLC's evaluate() (what evaluate_network runs per split) on the same snapshot
    from deeplabcut.pose_estimation_pytorch.apis.evaluation import evaluate
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_inference_runners

    prm = loader.get_dataset_parameters()
    runner, _ = get_inference_runners(
        model_config=loader.model_cfg, snapshot_path=snapshot, device="cpu",
        max_individuals=prm.max_num_animals, num_bodyparts=prm.num_joints,
        num_unique_bodyparts=prm.num_unique_bpts, with_identity=False)
    for s in (S.TRAIN, S.TEST):
        exact, _ = evaluate(runner, loader, mode=s, pcutoff=0.6)
        ours = ev.headline[s]
        # DLC is not always consistent with itself on a 2-epoch PAF model: in about 1 run of 8
        # (old and new poseops alike) this second evaluate() disagrees with evaluate_network's
        # own results file by several px. The unrounded comparison holds DLC to that file
        # first, so a flaky DLC is not taken for a poseops error (ours = the file is asserted
        # above either way).
        if abs(exact["rmse"] - dlc[f"{s} rmse"]) > 0.005 + 1e-9:
            continue
        assert ours["mean_px"] == pytest.approx(exact["rmse"], abs=0.01)
        assert ours["mAP"] == pytest.approx(exact["mAP"], abs=0.001)
        assert ours["mAR"] == pytest.approx(exact["mAR"], abs=0.001)


def test_report_and_report_validation_show_multianimal_metrics(tmp_path):
    from poseops.quality.report_checks import report_tables
    from poseops.report.html import ReportInputs, _fmt, build_html

    labels, preds, names = random_project(5)
    images = sorted(preds[S.IMAGE].unique())
    split = pd.DataFrame({S.IMAGE: images, S.SPLIT: [S.TRAIN, S.VAL, S.TEST] * 4})
    ev = evaluate_tables(labels, preds, split, None, _params(tmp_path), 0.6, individuals=names)
    page = build_html(ReportInputs(headline=ev.headline, stratified=ev.stratified,
                                   errors=ev.errors, curves=ev.curves,
                                   diagnosis=ev.diagnosis.as_dict(), pck=ev.pck), example_n=0)
    assert "id='headline-multianimal'" in page or 'id="headline-multianimal"' in page
    assert "By individual" in page and "By animals in frame" in page
    assert _fmt(ev.headline[S.TEST]["mAP"]) in page
    tables = report_tables(ev.headline, ev.errors)
    assert tables["metrics"].loc[0, "test_mAP"] == pytest.approx(ev.headline[S.TEST]["mAP"])
    assert set(tables["bodyparts"]["stratum"]) == {"nose", "body", "tail", "corner"}
