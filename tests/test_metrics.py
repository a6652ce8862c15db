"""metrics: every aggregate checked against a direct numpy/scipy computation on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support.tables import CONDITIONS, synthetic_tables

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.evaluate import metrics as M
from poseops.evaluate.common import REF_LENGTH


@pytest.fixture
def tables():
    return synthetic_tables()


@pytest.fixture
def errors(tables):
    labels, preds, split = tables
    return M.compute_errors(labels, preds, split, reference_bodyparts=("snout", "tailbase"))


def test_errors_are_euclidean_distances_and_nan_when_unlabeled(tables, errors):
    labels, preds, split = tables
    merged = labels.merge(preds, on=[S.IMAGE, S.BODYPART], suffixes=("", "_p"))
    expected = np.sqrt((merged["x_p"] - merged[S.X]) ** 2 + (merged["y_p"] - merged[S.Y]) ** 2)
    got = errors.set_index([S.IMAGE, S.BODYPART])[S.ERROR_PX]
    exp = pd.Series(expected.to_numpy(), index=pd.MultiIndex.from_frame(merged[[S.IMAGE, S.BODYPART]]))
    pd.testing.assert_series_equal(got.sort_index(), exp.sort_index(), check_names=False)
    assert (errors[S.LABELED] == np.isfinite(errors[S.X])).all()
    assert errors[S.ERROR_PX].isna().sum() == labels[S.X].isna().sum() > 0
    assert set(errors[S.SPLIT]) == {S.TRAIN, S.VAL, S.TEST}
    assert {S.CONDITION, S.ANIMAL, S.SESSION, REF_LENGTH} <= set(errors.columns)


def test_reference_length_is_snout_tailbase_distance(tables, errors):
    labels, _, _ = tables
    img = errors[S.IMAGE].iloc[0]
    lab = labels[labels[S.IMAGE] == img].set_index(S.BODYPART)
    d = np.hypot(lab.loc["snout", S.X] - lab.loc["tailbase", S.X],
                 lab.loc["snout", S.Y] - lab.loc["tailbase", S.Y])
    got = errors.loc[errors[S.IMAGE] == img, REF_LENGTH].unique()
    assert len(got) == 1
    np.testing.assert_allclose(got[0], d, equal_nan=True)


def _cell_reference(e, lik, ref, pcut, spec):
    """Independent per-cell numbers: plain numpy on the rows of one cell."""
    ok = np.isfinite(e)
    e, lik, ref, pcut = e[ok], lik[ok], ref[ok], pcut[ok]
    above = lik >= pcut
    hasref = np.isfinite(ref)
    out = {
        "n": len(e),
        "mean_px": e.mean(),
        "rmse_px": np.sqrt(np.mean(e**2)),
        "median_px": np.median(e),
        "p95_px": np.percentile(e, 95),
        "n_pcutoff": above.sum(),
        "mean_px_pcutoff": e[above].mean() if above.any() else np.nan,
        "rmse_px_pcutoff": np.sqrt(np.mean(e[above] ** 2)) if above.any() else np.nan,
        "median_likelihood": np.median(lik),
        "norm_mean": np.mean(e[hasref] / ref[hasref]) if hasref.any() else np.nan,
    }
    for t in spec.pck_px:
        out[M.pck_px_column(t)] = np.mean(e <= t)
    for f in spec.pck_fractions:
        out[M.pck_ref_column(f)] = np.mean(e[hasref] <= f * ref[hasref]) if hasref.any() else np.nan
    return out


@pytest.mark.parametrize("pcutoff", [0.6, {"snout": 0.3, "leftear": 0.9, "rightear": 0.5, "tailbase": 0.7}])
def test_stratified_table_matches_numpy_per_cell(errors, pcutoff):
    spec = M.MetricSpec(pcutoff=pcutoff, pck_px=(1.0, 2.5), pck_fractions=(0.05, 0.2))
    table = M.stratified_table(errors, spec)
    assert {"all", "bodypart", "condition", "animal", "session", "video",
            "bodypart_x_condition"} == set(table[M.STRATUM_TYPE])
    pcut_all = (errors[S.BODYPART].map(pcutoff).to_numpy(float) if isinstance(pcutoff, dict)
                else np.full(len(errors), pcutoff))
    checked = 0
    for _, row in table.iterrows():
        mask = errors[S.SPLIT] == row[S.SPLIT]
        if row[M.STRATUM_TYPE] == "bodypart_x_condition":
            bp, cond = row[M.STRATUM].split("|")
            mask &= (errors[S.BODYPART] == bp) & (errors[S.CONDITION] == cond)
        elif row[M.STRATUM_TYPE] != "all":
            mask &= errors[row[M.STRATUM_TYPE]].astype(str) == row[M.STRATUM]
        m = mask.to_numpy()
        ref = _cell_reference(errors[S.ERROR_PX].to_numpy()[m], errors[S.LIKELIHOOD].to_numpy()[m],
                              errors[REF_LENGTH].to_numpy()[m], pcut_all[m], spec)
        for k, v in ref.items():
            np.testing.assert_allclose(row[k], v, rtol=1e-9, equal_nan=True, err_msg=f"{k} {row.to_dict()}")
        checked += 1
    # every (split, stratum) cell present in the data appears once
    n_cells = sum(errors.groupby([S.SPLIT, c]).ngroups for c in
                  [S.BODYPART, S.CONDITION, S.ANIMAL, S.SESSION, S.VIDEO]) + 3
    n_cells += errors.groupby([S.SPLIT, S.BODYPART, S.CONDITION]).ngroups
    assert checked == n_cells == len(table)


def test_headline_names_both_rmses_and_gap(errors):
    table = M.stratified_table(errors, M.MetricSpec())
    h = M.headline_metrics(table)
    test = errors[(errors[S.SPLIT] == S.TEST) & errors[S.ERROR_PX].notna()][S.ERROR_PX].to_numpy()
    train = errors[(errors[S.SPLIT] == S.TRAIN) & errors[S.ERROR_PX].notna()][S.ERROR_PX].to_numpy()
    np.testing.assert_allclose(h["test"]["dlc_rmse_px"], test.mean())
    np.testing.assert_allclose(h["test"]["rmse_px"], np.sqrt((test**2).mean()))
    assert h["test"]["rmse_px"] > h["test"]["dlc_rmse_px"]  # RMS >= mean, strictly with spread
    gap = 100 * (np.sqrt((test**2).mean()) - np.sqrt((train**2).mean())) / np.sqrt((train**2).mean())
    np.testing.assert_allclose(h["gap"]["train_test_gap_pct"], gap)
    assert h["gap"]["train_test_gap_pct"] > 0  # the synthetic test split is noisier


def test_pck_curve_counts_errors_below_threshold(errors):
    thr = np.linspace(0, 10, 21)
    curve = M.pck_curve(errors, thr)
    test = errors.loc[(errors[S.SPLIT] == S.TEST), S.ERROR_PX].dropna().to_numpy()
    got = curve[curve[S.SPLIT] == S.TEST]["pck"].to_numpy()
    np.testing.assert_allclose(got, [(test <= t).mean() for t in thr])
    assert np.all(np.diff(got) >= 0) and got[-1] <= 1


def test_condition_bias_matches_scipy_and_effect_sizes(errors):
    """``unit="image"`` (the optimistic per-frame tests): scipy on the per-frame errors."""
    bias = M.condition_bias(errors, unit=S.IMAGE).set_index("factor")
    fe = errors[(errors[S.SPLIT] == S.TEST)].dropna(subset=[S.ERROR_PX])
    per_frame = fe.groupby(S.IMAGE).agg(err=(S.ERROR_PX, "mean"), cond=(S.CONDITION, "first"),
                                        animal=(S.ANIMAL, "first"))
    for factor, col in [(S.CONDITION, "cond"), (S.ANIMAL, "animal")]:
        samples = [g["err"].to_numpy() for _, g in per_frame.groupby(col)]
        f = stats.f_oneway(*samples)
        h = stats.kruskal(*samples)
        row = bias.loc[factor]
        np.testing.assert_allclose([row.anova_f, row.anova_p], [f.statistic, f.pvalue])
        np.testing.assert_allclose([row.kruskal_h, row.kruskal_p], [h.statistic, h.pvalue])
        n = len(per_frame)
        np.testing.assert_allclose(row.epsilon_sq, h.statistic * (n + 1) / (n**2 - 1))
        # eta² from the F statistic: F*df_b / (F*df_b + df_w)
        k = len(samples)
        fb = f.statistic * (k - 1)
        np.testing.assert_allclose(row.eta_sq, fb / (fb + (n - k)))
        assert row.n == row.n_units == row.n_frames == n and row.k == k
        assert row.unit == S.IMAGE and "independent" in row.note


def test_condition_bias_eta_squared_matches_pingouin(errors):
    pg = pytest.importorskip("pingouin")
    fe = M.frame_errors(errors, S.TEST)
    aov = pg.anova(data=fe, dv=S.ERROR_PX, between=S.CONDITION, detailed=True)
    row = M.condition_bias(errors, factors=[S.CONDITION], unit=S.IMAGE).iloc[0]
    np.testing.assert_allclose(row.eta_sq, aov["np2"].iloc[0])


def nested_errors(seed: int = 1, n_videos: int = 12, frames: int = 20) -> pd.DataFrame:
    """Test-split errors of ``n_videos`` videos (3 conditions, 4 animals), each with its own
    random offset (sd 1 px) on top of a condition effect (0, 0.5, 1 px), per-frame noise 0.5 px,
    two bodyparts: frames of a video are strongly correlated."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        cond = CONDITIONS[v % 3]
        off = rng.normal(0, 1.0) + {"vehicle": 0.0, "low_dose": 0.5, "high_dose": 1.0}[cond]
        for f in range(frames):
            e = 5 + off + rng.normal(0, 0.5)
            for bp in ("snout", "tailbase"):
                rows.append({S.IMAGE: f"labeled-data/v{v}/img{f:04d}.png", S.SPLIT: S.TEST,
                             S.BODYPART: bp, S.VIDEO: f"v{v}", S.CONDITION: cond,
                             S.ANIMAL: f"m{v % 4}", S.ERROR_PX: e + rng.normal(0, 0.1),
                             S.LIKELIHOOD: 0.9})
    return pd.DataFrame(rows)


def test_condition_bias_tests_per_video_means_against_scipy():
    errors = nested_errors()
    bias = M.condition_bias(errors).set_index("factor")
    frame = errors.groupby(S.IMAGE).agg(err=(S.ERROR_PX, "mean"), video=(S.VIDEO, "first"),
                                        cond=(S.CONDITION, "first"), animal=(S.ANIMAL, "first"))
    per_video = frame.groupby(["video", "cond", "animal"]).err.mean().reset_index()
    for factor, col in [(S.CONDITION, "cond"), (S.ANIMAL, "animal")]:
        samples = [g["err"].to_numpy() for _, g in per_video.groupby(col)]
        f, h = stats.f_oneway(*samples), stats.kruskal(*samples)
        row = bias.loc[factor]
        np.testing.assert_allclose([row.anova_f, row.anova_p], [f.statistic, f.pvalue])
        np.testing.assert_allclose([row.kruskal_h, row.kruskal_p], [h.statistic, h.pvalue])
        np.testing.assert_allclose(row.epsilon_sq, h.statistic / (12 - 1))
        assert (row.unit, row.n_units, row.n, row.n_frames) == (S.VIDEO, 12, 12, 240)
        assert row.note == ""
    # the per-frame test calls the condition effect certain; per video it is not
    frame_p = M.condition_bias(errors, [S.CONDITION], unit=S.IMAGE).iloc[0].anova_p
    assert frame_p < 1e-6 and bias.loc[S.CONDITION, "anova_p"] > 0.1


def test_condition_bias_per_video_agrees_with_a_mixed_model():
    """error ~ condition + (1 | video) on the frames (statsmodels MixedLM, REML): with equal
    frames per video, the Wald statistic / (k - 1) is the one-way F on the video means."""
    smf = pytest.importorskip("statsmodels.formula.api")
    errors = nested_errors()
    frame = M.frame_errors(errors, S.TEST)
    fit = smf.mixedlm(f"{S.ERROR_PX} ~ C({S.CONDITION})", frame, groups=frame[S.VIDEO]).fit(
        reml=True)
    assert fit.cov_re.iloc[0, 0] > 0.1  # a real between-video variance
    b = fit.fe_params.iloc[1:].to_numpy()
    wald = b @ np.linalg.solve(fit.cov_params().iloc[1:3, 1:3].to_numpy(), b)
    row = M.condition_bias(errors, [S.CONDITION]).iloc[0]
    np.testing.assert_allclose(row.anova_f, wald / 2, rtol=1e-4)
    # the mixed model's (large-sample) Wald p sides with the per-video test, not the per-frame
    mixed_p = stats.chi2.sf(wald, 2)
    frame_p = M.condition_bias(errors, [S.CONDITION], unit=S.IMAGE).iloc[0].anova_p
    assert mixed_p > 0.1 and row.anova_p > 0.1 and frame_p < 1e-6


def test_condition_bias_with_too_few_videos_per_group_is_nan_with_the_reason(errors):
    """The synthetic split has 4 test videos: vehicle 1, low_dose 2, high_dose 1."""
    bias = M.condition_bias(errors).set_index("factor")
    row = bias.loc[S.CONDITION]
    assert np.isnan(row.anova_p) and np.isnan(row.kruskal_p) and np.isnan(row.eta_sq)
    assert row.note == "fewer than 2 videos per group (high_dose 1, vehicle 1)"
    assert (row.n_units, row.k) == (4, 3)
    assert np.isnan(bias.loc[S.ANIMAL, "anova_p"])  # one video per animal


def test_a_factor_varying_within_the_unit_is_aggregated_per_unit_and_level():
    """Unit animal, factor condition (each animal seen in several conditions): one mean per
    (animal, condition), and the note says these groups are not independent."""
    errors = nested_errors()
    row = M.condition_bias(errors, [S.CONDITION], unit=S.ANIMAL).iloc[0]
    frame = errors.groupby(S.IMAGE).agg(err=(S.ERROR_PX, "mean"), cond=(S.CONDITION, "first"),
                                        animal=(S.ANIMAL, "first"))
    cells = frame.groupby(["animal", "cond"]).err.mean().reset_index()
    assert len(cells) == 12 and row.n == 12 and row.n_units == 4 and row.n_frames == 240
    f = stats.f_oneway(*[g.err.to_numpy() for _, g in cells.groupby("cond")])
    np.testing.assert_allclose([row.anova_f, row.anova_p], [f.statistic, f.pvalue])
    assert "condition varies within animal" in row.note


def test_condition_bias_needs_the_unit_column(errors):
    with pytest.raises(PoseopsError, match="unit column 'cage'"):
        M.condition_bias(errors, unit="cage")


def test_condition_bias_detects_a_real_difference():
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.normal(2, 0.3, 40), rng.normal(4, 0.3, 40)])
    res = M.group_tests(vals, np.repeat(["a", "b"], 40))
    assert res["anova_p"] < 1e-10 and res["kruskal_p"] < 1e-10 and res["eta_sq"] > 0.8
    same = M.group_tests(rng.normal(2, 0.3, 80), np.repeat(["a", "b"], 40))
    assert same["eta_sq"] < 0.2


def test_predictions_for_images_not_in_split_is_an_error(tables):
    labels, preds, split = tables
    stray = split[S.IMAGE].iloc[0]
    with pytest.raises(PoseopsError, match="not in the split") as exc:
        M.compute_errors(labels, preds, split[split[S.IMAGE] != stray])
    assert stray in str(exc.value)


def test_missing_predictions_for_a_split_image_is_an_error(tables):
    labels, preds, split = tables
    gone = split[S.IMAGE].iloc[5]
    with pytest.raises(PoseopsError, match="no predictions") as exc:
        M.compute_errors(labels, preds[preds[S.IMAGE] != gone], split)
    assert gone in str(exc.value)


def test_empty_stratum_is_an_error_naming_the_cell(errors):
    bad = errors.copy()
    cell = (bad[S.SPLIT] == S.TEST) & (bad[S.CONDITION] == "high_dose")
    bad.loc[cell, S.ERROR_PX] = np.nan  # rows exist, but no labeled keypoint
    with pytest.raises(PoseopsError, match="empty stratum") as exc:
        M.stratified_table(bad)
    assert "high_dose" in str(exc.value) and "test" in str(exc.value)
    with pytest.raises(PoseopsError, match="empty"):
        M.stratified_table(errors.iloc[0:0])


def test_per_bodypart_pcutoff_must_cover_every_bodypart(errors):
    with pytest.raises(PoseopsError, match="tailbase"):
        M.stratified_table(errors, M.MetricSpec(pcutoff={"snout": 0.5, "leftear": 0.5,
                                                          "rightear": 0.5}))


def test_unknown_reference_bodypart_is_an_error(tables):
    labels, preds, split = tables
    with pytest.raises(PoseopsError, match="nose"):
        M.compute_errors(labels, preds, split, reference_bodyparts=("nose", "tailbase"))


# --------------------------------------------- issue 25: PCK AUC, visibility, single-animal OKS


def _stage(labels, preds, split, tmp_path, **kw):
    """The evaluate stage's tables and files (write_outputs) on these tables; returns
    (metrics.json as read back, eval folder)."""
    import json
    from pathlib import Path

    from poseops.commands.evaluate import write_outputs
    from poseops.config.evaluate import EvaluateParams
    from poseops.evaluate.tables import evaluate_tables

    params = EvaluateParams(out=str(tmp_path / "eval"), metrics=str(tmp_path / "metrics.json"),
                            plots=str(tmp_path / "plots"), log_mlflow=False,
                            reference_bodyparts=None, **kw)
    write_outputs(evaluate_tables(labels, preds, split, None, params, 0.6), params)
    return json.loads(Path(params.metrics).read_text()), Path(params.out)


def _tables(errors_px, likelihood, labeled=None, split=S.TEST, bodyparts=("a", "b")):
    """labels, predictions, split for one image per row of ``errors_px`` (n_images x
    bodyparts): each prediction ``errors_px`` right of its label, unlabeled where ``labeled``
    is False (the prediction then sits at (30, 30))."""
    errors_px, likelihood = np.asarray(errors_px, float), np.asarray(likelihood, float)
    labeled = np.ones(errors_px.shape, bool) if labeled is None else np.asarray(labeled, bool)
    lab, pred, spl = [], [], []
    for i in range(len(errors_px)):
        image = f"labeled-data/v{i % 2}/img{i:03d}.png"
        spl.append({S.IMAGE: image, S.SPLIT: split})
        for j, bp in enumerate(bodyparts):
            x, y = 40.0 + 17 * j + i, 60.0 - 9 * j
            lab.append({S.IMAGE: image, S.VIDEO: f"v{i % 2}", S.BODYPART: bp,
                        S.X: x if labeled[i, j] else np.nan, S.Y: y if labeled[i, j] else np.nan})
            px = x + errors_px[i, j] if labeled[i, j] else 30.0
            pred.append({S.IMAGE: image, S.BODYPART: bp, S.X: px, S.Y: y if labeled[i, j] else 30.0,
                         S.LIKELIHOOD: likelihood[i, j]})
    return pd.DataFrame(lab), pd.DataFrame(pred), pd.DataFrame(spl)


def test_pck_auc_is_the_trapezoid_area_over_the_curve_range():
    """A constructed curve, by hand: thresholds 0, 1, 2, 4 px with PCK 0, .5, .5, 1 enclose
    .25 + .5 + 1.5 = 2.25 px over a 4 px range: AUC 0.5625 (rows given out of order)."""
    curve = pd.DataFrame({S.SPLIT: [S.TEST] * 4 + [S.VAL] * 2,
                          "threshold_px": [2.0, 0.0, 4.0, 1.0, 0.0, 10.0],
                          "pck": [0.5, 0.0, 1.0, 0.5, 1.0, 1.0]})
    assert M.pck_auc(curve) == {S.TEST: pytest.approx(0.5625), S.VAL: pytest.approx(1.0)}


def test_evaluate_writes_the_pck_auc_of_its_curve(tmp_path):
    """Half the test keypoints 0.75 px off, half 3.25 px, on the shipped curve (0..20 px, step
    0.5): PCK 0 up to 0.5 px, .5 from 1 to 3 px, 1 from 3.5 px. Trapezoids by hand: .125 + 1 +
    .375 + 16.5 = 18 px over 20 px -> 0.9 in reports/metrics.json."""
    errs = np.array([[0.75, 3.25]] * 6)
    metrics, _ = _stage(*_tables(errs, np.full(errs.shape, 0.9)), tmp_path)
    assert metrics[S.TEST]["pck_auc"] == pytest.approx(0.9, abs=1e-12)


@pytest.mark.parametrize("pcutoff, want", [
    # a: labeled thrice, likelihood .9 .5 .7; b: labeled in image 0 (.95), not in 1 (.8), 2 (.1)
    (0.6, {"a": (2, 0, 1, 0), "b": (1, 1, 0, 1), "all": (3, 1, 1, 1)}),
    ({"a": 0.4, "b": 0.9}, {"a": (3, 0, 0, 0), "b": (1, 0, 0, 2), "all": (4, 0, 0, 2)}),
])
def test_visibility_precision_recall_per_bodypart_on_constructed_cases(tmp_path, pcutoff, want):
    """A keypoint predicted above pcutoff where none is labeled is a false positive; labeled
    but predicted below pcutoff a false negative: counts, precision and recall per bodypart in
    data/eval/visibility.csv and pooled in reports/metrics.json."""
    lik = [[0.9, 0.95], [0.5, 0.8], [0.7, 0.1]]
    labeled = [[True, True], [True, False], [True, False]]
    metrics, out = _stage(*_tables(np.ones((3, 2)), lik, labeled), tmp_path, pcutoff=pcutoff)
    vis = pd.read_csv(out / "visibility.csv").set_index(S.BODYPART)
    for bp, (tp, fp, fn, tn) in want.items():
        row = vis.loc[bp]
        assert (row.tp, row.fp, row.fn, row.tn) == (tp, fp, fn, tn), bp
        assert row.precision == pytest.approx(tp / (tp + fp)), bp
        assert row.recall == pytest.approx(tp / (tp + fn)), bp
    tp, fp, fn, _ = want["all"]
    assert metrics[S.TEST]["visibility_precision"] == pytest.approx(tp / (tp + fp))
    assert metrics[S.TEST]["visibility_recall"] == pytest.approx(tp / (tp + fn))


def _coco_oks_map(labels, preds, split_images):
    """pycocotools' COCOeval keypoint AP@[.5:.95] and AR (percent): OKS sigma 0.1 for every
    keypoint, the object scale the labeled keypoints' bounding-box area, a detection's score the
    mean likelihood (DLC's choices)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    bps = list(pd.unique(labels[S.BODYPART]))
    gts, dts, imgs = [], [], []
    for k, image in enumerate(split_images):
        lab = labels[labels[S.IMAGE] == image].set_index(S.BODYPART).loc[bps]
        prd = preds[preds[S.IMAGE] == image].set_index(S.BODYPART).loc[bps]
        vis = lab[S.X].notna().to_numpy()
        xs, ys = lab[S.X].to_numpy()[vis], lab[S.Y].to_numpy()[vis]
        kp = np.column_stack([lab[S.X].fillna(0), lab[S.Y].fillna(0), np.where(vis, 2, 0)])
        w, h = np.ptp(xs), np.ptp(ys)
        imgs.append({"id": k})
        gts.append({"id": k + 1, "image_id": k, "category_id": 1, "iscrowd": 0, "area": w * h,
                    "bbox": [xs.min(), ys.min(), w, h], "num_keypoints": int(vis.sum()),
                    "keypoints": kp.ravel().tolist()})
        dk = np.column_stack([prd[S.X], prd[S.Y], np.ones(len(bps))])
        dts.append({"image_id": k, "category_id": 1, "keypoints": dk.ravel().tolist(),
                    "score": float(prd[S.LIKELIHOOD].mean())})
    coco = COCO()
    coco.dataset = {"images": imgs, "annotations": gts,
                    "categories": [{"id": 1, "name": "animal", "keypoints": bps}]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dts), "keypoints")
    ev.params.kpt_oks_sigmas = np.full(len(bps), 0.1)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return 100 * ev.stats[0], 100 * ev.stats[5]


def test_single_animal_oks_map_matches_pycocotools(tmp_path):
    """Single-animal OKS mAP / mAR per split in reports/metrics.json (DLC's compute_metrics)
    equal COCO's own COCOeval on the same predictions."""
    rng = np.random.default_rng(3)
    bps = ["snout", "leftear", "rightear", "neck", "tailbase"]
    n = 40
    errs = rng.gamma(2.0, 1.0, (n, len(bps))) * rng.choice([0.3, 1.0, 3.0], (n, 1))
    labeled = rng.random((n, len(bps))) > 0.15
    labeled[:, :2] = True  # >= 2 labeled keypoints per image (an OKS scale)
    labels, preds, split = _tables(errs, rng.uniform(0.1, 1.0, errs.shape), labeled,
                                   bodyparts=tuple(bps))
    split.loc[split.index % 4 == 0, S.SPLIT] = S.VAL
    metrics, _ = _stage(labels, preds, split, tmp_path)
    for name in (S.VAL, S.TEST):
        images = split.loc[split[S.SPLIT] == name, S.IMAGE].tolist()
        coco_map, coco_mar = _coco_oks_map(labels, preds, images)
        assert 5 < coco_map < 95  # thresholds spread over the OKS values: a real comparison
        assert metrics[name]["mAP"] == pytest.approx(coco_map, abs=1e-6)
        assert metrics[name]["mAR"] == pytest.approx(coco_mar, abs=1e-6)
