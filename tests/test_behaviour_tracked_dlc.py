"""Real DeepLabCut (slow): ``analyze.track: true`` on a multi-animal model runs DLC's tracking
(tracklets + stitching) and ``poseops behaviour`` computes per-individual trajectories from it,
with DLC's median filter on the tracked file (issue 23).

The model is trained for 1 epoch (the CI budget): DLC's stitcher then usually finds no tracklet
long enough (``Tracklets are empty``) and analyze must say so in one line; when it does track,
the tracked file, the tidy table and the per-individual behaviour rows are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.core import schema as S
from poseops.core.errors import PoseopsError


@pytest.mark.slow
def test_analyze_track_gives_individuals_and_behaviour_rows_per_individual(tmp_path: Path) -> None:
    from support.train import tiny

    from poseops.behaviour.stage import Model, run_behaviour
    from poseops.config.behaviour import BehaviourParams
    from poseops.config.data import SplitParams
    from poseops.config.demo import BODYPARTS, DemoParams
    from poseops.config.refine import AnalyzeParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo
    from poseops.dlc import files as dlcio
    from poseops.refine import analyze as A
    from poseops.train.trainer import train_model

    project, meta = tmp_path / "raw" / "demo", tmp_path / "metadata" / "videos.csv"
    generate_demo(project, DemoParams.small_multi(), metadata=meta)
    labels = build_consensus(ingest_project(project, meta))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    res = train_model(tiny(epochs=1), labels, split, project, tmp_path / "train",
                      tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "analyze"
    video = sorted((project / "videos").glob("*.mp4"))[-1]
    try:
        preds = A.analyze_videos(AnalyzeParams(config=str(res.config_path), shuffle=res.shuffle,
                                               out=str(out), track=True), [video])
    except PoseopsError as e:  # a 1-epoch model: DLC's tracker ran, found nothing to stitch
        assert "\n" not in str(e) and "no tracklet to stitch" in str(e) and video.name in str(e)
        assert list(out.glob(f"{video.stem}DLC*_el.pickle"))  # DLC's tracklets (auto_track)
        assert not list(out.glob("*_el.h5")) and not (out / "predictions.parquet").exists()
        return
    # DLC's tracked file, read back as the tidy per-individual table
    (h5,) = out.glob(f"{video.stem}DLC*_el.h5")
    dlc = pd.read_hdf(h5)
    assert list(dlc.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    individuals = dlcio.config_individuals(dlcio.read_config(project))
    assert S.INDIVIDUAL in preds.columns and S.ASSEMBLY not in preds.columns
    assert set(preds[S.INDIVIDUAL]) <= set(individuals) | {S.SINGLE}
    stored = pd.read_parquet(out / "predictions.parquet")
    assert stored[S.INDIVIDUAL].tolist() == preds[S.INDIVIDUAL].tolist()
    scorer = dlc.columns[0][0]
    for _, r in preds.dropna(subset=[S.X]).sample(10, random_state=0, replace=True).iterrows():
        col = (scorer, r[S.INDIVIDUAL], r[S.BODYPART])
        assert dlc.loc[r[S.FRAME], (*col, "x")] == pytest.approx(r[S.X])
        assert dlc.loc[r[S.FRAME], (*col, "likelihood")] == pytest.approx(r[S.LIKELIHOOD])
    # behaviour per individual, DLC's median filter on the tracked file
    params = BehaviourParams(analyzed=str(out), filter="median", arena=None, manual=None,
                             fps=30.0, px_per_cm=4.0, pcutoff=0.0, reference=list(BODYPARTS),
                             out=str(tmp_path / "beh"), workdir=str(tmp_path / "work"),
                             log_mlflow=False)
    t = run_behaviour(params, None, Model(res.config_path, res.shuffle))
    tracked = sorted(set(preds.loc[preds[S.X].notna(), S.INDIVIDUAL]) - {S.SINGLE})
    assert tracked, "DLC tracked no individual"
    beh = pd.read_csv(tmp_path / "beh" / "behaviour.csv")
    assert sorted(beh[S.INDIVIDUAL]) == tracked  # one row per tracked individual
    assert (tmp_path / "work" / f"{h5.stem}_filtered.h5").is_file()
    q = t.quality[t.quality[S.BODYPART] == "centroid"]
    assert set(q[S.INDIVIDUAL]) == set(tracked) and set(q["filtered"]) == {False, True}
    assert np.isfinite(beh["distance_cm"]).all()
