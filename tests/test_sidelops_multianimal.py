"""The side loops on multi-animal (maDLC) projects: outliers, merge, compare, analyze, sweep.

Outlier frames are scored over every animal of a frame (assemblies are untracked: no identity
between frames), their machinelabels are DLC's 4-level refine file; relabeled 4-level
CollectedData merge as the next iteration (checked against the config by dlcio); compare pairs
two multi-animal errors tables per (image, individual, bodypart); analyze writes DLC's
per-assembly frame; the sweep's promoted test error is the multi-animal evaluation's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.refine import git_identity, make_repo, sh

from poseops.config.refine import (
    AnalyzeParams,
    CompareParams,
    ExtractParams,
    MergeParams,
    OutliersParams,
)
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.dlc import files as dlcio
from poseops.evaluate import matching as MA
from poseops.evaluate import metrics as M
from poseops.refine import compare as C
from poseops.refine import merge as MG
from poseops.refine import outliers as O

UNIQUE = ["marker"]
BPS = ["nose", "body", "tail"]


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ma_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small multi-animal demo (2 animals per video, unique floor marker; read-only):
    project folder and metadata CSV."""
    from poseops.config.demo import DemoParams
    from poseops.demo.project import generate_demo

    root = tmp_path_factory.mktemp("ma_side")
    project = root / "raw" / "demo"
    generate_demo(project, DemoParams.small_multi(unique_bodyparts=UNIQUE),
                  metadata=root / "metadata" / "videos.csv")
    return project, root / "metadata" / "videos.csv"


def _truth_preds(project: Path, video: str) -> pd.DataFrame:
    """analyze-like multi-animal predictions of one video from the generator's true tracks:
    assembly k = the k-th config individual, unique bodyparts assembly -1, likelihood 0.95."""
    cfg = dlcio.read_config(project)
    t = pd.read_csv(project / "ground_truth_tracks.csv")
    t = t[t.video == video].copy()
    order = {ind: k for k, ind in enumerate(dlcio.config_individuals(cfg))} | {S.SINGLE: -1}
    t[S.ASSEMBLY] = t[S.INDIVIDUAL].map(order).astype(int)
    return t.drop(columns=[S.INDIVIDUAL]).assign(likelihood=0.95, scorer="DLC_ma")


def _relabel_ma(project: Path, manifest: pd.DataFrame, scorer: str,
                move: dict[str, str] | None = None) -> Path:
    """The annotator on a multi-animal project: the manifest frames labeled with the true
    keypoints, saved as DLC's 4-level CollectedData. ``move``: {bodypart: individual} puts a
    bodypart under the wrong individual (a broken file)."""
    cfg = dlcio.read_config(project)
    tracks = pd.read_csv(project / "ground_truth_tracks.csv")
    (video,) = manifest.video.unique()
    t = tracks[(tracks.video == video) & tracks.frame.isin(manifest.frame)]
    t = t.merge(manifest[["frame", "image"]], on="frame").assign(scorer=scorer)
    inds = dlcio.config_individuals(cfg)
    if move:
        for bp, ind in move.items():
            t.loc[t.bodypart == bp, S.INDIVIDUAL] = ind
            t = t.drop_duplicates([S.IMAGE, S.INDIVIDUAL, S.BODYPART])
    h5 = project / "labeled-data" / video / f"CollectedData_{scorer}.h5"
    # a moved unique bodypart becomes an animal's column (as a wrong GUI config would write it)
    unique = [] if move else dlcio.config_unique_bodyparts(cfg)
    wide = dlcio.labels_to_wide(t[[S.IMAGE, S.SCORER, S.INDIVIDUAL, S.BODYPART, S.X, S.Y]], scorer,
                                dlcio.config_bodyparts(cfg), individuals=inds,
                                unique_bodyparts=unique)
    dlcio.write_collected_data(wide, h5)
    return h5


@pytest.fixture
def ma_picked(ma_src, tmp_path, monkeypatch):
    """git+DVC repo of the multi-animal demo at iteration 0 with outlier frames 4, 9, 17 of the
    unlabeled video g1-s4 picked (animal2's snout planted at likelihood 0.1)."""
    git_identity(monkeypatch)
    repo, project, meta = make_repo(tmp_path, *ma_src)
    monkeypatch.chdir(repo)
    preds = _truth_preds(project, "g1-s4")
    low = preds.frame.isin([4, 9, 17]) & (preds.bodypart == "snout") & (preds[S.ASSEMBLY] == 1)
    preds.loc[low, "likelihood"] = 0.1
    preds.to_parquet(tmp_path / "preds.parquet")
    op = OutliersParams(predictions=str(tmp_path / "preds.parquet"), uncertain_fraction=0.0,
                          epsilon=1e6, n_frames=3, manifest="data/refine/outliers/manifest.csv")
    manifest = O.pick_outliers(op, project, meta)
    split = pd.DataFrame({"image": ["labeled-data/g1-s1/img03.png"], "video": ["g1-s1"],
                          "group": ["g1-s1"], "split": ["test"]})
    Path("data/processed").mkdir(parents=True)
    split.to_csv("data/processed/split.csv", index=False)
    return repo, project, manifest, preds


# ------------------------------------------------------------------------ outliers
def _crossing(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Two animals walking towards each other, assembly order flipping every frame (untracked),
    a third assembly slot always empty (score -1), one unique bodypart."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n):
        a = np.array([[20 + 3 * f + 8 * j, 50.0] for j in range(3)])
        b = np.array([[120 - 3 * f - 8 * j, 60.0] for j in range(3)])
        order = (a, b) if f % 2 == 0 else (b, a)
        for k, xy in enumerate(order):
            for bp, (x, y) in zip(BPS, xy, strict=True):
                rows.append(("v", f, k, bp, x, y, 0.9 + 0.05 * rng.random()))
        for bp in BPS:
            rows.append(("v", f, 2, bp, -1.0, -1.0, -1.0))
        rows.append(("v", f, -1, "corner", 5.0, 5.0, 0.95))
    return pd.DataFrame(rows, columns=[S.VIDEO, S.FRAME, S.ASSEMBLY, S.BODYPART, S.X, S.Y,
                                       S.LIKELIHOOD])


def test_untracked_assemblies_score_per_frame_over_all_animals():
    """Per frame over every predicted keypoint of every animal: an empty assembly slot (score
    -1) is no low likelihood; the untracked order flipping between frames is no jump (each
    keypoint moved 3 px); a planted displacement and a planted low likelihood are found."""
    p = _crossing()
    plain = O.candidate_frames(p, p_bound=0.6, epsilon=10, uncertain_fraction=0.0)
    assert not plain.low_likelihood.any() and not plain.jump.any()
    ok = p[p.likelihood >= 0]
    for f, part in ok.groupby("frame"):
        row = plain[plain.frame == f].iloc[0]
        assert row.mean_likelihood == pytest.approx(part.likelihood.mean())
        assert row.min_likelihood == pytest.approx(part.likelihood.min())
    assert plain.jump_px.iloc[1:].to_numpy() == pytest.approx(3.0)
    assert np.isnan(plain.jump_px.iloc[0])
    q = p.copy()
    hit = (q.frame == 7) & (q[S.ASSEMBLY] == 1) & (q.bodypart == "tail")
    q.loc[hit, S.Y] += 30.0
    q.loc[(q.frame == 4) & (q[S.ASSEMBLY] == 0) & (q.bodypart == "nose"), S.LIKELIHOOD] = 0.1
    c = O.candidate_frames(q, p_bound=0.6, epsilon=10, uncertain_fraction=0.0).set_index("frame")
    assert c.index[c.jump].tolist() == [7, 8]  # out at 7, back at 8
    # the displaced tail is 30 px off its own track; its nearest previous tail is the same animal
    prev_tails = p[(p.frame == 6) & (p.bodypart == "tail") & (p.likelihood >= 0)][["x", "y"]]
    moved = q[hit][["x", "y"]].to_numpy()[0]
    expect = np.hypot(*(prev_tails.to_numpy() - moved).T).min()
    assert c.loc[7, "jump_px"] == pytest.approx(expect)
    assert c.index[c.low_likelihood].tolist() == [4]


def test_outliers_on_multianimal_demo_write_4_level_machinelabels(ma_picked):
    """On the multi-animal demo: exactly the planted frames; machinelabels-iter0.h5 is DLC's
    multi-animal refine file (scorer/individuals/bodyparts/coords, config order, unique
    bodyparts under 'single') holding the predictions."""
    _, project, manifest, preds = ma_picked
    assert sorted(manifest.frame) == [4, 9, 17]
    ml = pd.read_hdf(project / "labeled-data" / "g1-s4" / "machinelabels-iter0.h5",
                     "df_with_missing")
    cfg = dlcio.read_config(project)
    assert list(ml.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    inds = dlcio.config_individuals(cfg)
    want = [(i, b) for i in inds for b in dlcio.config_multianimal_bodyparts(cfg)]
    want += [(S.SINGLE, b) for b in UNIQUE]
    got = list(dict.fromkeys(zip(ml.columns.get_level_values(1), ml.columns.get_level_values(2),
                                 strict=True)))
    assert got == want
    for img, f in zip(manifest.image, manifest.frame, strict=True):
        row = ml.loc[tuple(img.split("/"))]
        for _, r in preds[preds.frame == f].iterrows():
            ind = S.SINGLE if r[S.ASSEMBLY] < 0 else inds[int(r[S.ASSEMBLY])]
            assert row[("DLC_ma", ind, r.bodypart, "x")] == pytest.approx(r.x, nan_ok=True)
            assert row[("DLC_ma", ind, r.bodypart, "likelihood")] == pytest.approx(r.likelihood)
        assert (project / img).is_file()


# ------------------------------------------------------------------------ merge
def test_merge_of_relabeled_multianimal_frames(ma_picked):
    """Relabeled 4-level CollectedData merge as iteration 1 (git tag, fixed split); read back
    with dlcio against the config, the labels are the annotator's per individual."""
    repo, project, manifest, _ = ma_picked
    h5 = _relabel_ma(project, manifest, "alice")
    report = MG.merge_iteration(MergeParams(), project)
    assert report["iteration"] == 1 and report["frames_added"] == 3
    cfg = dlcio.read_config(project)
    assert cfg["iteration"] == 1 and any(Path(v).stem == "g1-s4" for v in cfg["video_sets"])
    assert "iteration-1" in sh(["git", "tag", "--list"], repo).split()
    back = dlcio.wide_to_long(dlcio.read_collected_data(h5, cfg))
    tracks = pd.read_csv(project / "ground_truth_tracks.csv")
    t = tracks[(tracks.video == "g1-s4") & tracks.frame.isin(manifest.frame)]
    t = t.merge(manifest[["frame", "image"]], on="frame")
    m = back.merge(t, on=[S.IMAGE, S.INDIVIDUAL, S.BODYPART], suffixes=("", "_true"))
    assert len(m) == len(t) == len(back)
    assert np.allclose(m.x, m.x_true, equal_nan=True) and np.allclose(m.y, m.y_true, equal_nan=True)
    assert report["keypoints_added"] == int(np.isfinite(t.x).sum())


def test_merge_refuses_a_unique_bodypart_under_an_animal(ma_picked):
    repo, project, manifest, _ = ma_picked
    cfg_before = (project / "config.yaml").read_text()
    h5 = _relabel_ma(project, manifest, "alice", move={"marker": "animal1"})
    with pytest.raises(PoseopsError) as e:
        MG.merge_iteration(MergeParams(), project)
    msg = str(e.value)
    assert "\n" not in msg and str(h5) in msg and "marker" in msg and "unique" in msg
    assert (project / "config.yaml").read_text() == cfg_before
    assert "iteration-1" not in sh(["git", "tag", "--list"], repo).split()


# ------------------------------------------------------------------------ compare
W, H = 200, 150


def _animal(cx: float, cy: float) -> np.ndarray:
    return np.array([[cx + 15, cy - 6], [cx, cy], [cx - 15, cy + 8]], float)


def _ma_tables(noise: float, seed: int, reverse: bool,
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Labels, predictions and split (all test) of 3 videos x 4 images x 2 animals + a unique
    bodypart, predictions = truth + known offsets; ``reverse`` lists the assemblies backwards.
    Returns (labels, predictions, split, {(image, individual, bodypart): the offset's length})."""
    rng = np.random.default_rng(seed)
    lab, pred, dist = [], [], {}
    for v in range(3):
        for k in range(4):
            image = f"labeled-data/v{v}/img{k:02d}.png"
            animals = {"a1": _animal(40 + 10 * k, 40), "a2": _animal(150 - 10 * k, 110)}
            names = list(animals)[::-1] if reverse else list(animals)
            for a, ind in enumerate(names):
                off = rng.normal(0, noise, (3, 2))
                for bp, xy, o in zip(BPS, animals[ind], off, strict=True):
                    lab.append((image, ind, bp, *xy))
                    pred.append((image, a, bp, *(xy + o), 0.9))
                    dist[(image, ind, bp)] = float(np.hypot(*o))
            o = rng.normal(0, noise, 2)
            lab.append((image, S.SINGLE, "corner", 8.0, 8.0))
            pred.append((image, -1, "corner", 8.0 + o[0], 8.0 + o[1], 0.9))
            dist[(image, S.SINGLE, "corner")] = float(np.hypot(*o))
    labels = pd.DataFrame(lab, columns=[S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y])
    labels[S.VIDEO] = labels[S.IMAGE].str.split("/").str[1]
    labels[S.SCORER] = S.CONSENSUS_SCORER
    labels[S.WIDTH], labels[S.HEIGHT] = W, H
    labels[S.LABELED] = True
    preds = pd.DataFrame(pred, columns=MA.MA_PREDICTION_COLUMNS)
    split = pd.DataFrame({S.IMAGE: labels[S.IMAGE].unique(), S.SPLIT: S.TEST})
    return labels, preds, split, dist


def _ma_errors(noise: float, seed: int, reverse: bool) -> tuple[pd.DataFrame, dict]:
    """(metrics.compute_errors of :func:`_ma_tables`, the offsets' lengths)."""
    labels, preds, split, dist = _ma_tables(noise, seed, reverse)
    return M.compute_errors(labels, preds, split), dist


def test_compare_pairs_multianimal_errors_per_individual():
    """Pairs per (image, individual, bodypart) (the candidate's assemblies listed in another
    order); per-frame errors are the mean over every animal's keypoints; per-individual and
    animals-in-frame tables appear. All checked against the known offsets."""
    base, db = _ma_errors(4.0, 0, reverse=False)
    cand, dc = _ma_errors(1.0, 1, reverse=True)
    res = C.compare_tables(base, cand, CompareParams(unit="video", n_boot=200))
    frames = res["per_frame"].set_index(S.IMAGE)
    assert len(frames) == 12 and (frames["n_bodyparts"] == 7).all()
    for image, row in frames.iterrows():
        kb = [d for k, d in db.items() if k[0] == image]
        kc = [dc[k] for k in db if k[0] == image]
        assert row["error_baseline"] == pytest.approx(np.mean(kb))
        assert row["error_candidate"] == pytest.approx(np.mean(kc))
    ind = res[S.INDIVIDUAL].set_index("stratum")
    assert sorted(ind.index) == ["a1", "a2", S.SINGLE]
    for name in ("a1", "a2", S.SINGLE):
        assert ind.loc[name, "mean_baseline"] == pytest.approx(
            np.mean([d for k, d in db.items() if k[1] == name]))
        assert ind.loc[name, "mean_candidate"] == pytest.approx(
            np.mean([d for k, d in dc.items() if k[1] == name]))
    assert res["summary"]["n_keypoints"] == len(db)
    assert list(res[S.ANIMALS_IN_FRAME]["stratum"]) == [2]


def test_compare_run_writes_the_per_individual_table(tmp_path):
    base, db = _ma_errors(4.0, 0, reverse=False)
    cand, _ = _ma_errors(1.0, 1, reverse=True)
    base.to_parquet(tmp_path / "b.parquet")
    cand.to_parquet(tmp_path / "c.parquet")
    C.compare_models(CompareParams(out=str(tmp_path / "cmp"), log_mlflow=False, n_boot=100),
          str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet"))
    ind = pd.read_csv(tmp_path / "cmp" / f"{S.INDIVIDUAL}.csv").set_index("stratum")
    assert ind.loc["a2", "n"] == sum(k[1] == "a2" for k in db)
    assert ind.loc["a2", "mean_baseline"] == pytest.approx(
        np.mean([d for k, d in db.items() if k[1] == "a2"]))


def test_compare_refuses_a_single_animal_against_a_multianimal_table():
    base, _ = _ma_errors(4.0, 0, reverse=False)
    single = base.drop(columns=[S.INDIVIDUAL]).drop_duplicates([S.IMAGE, S.BODYPART])
    with pytest.raises(PoseopsError, match="individual"):
        C.compare_tables(base, single, CompareParams())



# ------------------------------------------------------------------------ sweep
def test_sweep_promoted_test_error_is_evaluates_on_multianimal_labels(tmp_path):
    """The promoted trial's test numbers on a multi-animal project equal poseops evaluate's
    headline on the same predictions (matching to the labeled animals, DLC's mAP/mAR), and
    the pixel error is the known offsets' mean on the test images."""
    from poseops.config.evaluate import EvaluateParams
    from poseops.evaluate.tables import evaluate_tables
    from poseops.sweep.results import split_test_metrics

    labels, preds, split, dist = _ma_tables(3.0, 2, reverse=True)
    split.loc[split[S.IMAGE].str.contains("/v0/"), S.SPLIT] = S.TRAIN  # test = v1, v2
    cfg = tmp_path / "config.yaml"
    cfg.write_text("individuals: [a1, a2]\npcutoff: 0.6\nmultianimalproject: true\n")
    got = split_test_metrics(labels, preds, split, cfg)
    ev = evaluate_tables(labels, preds, split, None,
                         EvaluateParams(reference_bodyparts=["nose", "tail"], bias_factors=[]),
                         0.6, ["a1", "a2"])
    head = ev.headline[S.TEST]
    assert got["test.mean_px"] == pytest.approx(head["mean_px"])
    assert got["test.rmse_px"] == pytest.approx(head["rmse_px"])
    assert got["test.mAP"] == pytest.approx(head["mAP"]) and got["test.mAR"] == pytest.approx(
        head["mAR"])
    test_d = [d for k, d in dist.items() if "/v0/" not in k[0]]
    assert got["test.mean_px"] == pytest.approx(np.mean(test_d))
    assert got["test.rmse_px"] == pytest.approx(np.sqrt(np.mean(np.square(test_d))))


# ------------------------------------------------------------------------ analyze
def test_analyze_reads_dlcs_untracked_multianimal_output(tmp_path):
    """The 4-level frame DLC's analyze_videos writes for a multi-animal model (its own
    create_df_from_prediction) read back per assembly: values equal the runner's arrays,
    unique bodyparts at assembly -1; the likelihood summary leaves empty slots (score -1) out."""
    from deeplabcut.pose_estimation_pytorch.apis.videos import create_df_from_prediction

    from poseops.dlc.inference import predictions_from_dlc
    from poseops.refine import analyze as A

    rng = np.random.default_rng(3)
    n, n_asm = 6, 3
    arr = rng.uniform(0, 100, (n, n_asm, len(BPS), 3))
    arr[..., 2] = rng.uniform(0, 1, (n, n_asm, len(BPS)))
    arr[:, 2] = -1.0  # the third slot never filled (as the runner pads)
    uni = rng.uniform(0, 1, (n, 1, 1, 3))
    model_cfg = {"metadata": {"bodyparts": BPS, "unique_bodyparts": ["corner"],
                              "individuals": ["a1", "a2", "a3"]}}
    df = create_df_from_prediction(
        [{"bodyparts": arr[f], "unique_bodyparts": uni[f, 0]} for f in range(n)],
        "DLC_ma", True, model_cfg, tmp_path, "v")
    back = pd.read_hdf(tmp_path / "v.h5", "df_with_missing")
    assert back.columns.nlevels == 4 and back.equals(df)
    p = predictions_from_dlc(back, "v")
    assert len(p) == n * (n_asm * len(BPS) + 1)
    for (f, a, j) in [(0, 0, 0), (3, 1, 2), (5, 2, 1)]:
        row = p[(p.frame == f) & (p[S.ASSEMBLY] == a) & (p.bodypart == BPS[j])].iloc[0]
        assert (row.x, row.y, row.likelihood) == tuple(arr[f, a, j])
    u = p[(p.frame == 4) & (p[S.ASSEMBLY] == -1)].iloc[0]
    assert u.bodypart == "corner" and (u.x, u.y, u.likelihood) == tuple(uni[4, 0, 0])
    s = A.likelihood_summary(p, pcutoff=0.5).set_index("frame")
    lik = np.concatenate([arr[2, :2, :, 2].ravel(), uni[2, 0, :, 2]])
    assert s.loc[2, "mean_likelihood"] == pytest.approx(lik.mean())
    assert s.loc[2, "min_likelihood"] == pytest.approx(lik.min())
    assert s.loc[2, "n_bodyparts"] == len(lik)
    assert s.loc[2, "n_below_pcutoff"] == int((lik < 0.5).sum())


# ------------------------------------------------------------------------ extract
def test_extract_on_multianimal_demo_picks_unlabeled_frames(ma_src, tmp_path):
    """extract needs no bodyparts: on the multi-animal demo it picks condition-balanced frames
    that are not labeled yet and writes them as DLC names them."""
    import shutil

    from poseops.refine import common as R
    from poseops.refine import frames as E

    proj = tmp_path / "proj"
    shutil.copytree(ma_src[0], proj)
    before = {(v.name, f) for v in (proj / "labeled-data").iterdir()
              for f in R.labeled_frames(proj, v.name)}
    man = E.extract_frames(ExtractParams(n_frames=6, manifest=str(tmp_path / "m.csv"),
                                coverage=str(tmp_path / "c.csv")), proj, ma_src[1])
    assert len(man) == 6 and man["condition"].value_counts().tolist() == [2, 2, 2]
    assert before and not set(zip(man.video, man.frame, strict=True)) & before
    assert all((proj / img).is_file() for img in man.image)


# ------------------------------------------------------------------------ slow: real DLC
@pytest.mark.slow
def test_trained_multianimal_model_through_analyze_outliers_and_sweep_test(ma_src, tmp_path,
                                                                           monkeypatch):
    """A 2-epoch multi-animal model (cspnext_s + PAF, CPU): ``poseops analyze`` on the unlabeled
    video writes DLC's 4-level per-assembly h5 and a tidy table equal to it; ``outliers`` picks
    frames from it; the sweep's promoted-trial test error equals ``evaluate_tables`` on the
    same snapshot's predictions."""
    from poseops.config.data import SplitParams
    from poseops.config.evaluate import EvaluateParams
    from poseops.config.train import TrainParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.dlc.inference import predict
    from poseops.evaluate.tables import evaluate_tables
    from poseops.refine import analyze as A
    from poseops.sweep.results import info_test_metrics
    from poseops.sweep.space import TrainInputs
    from poseops.train.trainer import train_model

    project, meta = ma_src
    labels = build_consensus(ingest_project(project, meta))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    params = TrainParams(epochs=2, batch_size=8, pretrained=False, device="cpu", save_epochs=1,
                         experiment="t", registered_model="t-model", tracking_timeout_s=5.0)
    res = train_model(params, labels, split, project, tmp_path / "train",
                      tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # analyze (untracked assemblies) on the video nobody labeled
    ap = AnalyzeParams(config=str(res.config_path), shuffle=res.shuffle,
                         out=str(tmp_path / "analyze"))
    preds = A.analyze_videos(ap, [project / "videos" / "g1-s4.mp4"])
    (h5,) = (tmp_path / "analyze").glob("g1-s4DLC*.h5")
    dlc = pd.read_hdf(h5, "df_with_missing")
    assert list(dlc.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert len(dlc) == 30 and set(preds.frame) == set(range(30))
    inds = list(dict.fromkeys(dlc.columns.get_level_values(1)))
    for _, r in preds.sample(20, random_state=0).iterrows():
        ind = S.SINGLE if r[S.ASSEMBLY] < 0 else inds[int(r[S.ASSEMBLY])]
        col = (dlc.columns[0][0], ind, r.bodypart)
        assert dlc.loc[r.frame, (*col, "x")] == pytest.approx(r.x, nan_ok=True)
        assert dlc.loc[r.frame, (*col, "likelihood")] == pytest.approx(r.likelihood, nan_ok=True)
    # outliers on those predictions: DLC's 4-level machinelabels for the picked frames
    proj = tmp_path / "proj"
    import shutil

    shutil.copytree(project, proj)
    man = O.pick_outliers(OutliersParams(predictions=str(tmp_path / "analyze" / "predictions.parquet"),
                                 n_frames=3, manifest=str(tmp_path / "out" / "manifest.csv")),
                proj, meta, project / "videos")
    assert 1 <= len(man) <= 3
    ml = pd.read_hdf(proj / "labeled-data" / "g1-s4" / "machinelabels-iter0.h5",
                     "df_with_missing")
    assert ml.columns.nlevels == 4 and len(ml) == len(man)
    # the sweep's promoted test error = evaluate's, on the same snapshot
    got = info_test_metrics(res, TrainInputs(labels, split, project), "cpu")
    p = predict(res.pytorch_config_path, res.snapshot, res.config_path.parent,
                list(res.images[S.TEST]), device="cpu", multi_animal=True)
    ev = evaluate_tables(labels, p, split[split[S.SPLIT] == S.TEST], None,
                         EvaluateParams(bias_factors=[]), 0.6,
                         dlcio.config_individuals(dlcio.read_config(project)))
    head = ev.headline[S.TEST]
    if np.isfinite(head["mean_px"]):
        assert got["test.mean_px"] == pytest.approx(head["mean_px"])
    assert got.get("test.mAP", np.nan) == pytest.approx(head["mAP"], nan_ok=True)


def test_sweep_refuses_a_higher_is_better_metric():
    """DLC's multi-animal mAP/mAR rise with quality; the study minimizes: refused in one line
    (an error metric such as val.rmse passes)."""
    from poseops.config.sweep import SweepParams
    from poseops.sweep.space import check_metric

    for bad in ("val.mAP", "val.mAR"):
        with pytest.raises(PoseopsError, match="higher-is-better") as e:
            check_metric(SweepParams(metric=bad))
        assert "\n" not in str(e.value)
    check_metric(SweepParams(metric="val.rmse"))


@pytest.mark.slow
def test_real_sweep_and_promote_on_a_multianimal_project(ma_src, tmp_path, mlflow_uri,
                                                         monkeypatch):
    """`poseops sweep` on the multi-animal demo (2 trials x 2 epochs, CPU): trials are
    multi-animal trainings scored by DLC's per-epoch validation rmse (after matching); `--promote`
    logs the promoted trial's test numbers, DLC's multi-animal mAP among them, on that trial's
    run only."""
    import json

    import yaml
    from mlflow.tracking import MlflowClient

    from poseops import cli
    from poseops.config.data import SplitParams
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split

    project, meta = ma_src
    labels = build_consensus(ingest_project(project, meta))
    split = make_split(labels, SplitParams(stratify_by=None, test_fraction=0.2, val_fraction=0.2))
    labels.to_parquet(tmp_path / "consensus.parquet", index=False)
    split.to_csv(tmp_path / "split.csv", index=False)
    params = {
        "project": {"path": str(project)},
        "consensus": {"out": str(tmp_path / "consensus.parquet")},
        "split": {"out": str(tmp_path / "split.csv")},
        "train": {"epochs": 50, "batch_size": 8, "pretrained": False, "device": "cpu",
                  "save_epochs": 1, "experiment": "sweep-ma", "workdir": str(tmp_path / "train")},
        "sweep": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}", "n_trials": 2, "epochs": 2,
                  "lr": [1e-4, 1e-2], "batch_size": [8], "pruner": "none",
                  "enqueue": [{"lr": 1e-3}], "out": str(tmp_path / "sweep")},
    }
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "--params", str(pfile)]) == 0
    client = MlflowClient()
    exp = client.get_experiment_by_name("sweep-ma")
    children = client.search_runs([exp.experiment_id], "tags.`poseops.sweep.role` != 'parent'")
    children = [r for r in children if "poseops.sweep.trial" in r.data.tags]
    assert len(children) == 2
    for run in children:
        assert run.data.tags.get("multianimal") == "True"
        assert len(client.get_metric_history(run.info.run_id, "val.rmse")) == 2
    assert cli.main(["sweep", "--promote", "--params", str(pfile)]) == 0
    promoted = json.loads((tmp_path / "sweep" / "promoted_test.json").read_text())
    assert "test.mAP" in promoted["metrics"]
    for run in children:
        m = client.get_run(run.info.run_id).data.metrics
        is_best = run.info.run_id == promoted["run_id"]
        assert ("test.mAP" in m) == is_best
        if is_best:
            assert m["test.mAP"] == pytest.approx(promoted["metrics"]["test.mAP"])
