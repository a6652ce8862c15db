"""poseops.train on a multi-animal (maDLC) project: DLC 3's multi-animal training path.

The tiny multi-animal demo (2 animals per video, one unique floor marker) goes through ingest,
consensus and split; training must build a maDLC working project DLC reads back exactly, keep
our split, refuse what it cannot train in one line, and track a real training like the
single-animal one (slow tests train 2-3 epochs of the cheapest bottom-up net, cspnext_s + PAF).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.train import assert_history_equals_stats, tiny, train_killed_after_first_snapshot

from poseops.config.train import TrainParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.train.project import prepare_dlc_project
from poseops.train.trainer import train_model

UNIQUE = ["marker"]


@dataclasses.dataclass
class MaTables:
    labels: pd.DataFrame  # consensus, with an individual column
    split: pd.DataFrame
    project: Path  # the source maDLC demo project (read-only)


@pytest.fixture(scope="module")
def ma(tmp_path_factory: pytest.TempPathFactory) -> MaTables:
    from poseops.config.data import SplitParams
    from poseops.config.demo import DemoParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo

    root = tmp_path_factory.mktemp("ma_demo")
    project = root / "raw" / "demo"
    generate_demo(project, DemoParams.small_multi(unique_bodyparts=UNIQUE),
                  metadata=root / "metadata" / "videos.csv")
    labels = build_consensus(ingest_project(project, root / "metadata" / "videos.csv"))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    return MaTables(labels, split, project)


def _tiny(**kw: object) -> TrainParams:
    return tiny(**{"epochs": 2, **kw})


def _rel(ds, d: dict) -> str:
    return Path(d["file_name"]).relative_to(ds.config_path.parent).as_posix()


# ------------------------------------------------------------------------------ fast
def test_prepare_builds_a_madlc_project_dlc_reads_with_our_split(ma: MaTables, tmp_path: Path) -> None:
    """DLC's own loader of the working project: a multi-animal config, our TRAIN frames as its
    train set and our VAL frames as its 'test' set, and per image and individual exactly the
    consensus coordinates (unique bodyparts DLC-side under its unique keypoints)."""
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader

    labels, split = ma.labels, ma.split
    assert S.INDIVIDUAL in labels.columns
    ds = prepare_dlc_project(labels, split, ma.project, tmp_path / "w", _tiny())
    cfg = yaml.safe_load(ds.config_path.read_text())
    src = yaml.safe_load((ma.project / "config.yaml").read_text())
    assert cfg["multianimalproject"] is True
    assert cfg["individuals"] == src["individuals"] == ds.individuals
    assert cfg["uniquebodyparts"] == UNIQUE == ds.unique_bodyparts
    assert ds.bodyparts == src["multianimalbodyparts"] + UNIQUE

    loader = DLCLoader(config=str(ds.config_path), shuffle=ds.shuffle, trainset_index=ds.trainset_index)
    want = {s: sorted(split.loc[split[S.SPLIT] == s, S.IMAGE]) for s in S.SPLITS}
    train = loader.load_data(mode="train")
    test = loader.load_data(mode="test")
    assert sorted(_rel(ds, d) for d in train["images"]) == want["train"]
    assert sorted(_rel(ds, d) for d in test["images"]) == want["val"]
    assert all((ds.config_path.parent / i).exists() for i in want["test"])  # for inference

    # DLC's annotations (one per individual and image) hold the consensus coordinates
    pcfg = yaml.safe_load(ds.pytorch_config_path.read_text())
    assert pcfg["metadata"]["individuals"] == src["individuals"]
    assert pcfg["metadata"]["unique_bodyparts"] == UNIQUE
    assert pcfg["runner"]["key_metric"] == "test.rmse" and pcfg["runner"]["key_metric_asc"] is False
    names = {img["id"]: _rel(ds, img) for img in train["images"]}
    cons = labels.set_index([S.IMAGE, S.INDIVIDUAL, S.BODYPART])
    multi_bps = src["multianimalbodyparts"]
    checked = 0
    for ann in train["annotations"]:
        image, ind = names[ann["image_id"]], ann["individual"]
        kps = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        bps = UNIQUE if ind == S.SINGLE else multi_bps
        for b, bp in enumerate(bps):
            x, y = cons.loc[(image, ind, bp), [S.X, S.Y]]
            if np.isfinite(x):
                np.testing.assert_allclose(kps[b, :2], [x, y], atol=1e-6)
                checked += 1
    n_labeled = labels[labels[S.IMAGE].isin(want["train"]) & labels[S.X].notna()].shape[0]
    assert checked == n_labeled > 0


def test_top_down_and_unknown_nets_are_refused_in_one_line(ma: MaTables, tmp_path: Path) -> None:
    for net, what in (("rtmpose_s", "top-down"), ("top_down_resnet_50", "top-down"),
                      ("ctd_coam_w32", "conditional top-down"), ("no_such_net", "not a DeepLabCut")):
        with pytest.raises(PoseopsError) as e:
            prepare_dlc_project(ma.labels, ma.split, ma.project, tmp_path / net, _tiny(net_type=net))
        msg = str(e.value)
        assert net in msg and what in msg and "dekr_w18" in msg and "\n" not in msg
        assert not (tmp_path / net / "project").exists()


@pytest.mark.parametrize(
    "change, what",
    [
        (lambda d: d.assign(**{S.INDIVIDUAL: d[S.INDIVIDUAL].replace("animal2", "animal9")}), "animal9"),
        (lambda d: d.assign(**{S.INDIVIDUAL: np.where(d[S.BODYPART] == UNIQUE[0], "animal1",
                                                      d[S.INDIVIDUAL])}), "unique bodyparts"),
    ],
    ids=["individual-not-in-config", "unique-bodypart-under-an-animal"],
)
def test_labels_that_do_not_fit_the_config_name_image_and_bodypart(ma: MaTables, tmp_path: Path,
                                                                   change, what: str) -> None:
    bad = change(ma.labels)
    with pytest.raises(PoseopsError) as e:
        prepare_dlc_project(bad, ma.split, ma.project, tmp_path / "w", _tiny())
    assert what in str(e.value)
    assert e.value.row is not None and str(e.value.row).startswith("labeled-data/")
    assert e.value.bodypart is not None


def test_multianimal_labels_need_a_multianimal_config(ma: MaTables, tmp_path: Path) -> None:
    flat = ma.labels.drop(columns=[S.INDIVIDUAL])
    with pytest.raises(PoseopsError, match="no 'individual' column"):
        prepare_dlc_project(flat, ma.split, ma.project, tmp_path / "w", _tiny())


def test_dekr_training_crop_is_padded_to_its_divisor(ma: MaTables, tmp_path: Path) -> None:
    """HRNet/DEKR branches only line up on sizes divisible by 32 (DLC pads its inference input
    to that): a 150x100 crop becomes the next multiple of DLC's own pad divisors."""
    ds = prepare_dlc_project(ma.labels, ma.split, ma.project, tmp_path / "w",
                             _tiny(net_type="dekr_w18", crop_width=150, crop_height=100))
    pcfg = yaml.safe_load(ds.pytorch_config_path.read_text())
    pad = pcfg["data"]["inference"]["auto_padding"]
    crop = pcfg["data"]["train"]["crop_sampling"]
    for key, div, asked in (("width", pad["pad_width_divisor"], 150), ("height", pad["pad_height_divisor"], 100)):
        assert crop[key] % div == 0 and asked <= crop[key] < asked + div
    assert pcfg["net_type"] == "dekr_w18"


# ------------------------------------------------------------------------------ slow: train
@pytest.mark.slow
def test_train_multianimal_tracks_selects_on_val_and_serves_individuals(ma: MaTables, tmp_path: Path) -> None:
    import mlflow
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = _tiny(epochs=2)
    res = train_model(params, ma.labels, ma.split, ma.project, tmp_path / "train", tracking_uri=uri)
    assert res.snapshot is not None and res.snapshot.exists()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["multianimal"] == "True" and run.data.tags["individuals"] == "animal1,animal2"
    stats = res.learning_stats
    # DLC's multi-animal validation metrics, every epoch, the same in MLflow as on disk
    assert {"metrics/test.rmse", "metrics/test.mAP", "metrics/test.mAR"} <= set(stats.columns)
    assert stats["step"].tolist() == [1, 2]
    assert_history_equals_stats(client, res.run_id, stats)
    # the snapshot chosen is the epoch with the lowest validation rmse (DLC's, after matching)
    rmse = stats.set_index("step")["metrics/test.rmse"]
    if rmse.notna().any():
        assert int(res.metrics["selected_epoch"]) == int(rmse.idxmin())

    # the registered pyfunc model: every individual's bodyparts plus the unique ones under
    # "single", as DLC's own inference runner predicts them on the same snapshot
    image = str(ma.project / res.images[S.TEST][0])
    mlflow.set_tracking_uri(uri)
    got = mlflow.pyfunc.load_model(res.model_uri).predict([image])
    runner = get_pose_inference_runner(model_config=str(res.pytorch_config_path),
                                       snapshot_path=str(res.snapshot), batch_size=1, device="cpu")
    out = runner.inference([image])[0]
    src = yaml.safe_load((ma.project / "config.yaml").read_text())
    want = [(ind, bp, *out["bodyparts"][i, b, :3]) for i, ind in enumerate(src["individuals"])
            for b, bp in enumerate(src["multianimalbodyparts"])]
    want += [(S.SINGLE, bp, *out["unique_bodyparts"][0, b, :3]) for b, bp in enumerate(UNIQUE)]
    assert list(zip(got["individual"], got["bodypart"], strict=True)) == [w[:2] for w in want]
    np.testing.assert_allclose(got[["x", "y", "likelihood"]].to_numpy(float),
                               np.array([w[2:] for w in want], float), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_multianimal_resume_after_kill_continues_the_same_run(ma: MaTables, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    params = _tiny(epochs=3)
    work, uri, stats = train_killed_after_first_snapshot(params, ma.labels, ma.split, ma.project,
                                                          tmp_path, timeout_s=600)

    res = train_model(params, ma.labels, ma.split, ma.project, work, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert [r.info.run_id for r in runs] == [res.run_id]
    assert 1 <= int(client.get_run(res.run_id).data.tags["resumed_from_epoch"]) <= int(stats["step"].max())
    assert client.get_run(res.run_id).info.status == "FINISHED"
    assert res.learning_stats["step"].tolist() == [1, 2, 3]
    assert_history_equals_stats(client, res.run_id, res.learning_stats)
    # the resumed run is still the multi-animal model (the dataset rebuilt from run.json)
    pcfg = yaml.safe_load(res.pytorch_config_path.read_text())
    assert pcfg["metadata"]["individuals"] == ["animal1", "animal2"]
