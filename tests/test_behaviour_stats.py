"""behaviour (issue 23): trajectory quality, endpoints, agreement and effects checked against
independent computations (pingouin, published values, formulas written out here, known
geometry and injected noise/jumps)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from poseops.behaviour import agreement as A
from poseops.behaviour import endpoints as E
from poseops.behaviour import quality as Q
from poseops.core.errors import PoseopsError


# ------------------------------------------------------------------ agreement
def test_icc_matches_shrout_fleiss_published_values() -> None:
    """Shrout & Fleiss (1979) Table 2 data (6 targets x 4 judges): ICC(2,1) = .29, ICC(3,1) = .71;
    95 % CIs as R's psych::ICC prints them (.019-.76 and .34-.95)."""
    sf = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                   [6, 2, 4, 7]], float)
    r = A.icc(sf)
    assert r["icc2_1"] == pytest.approx(0.29, abs=0.005)
    assert r["icc3_1"] == pytest.approx(0.71, abs=0.006)
    assert (r["icc2_1_lo"], r["icc2_1_hi"]) == pytest.approx((0.019, 0.76), abs=0.006)
    assert (r["icc3_1_lo"], r["icc3_1_hi"]) == pytest.approx((0.34, 0.95), abs=0.006)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_icc_matches_pingouin(seed: int) -> None:
    pg = pytest.importorskip("pingouin")
    rng = np.random.default_rng(seed)
    manual = rng.normal(300, 60, 15)
    model = 1.05 * manual + rng.normal(8, 15, 15)
    long = pd.DataFrame({"video": np.repeat(np.arange(15), 2), "rater": ["manual", "model"] * 15,
                         "v": np.column_stack([manual, model]).ravel()})
    ref = pg.intraclass_corr(long, "video", "rater", "v").set_index("Type")
    r = A.agreement(manual, model)
    assert r["icc2_1"] == pytest.approx(ref.at["ICC(A,1)", "ICC"], abs=1e-9)
    assert r["icc3_1"] == pytest.approx(ref.at["ICC(C,1)", "ICC"], abs=1e-9)
    # pingouin rounds its CIs to 2 decimals
    assert [r["icc2_1_lo"], r["icc2_1_hi"]] == pytest.approx(list(ref.at["ICC(A,1)", "CI95"]),
                                                             abs=0.0051)
    assert [r["icc3_1_lo"], r["icc3_1_hi"]] == pytest.approx(list(ref.at["ICC(C,1)", "CI95"]),
                                                             abs=0.0051)


def test_bland_altman_pearson_spearman_and_regression_by_hand() -> None:
    manual = [10.0, 12.0, 15.0, 11.0, 20.0, 18.0, 14.0]
    model = [11.0, 12.5, 16.5, 10.0, 22.0, 19.0, 15.5]
    r = A.agreement(np.array(manual), np.array(model))
    diffs = [b - a for a, b in zip(manual, model, strict=True)]
    bias, sd = statistics.mean(diffs), statistics.stdev(diffs)
    assert r["ba_bias"] == pytest.approx(bias)
    assert r["ba_sd"] == pytest.approx(sd)
    assert (r["ba_loa_lo"], r["ba_loa_hi"]) == pytest.approx((bias - 1.96 * sd, bias + 1.96 * sd))
    assert r["pearson_r"] == pytest.approx(statistics.correlation(manual, model))
    def rank(v: list[float]) -> list[float]:  # no ties here
        return [float(sorted(v).index(x)) for x in v]

    assert r["spearman_r"] == pytest.approx(statistics.correlation(rank(manual), rank(model)))
    slope, intercept = statistics.linear_regression(manual, model)
    assert (r["slope"], r["intercept"]) == pytest.approx((slope, intercept))
    assert r["n_videos"] == 7


def test_agreement_drops_pairs_with_a_missing_value() -> None:
    r = A.agreement(np.array([1.0, 2.0, np.nan, 4.0, 5.0]), np.array([1.1, 2.1, 3.0, np.nan, 5.2]))
    assert r["n_videos"] == 3
    assert r["ba_bias"] == pytest.approx((0.1 + 0.1 + 0.2) / 3)


def test_hedges_g_by_formula_and_pingouin() -> None:
    c = [3.1, 2.8, 3.6, 3.3, 2.9, 3.0]
    t = [4.0, 3.7, 4.4, 3.9, 4.6]
    n1, n2 = len(c), len(t)
    pooled = math.sqrt(((n1 - 1) * statistics.variance(c) + (n2 - 1) * statistics.variance(t))
                       / (n1 + n2 - 2))
    d = (statistics.mean(t) - statistics.mean(c)) / pooled
    df = n1 + n2 - 2
    assert A.hedges_g(np.array(c), np.array(t)) == pytest.approx(d * (1 - 3 / (4 * df - 1)))
    pg = pytest.importorskip("pingouin")
    assert A.hedges_g(np.array(c), np.array(t)) == pytest.approx(
        pg.compute_effsize(t, c, eftype="hedges"))


def _per_video(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"video": f"{cond}{i}", "condition": cond, "speed": v}
            for cond, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_effect_table_model_effect_within_or_outside_manual_ci() -> None:
    rng = np.random.default_rng(3)
    manual = _per_video({"vehicle": list(rng.normal(5, 1, 8)), "drug": list(rng.normal(8, 1, 8))})
    close = manual.assign(speed=manual["speed"] + rng.normal(0, 0.05, len(manual)))
    flipped = manual.assign(speed=np.where(manual["condition"] == "drug", 5.0, 8.0)
                            + rng.normal(0, 1, len(manual)))
    good = A.effect_table(manual, close, ["speed"], "vehicle", n_boot=500).iloc[0]
    g_true = A.hedges_g(manual.loc[manual.condition == "vehicle", "speed"].to_numpy(),
                        manual.loc[manual.condition == "drug", "speed"].to_numpy())
    assert good["g_manual"] == pytest.approx(g_true)
    assert good["g_manual_lo"] < good["g_manual"] < good["g_manual_hi"]
    assert good["g_manual_lo"] > 0  # a 3-sd effect with 8 videos per group: CI excludes 0
    assert good["same_sign"] and good["model_within_manual_ci"]
    assert (good["n_control"], good["n_condition"]) == (8, 8)
    bad = A.effect_table(manual, flipped, ["speed"], "vehicle", n_boot=500).iloc[0]
    assert not bad["same_sign"] and not bad["model_within_manual_ci"]


def test_position_errors_on_scored_frames() -> None:
    manual = pd.DataFrame({"video": ["v", "v", "w"], "frame": [0, 10, 0],
                           "x": [1.0, 5.0, 0.0], "y": [1.0, 5.0, 0.0]})
    model = pd.DataFrame({"video": ["v", "v", "v"], "frame": [0, 5, 10],
                          "x": [4.0, 9.0, 5.0], "y": [5.0, 9.0, 6.0]})
    err = A.position_errors(manual, model)
    assert err["error_px"].tolist()[:2] == [5.0, 1.0]
    assert np.isnan(err["error_px"].iloc[2])  # video w: no model point


# ------------------------------------------------------------------ quality
def _smooth(n: int) -> np.ndarray:
    t = np.arange(n)
    return np.column_stack([80 + 30 * np.cos(t / 150), 60 + 30 * np.sin(t / 150)])


def test_jitter_recovers_known_noise() -> None:
    """iid N(0, s) per coordinate: the second difference is N(0, 6 s^2) per coordinate, its norm
    Rayleigh with scale sqrt(6) s, median sqrt(6) s sqrt(2 ln 2)."""
    rng = np.random.default_rng(0)
    s = 1.5
    xy = _smooth(20000) + rng.normal(0, s, (20000, 2))
    assert Q.jitter(xy) == pytest.approx(math.sqrt(6) * s * math.sqrt(2 * math.log(2)), rel=0.03)
    assert Q.jitter(_smooth(20000)) < 0.01


def test_jump_rate_counts_injected_jumps() -> None:
    n = 1001
    xy = _smooth(n)
    spikes = [100, 300, 500, 700]
    xy[spikes, 0] += 40.0  # each isolated spike: one step out, one step back
    assert Q.jump_rate(xy, jump_px=20.0) == pytest.approx(2 * len(spikes) / (n - 1))
    assert Q.jump_rate(_smooth(n), jump_px=20.0) == 0.0


def test_video_quality_likelihood_share_and_longest_run() -> None:
    n = 100
    lik = np.full(n, 0.95)
    lik[10:13] = 0.2  # run of 3
    lik[50:57] = 0.1  # run of 7
    lik[90] = np.nan
    xy = _smooth(n)
    preds = pd.DataFrame({"video": "v", "frame": np.arange(n), "bodypart": "snout",
                          "x": xy[:, 0], "y": xy[:, 1], "likelihood": lik})
    preds = preds.drop(index=[40])  # a missing frame: reindexed as a missing point
    q = Q.video_quality(preds, pcutoff=0.6, jump_px=20.0).iloc[0]
    assert q["n_frames"] == n
    assert q["low_likelihood_share"] == pytest.approx(12 / n)  # 3 + 7 + NaN + missing frame
    assert q["longest_low_run"] == 7


def test_animal_count_share() -> None:
    rows = []
    for f in range(10):
        for a in range(2):
            lik = 0.1 if (a == 1 and f < 3) else 0.9
            rows.append({"video": "v", "frame": f, "assembly": a, "bodypart": "snout",
                         "x": 1.0, "y": 1.0, "likelihood": lik})
    q = Q.animal_count_share(pd.DataFrame(rows), expected=2, pcutoff=0.6)
    assert q.iloc[0]["expected_animals_share"] == pytest.approx(0.7)


# ------------------------------------------------------------------ endpoints
def _track(xy: list[tuple[float, float]], frames: list[int] | None = None) -> pd.DataFrame:
    a = np.asarray(xy, float)
    return pd.DataFrame({"frame": frames if frames is not None else np.arange(len(a)),
                         "x": a[:, 0], "y": a[:, 1]})


def test_distance_and_speed_on_a_known_path() -> None:
    """A square of side 40 px walked once at 2 px/frame (80 steps), 10 fps, 4 px/cm: 40 cm in
    8 s = 5 cm/s."""
    side = [(10 + 2 * i, 10) for i in range(20)] + [(50, 10 + 2 * i) for i in range(20)]
    side += [(50 - 2 * i, 50) for i in range(20)] + [(10, 50 - 2 * i) for i in range(20)]
    side.append((10, 10))
    p = E.EndpointParams(fps=10, px_per_cm=4)
    r = E.endpoints(_track(side), p, None)
    assert r["distance_cm"] == pytest.approx(160 / 4)
    assert r["duration_s"] == pytest.approx(8.0)
    assert r["mean_speed_cm_s"] == pytest.approx(5.0)
    assert r["median_speed_cm_s"] == pytest.approx(5.0)
    assert np.isnan(r["centre_s"])  # no arena
    # the same path scored every 10th frame (a manual scoring): the corners are kept
    sub = _track(side[::10], frames=list(range(0, 81, 10)))
    assert E.endpoints(sub, p, None)["distance_cm"] == pytest.approx(40.0)


def test_immobility_needs_the_minimum_duration() -> None:
    """10 fps: still for 30 frames (3 s), moving 20 frames, still 5 frames (0.5 s), moving."""
    xy: list[tuple[float, float]] = [(50.0, 50.0)] * 31
    for _ in range(20):
        xy.append((xy[-1][0] + 3, 50.0))
    xy += [xy[-1]] * 5
    for _ in range(20):
        xy.append((xy[-1][0] - 3, 50.0))
    p = E.EndpointParams(fps=10, px_per_cm=1, immobile_speed_cm_s=2.0, immobile_min_s=1.0)
    assert E.endpoints(_track(xy), p, None)["immobile_s"] == pytest.approx(3.0)
    p.immobile_min_s = 0.4
    assert E.endpoints(_track(xy), p, None)["immobile_s"] == pytest.approx(3.5)


def test_time_in_centre_and_entries_rectangle_and_circle() -> None:
    """Arena 0..100 square, centre fraction 0.5 = 25..75. Path: 10 frames periphery, 20 centre,
    10 periphery, 5 centre, 5 periphery (1 fps): centre 25 s, periphery 25 s, 2 entries."""
    pts = [(10.0, 10.0)] * 10 + [(50.0, 50.0)] * 20 + [(90.0, 50.0)] * 10
    pts += [(60.0, 40.0)] * 5 + [(5.0, 95.0)] * 5
    p = E.EndpointParams(fps=1, px_per_cm=1, centre_fraction=0.5)
    rect = E.Arena("rectangle", x0=0, y0=0, x1=100, y1=100)
    r = E.endpoints(_track(pts), p, rect)
    assert (r["centre_s"], r["periphery_s"]) == (25.0, 25.0)
    assert r["centre_share"] == 0.5
    assert r["centre_entries"] == 2
    circle = E.Arena("circle", cx=50, cy=50, r=50)  # centre radius 25: (60, 40) is at 14 px
    rc = E.endpoints(_track(pts), p, circle)
    assert (rc["centre_s"], rc["centre_entries"]) == (25.0, 2)
    corner = E.endpoints(_track([(30.0, 30.0)] * 4), p, circle)  # 28 px from the centre
    assert corner["centre_s"] == 0.0


def test_bad_arena_is_one_line_error() -> None:
    with pytest.raises(PoseopsError, match="rectangle needs x0 < x1"):
        E.Arena("rectangle", x0=10, y0=0, x1=5, y1=10)
    with pytest.raises(PoseopsError, match="'rectangle' or 'circle'"):
        E.Arena("hexagon")


def test_reference_track_is_centroid_of_confident_bodyparts() -> None:
    preds = pd.DataFrame({
        "video": "v", "frame": [0, 0, 0, 1, 1, 1],
        "bodypart": ["snout", "tailbase", "leftear"] * 2,
        "x": [10.0, 20.0, 99.0, 12.0, 30.0, 0.0], "y": [0.0, 10.0, 99.0, 2.0, 50.0, 0.0],
        "likelihood": [0.9, 0.9, 0.9, 0.9, 0.1, 0.9]})
    ref = E.reference_track(preds, ["snout", "tailbase"], pcutoff=0.6)
    assert ref[["x", "y", "n_points"]].to_numpy().tolist() == [[15.0, 5.0, 2], [12.0, 2.0, 1]]
    with pytest.raises(PoseopsError, match=r"reference bodyparts \['nose'\]"):
        E.reference_track(preds, ["nose"], pcutoff=0.6)


def test_bias_corrected_bootstrap_interval_analytic() -> None:
    """Bootstrap values = the N(0, 1) quantiles: an estimate e gives z0 = e, so the BC interval is
    the N(0, 1) quantiles at Phi(2 e -+ 1.96), i.e. (2 e - 1.96, 2 e + 1.96); e = 0: percentiles."""
    from scipy.stats import norm

    boot = norm.ppf((np.arange(200000) + 0.5) / 200000)
    assert A.bc_interval(boot, 0.0, 0.95) == pytest.approx((-1.96, 1.96), abs=0.01)
    assert A.bc_interval(boot, 0.5, 0.95) == pytest.approx((1.0 - 1.96, 1.0 + 1.96), abs=0.01)
    assert np.isnan(A.bc_interval(np.array([np.nan]), 1.0, 0.95)[0])


def test_worst_frames_are_the_least_confident_then_the_jerkiest() -> None:
    from poseops.behaviour.sheet import worst_frames

    n = 60
    xy = _smooth(n)
    lik = np.full(n, 0.9)
    lik[[10, 11, 40]] = [0.1, 0.05, 0.2]  # 11 is the worst, 10 is too close to it
    xy[30] += 25.0  # a jump: the jerkiest confident frame
    preds = pd.DataFrame({"video": "v", "frame": np.arange(n), "bodypart": "snout",
                          "x": xy[:, 0], "y": xy[:, 1], "likelihood": lik})
    ref = preds[["video", "frame", "x", "y"]]
    w = worst_frames(preds, ref, n=3, min_gap=5)
    assert w["frame"].tolist() == [11, 40, 30]
    assert w["min_likelihood"].tolist() == [0.05, 0.2, 0.9]
