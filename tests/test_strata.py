"""evaluate.strata (issue 24 item 4): any metadata column is a stratum, with per-stratum n and the
bias test over it, without code changes; the default strata are today's set; a column that is not
in the labels is one error naming it and the metadata file's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poseops.config.evaluate import EvaluateParams
from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.evaluate import metrics as M
from poseops.evaluate.tables import evaluate_tables, metric_spec

# test videos per camera: 2 + 2 (the bias test needs >= 2 videos per group)
SPLIT_OF = {"m1-s1": S.TRAIN, "m2-s1": S.VAL}


@pytest.fixture(scope="module")
def camera_demo(demo_src, tmp_path_factory):
    """The small demo's labels ingested with a metadata CSV whose ``camera`` varies (m1: top,
    m2: side) and which has a new column ``arena`` (s1, s2: A; s3: B); predictions = labels +
    seeded noise, larger on the side camera; m1-s1 train, m2-s1 val, the rest test."""
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project

    project, metadata = demo_src
    meta = pd.read_csv(metadata)
    meta[S.CAMERA] = np.where(meta[S.ANIMAL] == "m1", "top", "side")
    meta["arena"] = np.where(meta[S.SESSION] == "s3", "B", "A")
    path = tmp_path_factory.mktemp("strata") / "videos.csv"
    meta.to_csv(path, index=False)
    labels = build_consensus(ingest_project(project, path))
    rng = np.random.default_rng(7)
    sd = np.where(labels[S.CAMERA] == "side", 3.0, 1.0)
    preds = pd.DataFrame({
        S.IMAGE: labels[S.IMAGE], S.BODYPART: labels[S.BODYPART],
        S.X: labels[S.X].fillna(50.0) + rng.normal(0, sd), S.Y: labels[S.Y].fillna(50.0)
        + rng.normal(0, sd), S.LIKELIHOOD: rng.uniform(0.3, 1.0, len(labels))})
    frames = labels.drop_duplicates(S.IMAGE)
    split = pd.DataFrame({S.IMAGE: frames[S.IMAGE], S.VIDEO: frames[S.VIDEO],
                          S.SPLIT: frames[S.VIDEO].map(SPLIT_OF).fillna(S.TEST)})
    return labels, preds, split, path


def _independent_errors(labels, preds, split):
    """Per labeled keypoint: its Euclidean error, split and metadata (computed here)."""
    df = labels.merge(preds, on=[S.IMAGE, S.BODYPART], suffixes=("", "_p"))
    df = df.merge(split[[S.IMAGE, S.SPLIT]], on=S.IMAGE)
    df["e"] = np.sqrt((df["x_p"] - df[S.X]) ** 2 + (df["y_p"] - df[S.Y]) ** 2)
    return df[df["e"].notna()]


def test_a_new_metadata_column_is_a_stratum_with_n_and_a_bias_test(camera_demo, tmp_path):
    labels, preds, split, _ = camera_demo
    assert "arena" in labels.columns  # carried through ingest: no code knows the name
    params = EvaluateParams(
        strata=[S.BODYPART, S.CAMERA, "arena", [S.CAMERA, S.BODYPART]],
        bias_factors=[S.CAMERA, "arena"], out=str(tmp_path), log_mlflow=False)
    ev = evaluate_tables(labels, preds, split, None, params)
    st = ev.stratified
    assert set(st[M.STRATUM_TYPE]) == {M.ALL, S.BODYPART, S.CAMERA, "arena", "camera_x_bodypart"}
    e = _independent_errors(labels, preds, split)
    for col in (S.CAMERA, "arena"):
        sub = st[st[M.STRATUM_TYPE] == col].set_index([S.SPLIT, M.STRATUM])
        groups = e.groupby([S.SPLIT, col])["e"]
        want_n = groups.size()
        assert sorted(sub.index) == sorted(want_n.index)
        for key, n in want_n.items():
            assert sub.at[key, M.N] == n
            assert sub.at[key, "rmse_px"] == pytest.approx(np.sqrt((groups.get_group(key) ** 2).mean()))
    crossed = st[st[M.STRATUM_TYPE] == "camera_x_bodypart"]
    want = e.groupby([S.SPLIT, S.CAMERA, S.BODYPART]).size()
    got = {(r[S.SPLIT], *r[M.STRATUM].split(M.CELL_SEP)): r[M.N] for _, r in crossed.iterrows()}
    assert got == {k: int(v) for k, v in want.items()}
    # the bias test over the new columns: per-video means of per-frame mean errors (test split),
    # one-way ANOVA and Kruskal-Wallis by scipy on them
    t = e[e[S.SPLIT] == S.TEST]
    per_frame = t.groupby(S.IMAGE).agg(e=("e", "mean"), video=(S.VIDEO, "first"),
                                       camera=(S.CAMERA, "first"), arena=("arena", "first"))
    for col in (S.CAMERA, "arena"):
        per_video = per_frame.groupby(["video", col])["e"].mean().reset_index()
        samples = [g["e"].to_numpy() for _, g in per_video.groupby(col)]
        row = ev.bias.set_index("factor").loc[col]
        assert row["n"] == len(per_video) and row["k"] == len(samples) == 2
        assert row["anova_f"] == pytest.approx(stats.f_oneway(*samples).statistic)
        assert row["anova_p"] == pytest.approx(stats.f_oneway(*samples).pvalue)
        assert row["kruskal_h"] == pytest.approx(stats.kruskal(*samples).statistic)
    # the side camera was predicted 3x noisier: its stratum shows it
    cam = st[(st[M.STRATUM_TYPE] == S.CAMERA) & (st[S.SPLIT] == S.TEST)].set_index(M.STRATUM)
    assert cam.at["side", "mean_px"] > 2 * cam.at["top", "mean_px"]


def test_default_strata_are_todays_set(camera_demo, tmp_path):
    labels, preds, split, _ = camera_demo
    params = EvaluateParams(out=str(tmp_path), log_mlflow=False)
    # params.yaml ships the dataclass default (a user reading params.yaml sees what runs)
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert shipped["evaluate"]["strata"] == params.strata
    ev = evaluate_tables(labels, preds, split, None, params)
    errors = M.compute_errors(labels, preds, split, params.reference_bodyparts)
    today = M.stratified_table(errors, metric_spec(params))  # the call evaluate made before
    pd.testing.assert_frame_equal(ev.stratified[today.columns], today)
    assert list(ev.bias["factor"]) == [S.CONDITION, S.ANIMAL]


@pytest.mark.parametrize("key", ["strata", "bias_factors"])
def test_unknown_column_is_one_error_naming_it_and_the_metadata_columns(camera_demo, tmp_path, key):
    labels, preds, split, meta_path = camera_demo
    bad = {"strata": [S.BODYPART, ["lighting", S.BODYPART]], "bias_factors": ["lighting"]}[key]
    params = EvaluateParams(out=str(tmp_path), log_mlflow=False, **{key: bad})
    with pytest.raises(PoseopsError) as exc:
        evaluate_tables(labels, preds, split, None, params, metadata_file=str(meta_path))
    msg = str(exc.value)
    assert "\n" not in msg and str(meta_path) in msg and f"evaluate.{key}" in msg
    assert "'lighting'" in msg
    for col in (S.ANIMAL, S.SESSION, S.CONDITION, S.DOSE, S.CAMERA, "arena"):
        assert f"'{col}'" in msg
