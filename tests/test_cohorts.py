"""split.cohorts (issue 24 item 5): generalisation cohorts held out in one split beside the
standard test set, never trained on (checked by brute force from the metadata CSV), evaluated side
by side with their drop vs test (recomputed here), a GE expectation on the allowed drop, the
composition report, leave-one-out still working, and the user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.config.data import SplitParams
from poseops.config.evaluate import EvaluateParams
from poseops.config.quality import ValidateReportParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.data.split import make_split

REPO = Path(__file__).resolve().parents[1]
# the example, on the default demo (4 animals x 3 sessions, condition = (animal +
# session) mod 3): m4's s3 and high_dose frames are in new_animal (first match wins)
COHORTS = {"new_animal": {"animal": "m4"}, "new_session": {"session": "s3"},
           "new_condition": {"condition": ["high_dose"]}}


@pytest.fixture(scope="module")
def demo_labels(demo_root):
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project

    meta = demo_root / "metadata" / "videos.csv"
    return build_consensus(ingest_project(demo_root / "raw" / "demo", meta)), meta


@pytest.fixture(scope="module")
def cohort_split(demo_labels):
    labels, _ = demo_labels
    # 4 videos are left for train/val/test (2 per remaining condition): too few to stratify
    return make_split(labels, SplitParams(cohorts=COHORTS, stratify_by=None))


def _expected_cohort(meta: pd.DataFrame) -> dict[str, str | None]:
    """video -> its cohort, from the metadata CSV alone: the first listed filter it matches."""
    out: dict[str, str | None] = {}
    for _, row in meta.iterrows():
        out[row[S.VIDEO]] = next((name for name, filt in COHORTS.items() if all(
            str(row[col]) in ([v] if isinstance(v, str) else v) for col, v in filt.items())),
            None)
    return out


def test_no_cohort_frame_in_train_or_val_brute_force(demo_labels, cohort_split):
    from poseops.train.project import training_frames

    labels, meta_path = demo_labels
    expected = _expected_cohort(pd.read_csv(meta_path, dtype=str))
    split = cohort_split
    assert len(split) == labels[S.IMAGE].nunique()  # every frame listed once
    assert not split[S.IMAGE].duplicated().any()
    video = split[S.IMAGE].str.split("/").str[1]  # labeled-data/<video>/img.png
    for img, v, s in zip(split[S.IMAGE], video, split[S.SPLIT], strict=True):
        want = expected[v]
        if want is None:
            assert s in S.SPLITS, img
        else:
            assert s == f"cohort:{want}", img
    assert {s for s in split[S.SPLIT] if s.startswith("cohort:")} == {
        "cohort:new_animal", "cohort:new_session", "cohort:new_condition"}
    for name in S.SPLITS:
        assert (split[S.SPLIT] == name).sum() > 0
    # what DeepLabCut is given: train and val only, no cohort frame (test only for inference)
    frames = training_frames(labels, split)
    held = {i for i, v in zip(split[S.IMAGE], video, strict=True) if expected[v]}
    assert held and not held & set(frames[S.TRAIN] + frames[S.VAL] + frames[S.TEST])


def test_leave_one_out_with_cohorts(demo_labels):
    labels, meta_path = demo_labels
    p = SplitParams(mode="leave-one-out", holdout_column="animal", holdout_value="m1",
                    cohorts={"new_session": {"session": "s3"}}, val_fraction=0.3)
    split = make_split(labels, p)
    meta = pd.read_csv(meta_path, dtype=str).set_index(S.VIDEO)
    video = split[S.IMAGE].str.split("/").str[1]
    session, animal = video.map(meta[S.SESSION]), video.map(meta[S.ANIMAL])
    assert (split.loc[session == "s3", S.SPLIT] == "cohort:new_session").all()
    rest = split[session != "s3"]
    assert set(rest.loc[animal[session != "s3"] == "m1", S.SPLIT]) == {S.TEST}
    assert set(rest.loc[animal[session != "s3"] != "m1", S.SPLIT]) == {S.TRAIN, S.VAL}


def _predictions(labels: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Labels + seeded noise: 1 px SD on the standard splits, 2 / 3 / 4 px on the cohorts."""
    rng = np.random.default_rng(3)
    sd_of = {"cohort:new_animal": 4.0, "cohort:new_session": 2.0, "cohort:new_condition": 3.0}
    sd = labels[S.IMAGE].map(split.set_index(S.IMAGE)[S.SPLIT]).map(sd_of).fillna(1.0).to_numpy()
    return pd.DataFrame({
        S.IMAGE: labels[S.IMAGE], S.BODYPART: labels[S.BODYPART],
        S.X: labels[S.X].fillna(50.0) + rng.normal(0, sd),
        S.Y: labels[S.Y].fillna(50.0) + rng.normal(0, sd),
        S.LIKELIHOOD: rng.uniform(0.3, 1.0, len(labels))})


@pytest.fixture(scope="module")
def cohort_eval(demo_labels, cohort_split, tmp_path_factory):
    from poseops.commands.evaluate import write_outputs
    from poseops.evaluate.tables import evaluate_tables

    labels, _ = demo_labels
    preds = _predictions(labels, cohort_split)
    tmp = tmp_path_factory.mktemp("cohort_eval")
    params = EvaluateParams(out=str(tmp / "eval"), metrics=str(tmp / "metrics.json"),
                            plots=str(tmp / "plots"), log_mlflow=False)
    ev = evaluate_tables(labels, preds, cohort_split, None, params)
    paths = write_outputs(ev, params)
    return labels, preds, ev, paths, params


def test_three_cohorts_evaluate_beside_test_with_their_drop(demo_labels, cohort_split, cohort_eval):
    labels, preds, ev, paths, params = cohort_eval
    # independent recomputation: Euclidean errors of the labeled keypoints per split value
    df = labels.merge(preds, on=[S.IMAGE, S.BODYPART], suffixes=("", "_p"))
    df[S.SPLIT] = df[S.IMAGE].map(cohort_split.set_index(S.IMAGE)[S.SPLIT])
    df["e"] = np.hypot(df["x_p"] - df[S.X], df["y_p"] - df[S.Y])
    df = df[df["e"].notna()]
    rmse = df.groupby(S.SPLIT)["e"].apply(lambda e: float(np.sqrt((e**2).mean())))
    mean = df.groupby(S.SPLIT)["e"].mean()
    metrics = json.loads(Path(params.metrics).read_text())
    table = pd.read_csv(paths["cohorts"]).set_index("cohort")
    assert list(table.index) == ["test", "new_animal", "new_condition", "new_session"]
    for name in ("new_animal", "new_session", "new_condition"):
        key = f"cohort:{name}"
        m = metrics[key]
        assert m["rmse_px"] == pytest.approx(rmse[key]) and m["mean_px"] == pytest.approx(mean[key])
        assert m["n"] == (df[S.SPLIT] == key).sum()
        drop = 100 * (rmse[key] - rmse[S.TEST]) / rmse[S.TEST]
        assert m["rmse_drop_pct"] == pytest.approx(drop)
        assert m["rmse_drop_px"] == pytest.approx(rmse[key] - rmse[S.TEST])
        assert m["mean_drop_pct"] == pytest.approx(100 * (mean[key] - mean[S.TEST]) / mean[S.TEST])
        row = table.loc[name]
        assert row["rmse_px"] == pytest.approx(rmse[key])
        assert row["rmse_drop_pct"] == pytest.approx(drop)
        assert row["n_images"] == df.loc[df[S.SPLIT] == key, S.IMAGE].nunique()
    assert table.loc["test", "rmse_px"] == pytest.approx(rmse[S.TEST])
    assert table.loc["test", "rmse_drop_pct"] == 0
    assert metrics[S.TEST]["rmse_px"] == pytest.approx(rmse[S.TEST])  # test is the standard set
    # larger noise, larger drop: 4 px > 3 px > 2 px > 1 px
    d = table["rmse_drop_pct"]
    assert d["new_animal"] > d["new_condition"] > d["new_session"] > 0
    # the stratified table carries the cohorts as splits too (per bodypart, condition, ...)
    st = pd.read_csv(paths["stratified"])
    assert {"cohort:new_animal", "cohort:new_session"} <= set(st[S.SPLIT])


@pytest.mark.parametrize("limit, ok", [(None, True), (1e6, True), (1.0, False)])
def test_report_suite_checks_the_allowed_cohort_drop(cohort_eval, limit, ok):
    from poseops.quality.report_checks import validate

    labels, _, ev, _, _ = cohort_eval
    vr = ValidateReportParams(suite=str(REPO / "expectations" / "report.json"),
                              max_test_rmse_px=1e6, max_gap_pct=1e6, min_median_likelihood=0.0)
    conds = sorted(labels[S.CONDITION].astype(str).unique())
    res = validate(vr, ev.headline, ev.errors, conds, sorted(labels[S.BODYPART].unique()),
                   max_cohort_drop_pct=limit)
    row = res.results.set_index("name").loc["cohort_drop_max"]
    if limit is None:  # recorded only: the expectation is skipped, the drops are in the metrics
        assert row["success"] is None and "skipped" in row["observed"]
    else:
        assert bool(row["success"]) is ok and row["table"] == "cohorts"
    if not ok:  # every cohort's drop is > 1 %: named in the failure
        assert "new_animal" in res.message()


def test_composition_records_the_cohorts(demo_labels, cohort_split):
    from poseops.data.composition import composition_metrics, composition_table

    labels, meta_path = demo_labels
    p = SplitParams(cohorts=COHORTS, stratify_by=None)
    m = composition_metrics(labels, cohort_split, split_params=p)
    c = m["split"]["cohorts"]
    assert c["frames_in_training"] == 0
    meta = pd.read_csv(meta_path, dtype=str)
    expected = _expected_cohort(meta)
    frames_per_video = labels.drop_duplicates(S.IMAGE)[S.VIDEO].value_counts()
    for name in COHORTS:
        videos = [v for v, c_ in expected.items() if c_ == name and v in frames_per_video]
        assert c["per_cohort"][name]["n_frames"] == frames_per_video[videos].sum()
        assert c["per_cohort"][name]["n_videos"] == len(videos)
        assert c["per_cohort"][name]["filter"] == {
            k: [v] if isinstance(v, str) else v for k, v in COHORTS[name].items()}
    t = composition_table(m)
    row = t[(t["metric"] == "frames") & (t["stratum_type"] == "cohort")].set_index("stratum")
    assert row.loc["new_session", "value"] == c["per_cohort"]["new_session"]["n_frames"]
    # a split drawn without the cohorts: their frames sit in train/val, counted as leakage
    plain = make_split(labels, SplitParams())
    leak = composition_metrics(labels, plain, split_params=p)["split"]["cohorts"]
    in_train = plain[plain[S.SPLIT].isin([S.TRAIN, S.VAL])]
    video = in_train[S.IMAGE].str.split("/").str[1]
    assert leak["frames_in_training"] == int(video.map(expected).notna().sum()) > 0


@pytest.mark.parametrize("cohorts, words", [
    ({"new animal": {"animal": "m4"}}, ["'new animal'", "letters, digits"]),
    ({"x": {}}, ["split.cohorts.x", "filter"]),
    ({"x": {"lighting": "dim"}}, ["split.cohorts.x", "'lighting'", "'camera'"]),
    ({"x": {"animal": "m9"}}, ["split.cohorts.x", "m9", "'m4'"]),
    ({"a": {"animal": "m4"}, "b": {"animal": "m4", "session": "s1"}}, ["split.cohorts.b",
                                                                       "earlier"]),
    ({"x": {"frame": 10}}, ["video", "frames outside"]),
])
def test_cohort_errors_are_one_line(demo_labels, cohorts, words):
    labels, _ = demo_labels
    with pytest.raises(PoseopsError) as exc:
        make_split(labels, SplitParams(cohorts=cohorts, val_fraction=0.0))
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.slow
def test_trained_model_scores_a_cohort_read_from_the_source_project(trained_demo, tmp_path):
    """The evaluate stage's inference: cohort frames are never in the training's working project,
    so they are read from the labeled project; the cohort is scored beside test."""
    from poseops.commands.evaluate import predict_images
    from poseops.dlc.inference import predict
    from poseops.evaluate.tables import evaluate_tables

    tr = trained_demo.result
    split = trained_demo.split.copy()
    held_video = sorted(split.loc[split[S.SPLIT] == S.TEST, S.VIDEO].unique())[0]
    split.loc[split[S.VIDEO] == held_video, S.SPLIT] = "cohort:held_video"
    params = EvaluateParams(out=str(tmp_path), device="cpu", log_mlflow=False,
                            reference_bodyparts=None)
    preds = predict_images(tr, tr.snapshot, split, trained_demo.project, params)
    held = sorted(split.loc[split[S.SPLIT] == "cohort:held_video", S.IMAGE])
    assert set(preds[S.IMAGE]) == set(split[S.IMAGE]) and not preds.duplicated(
        [S.IMAGE, S.BODYPART]).any()
    # the same pixels through the working project give the same predictions
    ref = predict(tr.pytorch_config_path, tr.snapshot, tr.config_path.parent, held, device="cpu")
    got = preds[preds[S.IMAGE].isin(held)].sort_values([S.IMAGE, S.BODYPART])
    ref = ref.sort_values([S.IMAGE, S.BODYPART])
    np.testing.assert_allclose(got[[S.X, S.Y]].to_numpy(float), ref[[S.X, S.Y]].to_numpy(float),
                               atol=1e-3)
    ev = evaluate_tables(trained_demo.labels, preds, split, tr.learning_stats, params)
    lab = trained_demo.labels.merge(preds, on=[S.IMAGE, S.BODYPART], suffixes=("", "_p"))
    lab["e"] = np.hypot(lab["x_p"] - lab[S.X], lab["y_p"] - lab[S.Y])
    for name, imgs in (("cohort:held_video", held),
                       (S.TEST, split.loc[split[S.SPLIT] == S.TEST, S.IMAGE])):
        e = lab.loc[lab[S.IMAGE].isin(set(imgs)), "e"].dropna()
        assert ev.headline[name]["rmse_px"] == pytest.approx(np.sqrt((e**2).mean()))
    t, c = ev.headline[S.TEST]["rmse_px"], ev.headline["cohort:held_video"]["rmse_px"]
    assert ev.headline["cohort:held_video"]["rmse_drop_pct"] == pytest.approx(100 * (c - t) / t)
    assert list(ev.cohorts["cohort"]) == [S.TEST, "held_video"]


def test_numeric_filter_matches_a_numeric_metadata_column(demo_labels):
    labels, meta_path = demo_labels
    split = make_split(labels, SplitParams(cohorts={"high": {"dose": 3}}, stratify_by=None))
    meta = pd.read_csv(meta_path).set_index(S.VIDEO)
    dose = split[S.IMAGE].str.split("/").str[1].map(meta[S.DOSE])
    assert (dose == 3.0).any()
    assert ((split[S.SPLIT] == "cohort:high") == (dose == 3.0)).all()


def test_kept_split_after_merge_obeys_the_cohorts(demo_labels, tmp_path, monkeypatch):
    """`poseops split` with a fixed split written before a cohort was added: the cohort's frames
    leave train/val/test for the cohort; a cohort since removed leaves its frames out."""
    import yaml

    from poseops.commands.split import run

    labels, meta_path = demo_labels
    monkeypatch.chdir(tmp_path)
    labels.to_parquet("consensus.parquet")
    fixed = make_split(labels, SplitParams(cohorts={"old": {"animal": "m3"}}))
    fixed.to_csv("fixed.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["split"].update(input="consensus.parquet", out="split.csv", fixed_split="fixed.csv",
                           cohorts={"new_session": {"session": "s3"}}, stratify_by=None)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    split = run("params.yaml")
    meta = pd.read_csv(meta_path, dtype=str).set_index(S.VIDEO)
    video = split[S.IMAGE].str.split("/").str[1]
    assert ((split[S.SPLIT] == "cohort:new_session") == (video.map(meta[S.SESSION]) == "s3")).all()
    assert "cohort:old" not in set(split[S.SPLIT])
    m3 = fixed.loc[fixed[S.SPLIT] == "cohort:old", S.IMAGE]
    s3 = set(split.loc[split[S.SPLIT] == "cohort:new_session", S.IMAGE])
    assert not (set(m3) - s3) & set(split[S.IMAGE])  # former cohort frames left out
    kept = split[split[S.SPLIT].isin(S.SPLITS)].set_index(S.IMAGE)[S.SPLIT]
    assert (kept == fixed.set_index(S.IMAGE)[S.SPLIT].reindex(kept.index)).all()
