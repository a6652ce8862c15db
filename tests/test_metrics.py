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
