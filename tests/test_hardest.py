"""poseops hardest: the labeled frames with the highest error of a bodypart / condition, written
in DeepLabCut's refine layout (machinelabels-iter<N>.h5 beside the labeled frames + manifest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops.cli import main

BPS = ["snout", "leftear", "rightear", "tailbase"]


@pytest.fixture
def project_errors(demo_src, tmp_path):
    """A copy of the small demo and an errors table over its labeled frames: small random
    errors, three frames with a large tailbase error and one with a huge snout error."""
    from poseops.data.ingest import ingest_project

    proj = tmp_path / "proj"
    shutil.copytree(demo_src[0], proj)
    labels = ingest_project(proj, demo_src[1])
    labels = labels[labels.labeled].drop_duplicates(["image", "bodypart"])
    rng = np.random.default_rng(0)
    e = labels[["image", "video", "bodypart", "condition", "x", "y"]].copy()
    e["split"] = np.where(e.image.rank(method="dense").astype(int) % 3 == 0, "test", "train")
    e["error_px"] = rng.uniform(0, 3, len(e))
    images = sorted(e.image.unique())
    tail = {images[5]: 14.0, images[17]: 10.0, images[29]: 12.0}
    snout_img = images[11]
    for img, err in tail.items():
        e.loc[(e.image == img) & (e.bodypart == "tailbase"), "error_px"] = err
    e.loc[(e.image == snout_img) & (e.bodypart == "snout"), "error_px"] = 40.0
    e["pred_x"], e["pred_y"] = e.x + e.error_px, e.y
    e["likelihood"], e["labeled"] = 0.9, True
    path = tmp_path / "errors.parquet"
    e.to_parquet(path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "project": {"path": str(proj)},
        "hardest": {"manifest": str(tmp_path / "hardest" / "manifest.csv")}}))
    return proj, path, e, tail, snout_img


def _argv(tmp_path: Path, path: Path, *extra: str) -> list[str]:
    return ["hardest", "--errors", str(path), "--params", str(tmp_path / "params.yaml"), *extra]


def test_hardest_frames_of_a_bodypart_in_refine_layout(project_errors, tmp_path):
    proj, path, e, tail, snout_img = project_errors
    assert main(_argv(tmp_path, path, "--bodypart", "tailbase", "-n", "3")) == 0
    man = pd.read_csv(tmp_path / "hardest" / "manifest.csv")
    # independent: the three tailbase errors, highest first; the huge snout frame is not aimed at
    assert man.image.tolist() == sorted(tail, key=tail.get, reverse=True)
    assert man.score_px.tolist() == [14.0, 12.0, 10.0] and snout_img not in set(man.image)
    assert (man.worst_bodypart == "tailbase").all() and man["rank"].tolist() == [1, 2, 3]
    # machinelabels: every bodypart of those frames at the model's prediction
    for img in man.image:
        video, name = Path(img).parent.name, Path(img).name
        ml = pd.read_hdf(proj / "labeled-data" / video / "machinelabels-iter0.h5",
                         "df_with_missing")
        assert list(dict.fromkeys(ml.columns.get_level_values("bodyparts"))) == BPS
        row = ml.loc[("labeled-data", video, name)]
        for bp in BPS:
            truth = e[(e.image == img) & (e.bodypart == bp)].iloc[0]
            assert row[("machine", bp, "x")] == pytest.approx(truth.pred_x)
            assert row[("machine", bp, "y")] == pytest.approx(truth.pred_y)
        assert (proj / img).is_file()  # the labeled frame itself, with its CollectedData


def test_hardest_without_bodypart_ranks_by_the_mean_and_filters_conditions(project_errors,
                                                                            tmp_path):
    proj, path, e, tail, snout_img = project_errors
    assert main(_argv(tmp_path, path, "-n", "2")) == 0
    man = pd.read_csv(tmp_path / "hardest" / "manifest.csv")
    mean = e.groupby("image").error_px.mean().sort_values(ascending=False)
    assert man.image.tolist() == mean.index[:2].tolist() and man.image[0] == snout_img
    cond = e.loc[e.image == snout_img, "condition"].iloc[0]
    other = sorted(set(e.condition) - {cond})[0]
    assert main(_argv(tmp_path, path, "-n", "50", "--condition", other)) == 0
    man = pd.read_csv(tmp_path / "hardest" / "manifest.csv")
    assert set(man.condition) == {other}
    assert len(man) == e.loc[e.condition == other, "image"].nunique()


def test_unknown_bodypart_is_one_line(project_errors, tmp_path, capsys):
    _, path, *_ = project_errors
    assert main(_argv(tmp_path, path, "--bodypart", "nose")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bodypart 'nose'" in err and "errors.parquet" in err
