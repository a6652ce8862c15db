"""compare: paired statistics checked against scipy and independent computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support.tables import compare_errors

from poseops.config.refine import CompareParams
from poseops.core.errors import PoseopsError
from poseops.refine import compare as C


def _errors(seed: int, shift: dict[str, float], n_images: int = 40, n_videos: int = 8
            ) -> pd.DataFrame:
    return compare_errors(seed, shift, n_images, n_videos)


@pytest.mark.parametrize("n", [8, 20, 45])
def test_wilcoxon_exact_matches_scipy(n):
    d = np.random.default_rng(n).normal(-0.5, 1.0, n)
    ours = C.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d)
    assert ours["method"] == "exact"
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_asymptotic_with_ties_and_zeros_matches_scipy():
    d = np.round(np.random.default_rng(3).normal(0.4, 1.0, 80), 1)  # ties and zeros
    assert (d == 0).any() and len(np.unique(np.abs(d))) < len(d)
    ours = C.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d, method="asymptotic")
    assert ours["method"] == "asymptotic"
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_is_scipys_for_few_tied_units():
    """Few units with tied differences (e.g. per-video means that coincide): scipy's default
    (an exhaustive permutation null), not a normal approximation on 8 values."""
    d = np.array([-1.0, -1.0, -2.0, -2.0, -0.5, 1.0, -3.0, -1.5])
    ours = C.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d)
    assert ours["method"] == "permutation"
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert ours["statistic"] == pytest.approx(ref.statistic)
    few = C.wilcoxon_signed_rank(d[:4], min_n=5)
    assert np.isnan(few["p_value"]) and few["reason"].startswith("4 non-zero")
    assert few["rank_biserial"] == -1.0


def test_rank_biserial_by_hand():
    d = np.array([-1.0, -2.0, 3.0, -4.0])  # ranks 1, 2, 3, 4: W+ = 3, W- = 7
    r = C.wilcoxon_signed_rank(d)
    assert (r["w_plus"], r["w_minus"]) == (3.0, 7.0)
    assert r["rank_biserial"] == pytest.approx((3 - 7) / 10)
    assert C.wilcoxon_signed_rank(-np.arange(1.0, 9.0))["rank_biserial"] == -1.0


def test_bootstrap_ci_matches_loop_implementation():
    d = np.random.default_rng(1).normal(-1, 2, 15)
    n_boot, seed = 300, 11
    med, lo, hi = C.bootstrap_median_ci(d, n_boot, 0.9, seed, chunk=7)
    # independent loop: same resampling matrix, one median at a time, sorted-order percentile
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    meds = sorted(float(np.median([d[j] for j in idx[b]])) for b in range(n_boot))

    def pct(q):
        pos = q * (n_boot - 1)
        f = int(np.floor(pos))
        return meds[f] + (pos - f) * (meds[min(f + 1, n_boot - 1)] - meds[f])

    assert med == pytest.approx(np.median(d))
    assert lo == pytest.approx(pct(0.05)) and hi == pytest.approx(pct(0.95))
    assert lo <= med <= hi


def _shifted(base: pd.DataFrame) -> pd.DataFrame:
    cand = base.copy()
    cand["error_px"] = base["error_px"] - 1.0 * (base["bodypart"] == "snout") + 0.8 * (
        base["bodypart"] == "tailbase")
    return cand


def test_compare_tables_numbers(tmp_path):
    base = _errors(0, {})
    cand = _shifted(base)
    params = CompareParams(n_boot=500, log_mlflow=False, out=str(tmp_path / "cmp"))
    res = C.compare_tables(base, cand, params)
    s = res["summary"]
    t = base[base.split == "test"]
    tc = cand[cand.split == "test"]
    assert s["n_frames"] == t["image"].nunique() == 40
    assert s["unit"] == "video" and s["n_units"] == 8
    rb, rc = np.sqrt((t.error_px**2).mean()), np.sqrt((tc.error_px**2).mean())
    assert s["rmse_change_pct"] == pytest.approx(100 * (rc - rb) / rb)
    # per-frame differences (mean over bodyparts), then their mean per video: scipy's Wilcoxon
    fb = t.groupby("image").error_px.mean()
    fc = tc.groupby("image").error_px.mean()
    video = t.groupby("image").video.first()
    per_video = (fc - fb).groupby(video).mean()
    ref = stats.wilcoxon(per_video)
    assert s["wilcoxon"]["n"] == 8 and s["wilcoxon"]["unit"] == "video"
    assert s["wilcoxon"]["p_value"] == pytest.approx(ref.pvalue)
    assert s["wilcoxon"]["statistic"] == pytest.approx(ref.statistic)
    pu = res["per_unit"].set_index("video")
    np.testing.assert_allclose(pu.loc[per_video.index, "diff"], per_video)
    assert pu["n_frames"].sum() == 40
    assert s["median_diff_px"] == pytest.approx(np.median(fc - fb))
    bp = res["bodypart"].set_index("stratum")
    assert bp.loc["snout", "status"] == "improved" and bp.loc["tailbase", "status"] == "worse"
    assert bp.loc["leftear", "status"] == "unchanged"
    assert s["bodyparts_worse"] == ["tailbase"]
    assert bp.loc["snout", "delta_px"] == pytest.approx(-1.0)
    assert (bp["n_units"] == 8).all()
    snout = t[t.bodypart == "snout"].set_index("image")
    snout_c = tc[tc.bodypart == "snout"].set_index("image")
    ref_bp = stats.wilcoxon((snout_c.error_px - snout.error_px).groupby(snout.video).mean())
    assert bp.loc["snout", "p_value"] == pytest.approx(ref_bp.pvalue)
    e = t.loc[t.bodypart == "leftear", "error_px"]
    assert bp.loc["leftear", "worst5_baseline"] == pytest.approx(e[e >= e.quantile(0.95)].mean())
    cond = res["condition"].set_index("stratum")
    assert set(cond.index) == {"vehicle", "drug"}
    # 4 videos per condition < min_units 5: no p-value, and the reason says so
    assert cond["p_value"].isna().all() and (cond["n_units"] == 4).all()
    assert cond["p_reason"].str.contains("need >= 5").all()
    pc = res["pcutoff"].set_index("pcutoff")
    keep = t.likelihood >= 0.6
    assert pc.loc[0.6, "share_kept_baseline"] == pytest.approx(keep.mean())
    assert pc.loc[0.6, "mean_baseline"] == pytest.approx(t.error_px[keep].mean())
    assert pc.loc[0.0, "share_kept_candidate"] == 1.0


def test_unit_image_keeps_the_per_frame_statistics(tmp_path):
    """``unit: image``: every frame its own unit, i.e. the old per-frame Wilcoxon and bootstrap."""
    base = _errors(0, {})
    cand = _shifted(base)
    params = CompareParams(n_boot=300, seed=4, unit="image", log_mlflow=False)
    s = C.compare_tables(base, cand, params)["summary"]
    t, tc = base[base.split == "test"], cand[cand.split == "test"]
    d = (tc.groupby("image").error_px.mean() - t.groupby("image").error_px.mean()).to_numpy()
    assert s["n_units"] == s["n_frames"] == 40
    assert s["wilcoxon"]["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    idx = np.random.default_rng(4).integers(0, len(d), size=(300, len(d)))
    lo, hi = np.quantile(np.median(d[idx], axis=1), [0.025, 0.975])
    assert (s["ci_low_px"], s["ci_high_px"]) == (pytest.approx(lo), pytest.approx(hi))


def _clustered(n_videos: int, frames: int, offsets: np.ndarray, seed: int = 0):
    """Baseline/candidate errors whose per-frame difference is mostly a per-video offset."""
    rng = np.random.default_rng(seed)
    rows_b, rows_c = [], []
    for v in range(n_videos):
        for f in range(frames):
            img = f"labeled-data/v{v}/img{f:04d}.png"
            e = 5 + rng.normal(0, 0.5)
            common = {"image": img, "split": "test", "bodypart": "snout", "video": f"v{v}",
                      "condition": "vehicle", "likelihood": 0.9, "labeled": True}
            rows_b.append({**common, "error_px": e})
            rows_c.append({**common, "error_px": e + offsets[v] + rng.normal(0, 0.05)})
    return pd.DataFrame(rows_b), pd.DataFrame(rows_c)


def test_frames_of_a_video_are_not_independent_samples():
    """Six videos, the candidate better on four and worse on two: per frame (180 'samples')
    the difference looks overwhelmingly significant; per video it is not (n = 6)."""
    offsets = np.array([-1.0, -0.8, 0.5, -0.6, 0.4, -0.9])
    base, cand = _clustered(6, 30, offsets)
    video = C.compare_tables(base, cand, CompareParams(n_boot=2000, log_mlflow=False))
    frame = C.compare_tables(base, cand, CompareParams(n_boot=2000, unit="image",
                                                         log_mlflow=False))
    sv, sf = video["summary"], frame["summary"]
    assert sf["wilcoxon"]["n"] == 180 and sf["wilcoxon"]["p_value"] < 1e-6
    assert sv["wilcoxon"]["n"] == 6 and sv["n_units"] == 6 and sv["n_frames"] == 180
    per_video = video["per_unit"]["diff"].to_numpy()
    np.testing.assert_allclose(per_video, offsets, atol=0.05)
    assert sv["wilcoxon"]["p_value"] == pytest.approx(stats.wilcoxon(per_video).pvalue)
    assert sv["wilcoxon"]["p_value"] > 0.1  # exact: W+ = 3 of 21
    # the cluster bootstrap CI is far wider than the per-frame one and contains 0
    assert sv["ci_high_px"] - sv["ci_low_px"] > 5 * (sf["ci_high_px"] - sf["ci_low_px"])
    assert sv["ci_low_px"] < 0 < sv["ci_high_px"]
    assert "cluster bootstrap over videos" in sv["ci_method"]


def test_too_few_videos_give_no_p_value_and_say_why():
    base, cand = _clustered(3, 20, np.array([-1.0, -1.2, -0.9]))
    s = C.compare_tables(base, cand, CompareParams(n_boot=200, log_mlflow=False))["summary"]
    assert s["n_units"] == 3
    assert np.isnan(s["wilcoxon"]["p_value"]) and "need >= 5" in s["wilcoxon"]["reason"]
    assert np.isnan(s["ci_low_px"]) and np.isnan(s["ci_high_px"]) and "3 video" in s["ci_reason"]
    assert s["median_diff_px"] < 0  # the point estimate is still reported
    assert s["wilcoxon"]["rank_biserial"] == -1.0


def test_cluster_bootstrap_matches_a_loop_over_resampled_videos():
    rng = np.random.default_rng(5)
    units = np.repeat([f"v{i}" for i in range(7)], rng.integers(2, 9, 7))
    d = rng.normal(-0.5, 1.0, len(units)) + pd.Series(units).map(
        {f"v{i}": o for i, o in enumerate(rng.normal(0, 1, 7))}).to_numpy()
    n_boot, seed = 400, 9
    med, lo, hi = C.bootstrap_median_ci(d, n_boot, 0.9, seed, chunk=64, units=units)
    names = sorted(set(units))
    idx = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    meds = [np.median(np.concatenate([d[units == names[j]] for j in row])) for row in idx]
    assert med == pytest.approx(np.median(d))
    np.testing.assert_allclose([lo, hi], np.quantile(meds, [0.05, 0.95]))
    # and scipy's own bootstrap of the same statistic, without our vectorised median
    ref = stats.bootstrap((np.arange(len(names)),),
                          lambda i: np.median(np.concatenate([d[units == names[j]] for j in i])),
                          n_resamples=n_boot, vectorized=False, confidence_level=0.9,
                          method="percentile", rng=np.random.default_rng(seed))
    np.testing.assert_allclose([lo, hi], [ref.confidence_interval.low,
                                          ref.confidence_interval.high])


def test_run_writes_reports_from_files(tmp_path):
    base, cand = _errors(0, {}), _errors(1, {"snout": -2})
    base.to_parquet(tmp_path / "b.parquet")
    cand.to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "reports" / "compare"
    params = CompareParams(n_boot=200, log_mlflow=False, out=str(out))
    C.compare_models(params, str(tmp_path / "b.parquet"), str(tmp_path / "c.csv"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_frames"] == 40
    for name in ("per_frame", "per_unit", "bodypart", "condition", "pcutoff"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0


def test_compare_logs_to_mlflow(tmp_path, mlflow_uri):
    import mlflow

    base, cand = _errors(0, {}), _errors(1, {})
    base.to_parquet(tmp_path / "b.parquet")
    cand.to_parquet(tmp_path / "c.parquet")
    params = CompareParams(n_boot=100, out=str(tmp_path / "cmp"))
    res = C.compare_models(params, str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet"))
    run = mlflow.get_run(res["summary"]["mlflow_run_id"])
    assert run.data.metrics["rmse_change_pct"] == pytest.approx(res["summary"]["rmse_change_pct"])
    assert "wilcoxon_p_value" in run.data.metrics


def test_different_test_sets_are_refused():
    base = _errors(0, {})
    cand = base[base.image != base.image.iloc[0]]
    with pytest.raises(PoseopsError, match="test sets differ"):
        C.paired_errors(base, cand)


def test_unknown_reference_is_a_clear_error(tmp_path):
    params = CompareParams(errors_pattern=str(tmp_path / "it-{n}.parquet"), log_mlflow=False)
    with pytest.raises(PoseopsError, match="neither an errors file"):
        C.resolve_errors("not-a-file", params)


def test_iterations_and_run_ids_resolve_through_mlflow(tmp_path, mlflow_uri):
    """Baseline/candidate given as DLC iterations (training-run tag) or run ids: the errors table
    is the run's eval/errors.parquet artifact (as `poseops evaluate` logs it)."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    run_ids = []
    for it, seed in ((0, 0), (1, 1)):
        f = tmp_path / f"it{it}" / "errors.parquet"
        f.parent.mkdir()
        _errors(seed, {"snout": -it}).to_parquet(f)
        with mlflow.start_run() as r:
            mlflow.set_tag("dlc_iteration", str(it))
            mlflow.log_artifact(str(f), artifact_path="eval")
        run_ids.append(r.info.run_id)
    params = CompareParams(n_boot=100, log_mlflow=False, out=str(tmp_path / "cmp"),
                             errors_pattern=str(tmp_path / "none-{n}.parquet"))
    by_iter = C.compare_models(params, "0", "1")["summary"]
    by_id = C.compare_models(params, *run_ids)["summary"]
    direct = C.compare_tables(_errors(0, {}), _errors(1, {"snout": -1}), params)["summary"]
    assert by_iter["sources"]["baseline"]["run_id"] == run_ids[0]
    assert by_iter["rmse_change_pct"] == pytest.approx(direct["rmse_change_pct"])
    assert by_id["median_diff_px"] == pytest.approx(direct["median_diff_px"])
    with pytest.raises(PoseopsError, match="no errors for iteration 7"):
        C.compare_models(params, "0", "7")


def _rmse_np(x) -> float:
    x = np.asarray(x, float)
    return float(np.sqrt(np.mean(x**2)))


def test_history_rows_per_iteration_and_stop_rule(tmp_path):
    """`poseops compare` adds the baseline's and candidate's rows to reports/iterations.csv
    (test RMSE overall and per condition, frames added / outliers found from merge's report),
    draws the figure, and says "stop refining" when a round changed test RMSE by < 2 %."""
    import yaml

    from poseops.cli import main

    e0 = _errors(0, {})
    e1 = e0.assign(error_px=e0.error_px * 0.8)
    e2 = e1.assign(error_px=e1.error_px * 0.99)
    for i, e in enumerate((e0, e1, e2)):
        e.to_parquet(tmp_path / f"e{i}.parquet")
    hist = tmp_path / "reports" / "iterations.csv"
    merge_report = tmp_path / "merge.json"
    merge_report.write_text(json.dumps({"iteration_before": 0, "iteration": 1,
                                        "frames_added": 5, "outliers_picked": 7}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "compare": {"n_boot": 100, "log_mlflow": False, "gate": False, "history": str(hist),
                    "out": str(tmp_path / "cmp"), "stop_change_pct": 2.0},
        "merge": {"report": str(merge_report)}}))
    argv = ["--params", str(tmp_path / "params.yaml")]
    # iterations from merge's report (0 -> 1)
    assert main(["compare", str(tmp_path / "e0.parquet"), str(tmp_path / "e1.parquet"), *argv]) == 0
    h = pd.read_csv(hist)
    assert h.iteration.tolist() == [0, 1]
    t0, t1 = e0[e0.split == "test"], e1[e1.split == "test"]
    assert h.test_rmse_px.tolist() == pytest.approx([_rmse_np(t0.error_px), _rmse_np(t1.error_px)])
    for cond in ("drug", "vehicle"):
        assert h[f"test_rmse_px_{cond}"].tolist() == pytest.approx(
            [_rmse_np(t.loc[t.condition == cond, "error_px"]) for t in (t0, t1)])
    assert h.loc[1, "frames_added"] == 5 and h.loc[1, "outliers_found"] == 7
    assert h.loc[1, "change_pct"] == pytest.approx(-20.0) and not h.loc[1, "stop_refining"]
    assert (hist.with_suffix(".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the next round changes test RMSE by -1 %: stop refining (history and compare's summary)
    assert main(["compare", str(tmp_path / "e1.parquet"), str(tmp_path / "e2.parquet"),
                 "--iterations", "1", "2", *argv]) == 0
    h = pd.read_csv(hist)
    assert h.iteration.tolist() == [0, 1, 2]
    assert h.loc[1, "frames_added"] == 5  # the baseline's row is refreshed, its counts kept
    assert h.loc[2, "change_pct"] == pytest.approx(-1.0) and h.loc[2, "stop_refining"]
    s = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert s["stop_refining"] is True and s["advice"].startswith("stop refining")
    assert s["iterations"] == [1, 2]
