"""The refinement loop end to end on the small demo, with real DeepLabCut training:
iteration 0 trained -> the unlabeled video analysed -> outlier frames extracted -> "relabeled"
from the generator's ground truth -> merged (DVC + git tag) -> iteration 1 trained on the same
fixed test set -> compared. Either dataset version is rebuilt from git + DVC (`dvc repro`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.refine import git_identity, make_repo, relabel_from_truth, sh

PARAMS_YAML = """\
project:
  path: data/raw/demo
  format: dlc
  metadata: data/metadata/videos.csv
ingest:
  out: data/interim/labels.parquet
"""
DVC_YAML = """\
stages:
  ingest:
    cmd: poseops ingest
    deps: [data/raw/demo, data/metadata/videos.csv]
    params: [project, ingest]
    outs: [data/interim/labels.parquet]
"""


def _labels_and_split(project: Path, meta: Path, fixed: Path | None):
    from poseops.config.data import SplitParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import honour_fixed_split, make_split

    labels = build_consensus(ingest_project(project, meta))
    split = make_split(labels, SplitParams())
    if fixed is not None:
        split = honour_fixed_split(split, pd.read_csv(fixed))
        labels = labels[labels.image.isin(split.image)]
    return labels, split


def _test_errors(tr, labels, split) -> pd.DataFrame:
    from poseops.dlc.inference import predict
    from poseops.evaluate.metrics import compute_errors

    images = sorted(split["image"])  # compute_errors wants every split image predicted
    preds = predict(tr.pytorch_config_path, tr.snapshot, tr.config_path.parent, images,
                    device="cpu")
    return compute_errors(labels, preds, split, ["snout", "tailbase"])


def _n_images_after_repro(repo: Path, tag: str) -> int:
    sh(["git", "checkout", "-q", "-f", tag], repo)
    sh(["dvc", "checkout", "-q", "--force"], repo)
    sh(["dvc", "repro", "-q"], repo)
    return pd.read_parquet(repo / "data/interim/labels.parquet")["image"].nunique()


@pytest.mark.slow
def test_refinement_loop_end_to_end(tmp_path, monkeypatch, mlflow_uri):
    from poseops.config.demo import DemoParams
    from poseops.config.refine import AnalyzeParams, CompareParams, MergeParams, OutliersParams
    from poseops.config.train import TrainParams
    from poseops.demo.project import generate_demo
    from poseops.refine import analyze, compare, merge, outliers
    from poseops.train.trainer import train_model

    git_identity(monkeypatch)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # 4 animals x 3 sessions (12 labeled 30-frame videos, 6 frames each) + unlabeled m1-s4:
    # enough video groups for a grouped train/val/test split
    src = tmp_path / "src"
    generate_demo(src / "demo", DemoParams.small(animals=4), metadata=src / "videos.csv")
    repo, project, meta = make_repo(tmp_path, src / "demo", src / "videos.csv")
    (repo / "params.yaml").write_text(PARAMS_YAML)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    sh(["dvc", "repro", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "pipeline"], repo)
    monkeypatch.chdir(repo)
    tparams = TrainParams(net_type="cspnext_s", epochs=2, batch_size=8, pretrained=False,
                          device="cpu", save_epochs=1, experiment="refine-e2e",
                          registered_model=None)

    # iteration 0
    labels0, split0 = _labels_and_split(project, meta, None)
    Path("data/processed").mkdir(parents=True, exist_ok=True)
    split0.to_csv("data/processed/split.csv", index=False)
    tr0 = train_model(tparams, labels0, split0, project, tmp_path / "train0", tracking_uri=mlflow_uri)
    assert "iteration-0" in str(tr0.model_dir)

    # analyze the video nobody labeled, pick outliers
    video = project / "videos" / "m1-s4.mp4"
    assert not (project / "labeled-data" / "m1-s4").exists()
    ap = AnalyzeParams(config=str(tr0.config_path), shuffle=tr0.shuffle,
                               out=str(tmp_path / "analyze"))
    preds = analyze.analyze_videos(ap, [video])
    assert preds.frame.nunique() == 30 and preds.likelihood.between(0, 1).all()
    assert list((tmp_path / "analyze").glob("m1-s4DLC*.h5"))  # DLC's own output file
    op = OutliersParams(predictions=str(tmp_path / "analyze" / "predictions.parquet"),
                                 uncertain_fraction=0.2, n_frames=6)
    manifest = outliers.pick_outliers(op, project, meta)
    assert 1 <= len(manifest) <= 6 and set(manifest.video) == {"m1-s4"}
    assert (project / "labeled-data/m1-s4/machinelabels-iter0.h5").is_file()

    # the annotator relabels from the generator's truth; merge -> iteration 1
    relabel_from_truth(project, manifest, "alice")
    report = merge.merge_iteration(MergeParams(), project)
    assert report["iteration"] == 1
    assert yaml.safe_load((project / "config.yaml").read_text())["iteration"] == 1

    # iteration 1: same test set, new frames in train/val only
    labels1, split1 = _labels_and_split(project, meta, Path("data/processed/fixed_split.csv"))
    t0 = sorted(split0.loc[split0.split == "test", "image"])
    t1 = sorted(split1.loc[split1.split == "test", "image"])
    assert t0 == t1 and t0
    new = split1[split1.image.isin(manifest.image)]
    assert len(new) == len(manifest) and set(new.split) <= {"train", "val"}
    assert labels1.image.nunique() == labels0.image.nunique() + len(manifest)
    tr1 = train_model(tparams, labels1, split1, project, tmp_path / "train1", tracking_uri=mlflow_uri)
    assert "iteration-1" in str(tr1.model_dir)

    # compare on the fixed test set
    e0, e1 = _test_errors(tr0, labels0, split0), _test_errors(tr1, labels1, split1)
    e0.to_parquet(tmp_path / "e0.parquet")
    e1.to_parquet(tmp_path / "e1.parquet")
    cp = CompareParams(n_boot=500, out=str(tmp_path / "reports" / "compare"))
    res = compare.compare_models(cp, str(tmp_path / "e0.parquet"), str(tmp_path / "e1.parquet"))
    s = json.loads((tmp_path / "reports/compare/summary.json").read_text())
    assert s["n_frames"] == len(t0) and s["unit"] == "video"
    from scipy.stats import wilcoxon

    f = res["per_frame"]
    assert s["n_units"] == f.video.nunique()
    assert np.isfinite(s["rmse_change_pct"])
    if s["n_units"] < cp.min_units:  # the demo's few test videos: no p-value / CI, and why
        # NaN is written as JSON null (strict JSON)
        assert s["wilcoxon"]["p_value"] is None and "need >= 5" in s["wilcoxon"]["reason"]
        assert s["ci_low_px"] is None and s["ci_reason"]
    else:
        per_video = (f.error_candidate - f.error_baseline).groupby(f.video).mean()
        assert s["wilcoxon"]["p_value"] == pytest.approx(wilcoxon(per_video).pvalue)
        assert s["ci_low_px"] <= s["ci_high_px"]
    # unit image: every frame a sample (the optimistic per-frame statistics)
    frame = compare.compare_tables(e0, e1, CompareParams(n_boot=500, unit="image"))
    sf = frame["summary"]
    assert sf["wilcoxon"]["p_value"] == pytest.approx(
        wilcoxon(f.error_candidate, f.error_baseline).pvalue)
    assert sf["ci_low_px"] <= sf["ci_high_px"]

    # two dataset versions in git + DVC, each rebuilt by dvc repro
    tags = sh(["git", "tag", "--list"], repo).split()
    assert {"iteration-0", "iteration-1"} <= set(tags)
    d0 = sh(["git", "show", "iteration-0:data/raw/demo.dvc"], repo)
    d1 = sh(["git", "show", "iteration-1:data/raw/demo.dvc"], repo)
    assert d0 != d1
    assert _n_images_after_repro(repo, "iteration-0") == labels0.image.nunique()
    assert _n_images_after_repro(repo, "iteration-1") == labels1.image.nunique()
