"""`poseops compare --trajectories`: did refinement make trajectories steadier? Two behaviour
outputs' video_quality.csv paired per video, checked against scipy and numpy computed here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from support.tables import compare_errors

from poseops.cli import main
from poseops.core.errors import PoseopsError
from poseops.refine import trajectories as T

METRICS = ["jitter_px", "jump_rate", "low_likelihood_share", "longest_low_run"]


def _quality(videos: list[str], jitter: np.ndarray, seed: int) -> pd.DataFrame:
    """A video_quality.csv as `poseops behaviour` writes it: video x bodypart x filtered."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, v in enumerate(videos):
        for bp in ("snout", "centroid"):
            for filt in (False, True):
                rows.append({"video": v, "bodypart": bp, "filtered": filt, "n_frames": 90,
                             "jitter_px": jitter[i] / (2 if filt else 1) + (bp == "snout"),
                             "jump_rate": rng.uniform(0, 0.1),
                             "low_likelihood_share": rng.uniform(0, 0.3),
                             "longest_low_run": int(rng.integers(0, 10)),
                             "mean_likelihood": 0.9, "condition": "vehicle"})
    return pd.DataFrame(rows)


VIDEOS = [f"m{i}-s1" for i in range(1, 9)]
BASE_JITTER = np.array([3.0, 2.5, 4.0, 3.5, 2.0, 5.0, 3.2, 2.8])
STEADIER = np.array([-1.0, -0.4, -2.0, -0.9, -0.2, -2.5, -1.2, -0.7])  # every video steadier


def test_paired_per_video_statistics_match_scipy() -> None:
    base = _quality(VIDEOS + ["only-in-baseline"], np.r_[BASE_JITTER, 9.0], 0)
    cand = _quality(VIDEOS, BASE_JITTER + STEADIER, 1)
    t = T.compare_quality(base, cand, n_boot=500, seed=0)
    assert len(t) == 2 * 2 * len(METRICS)  # bodypart x filtered x metric
    r = t[(t.bodypart == "centroid") & ~t.filtered & (t.metric == "jitter_px")].iloc[0]
    # the unpaired video is left out; the differences are candidate - baseline per video
    assert r.n_videos == 8
    assert r.median_diff == pytest.approx(np.median(STEADIER))
    assert r.median_baseline == pytest.approx(np.median(BASE_JITTER))
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(STEADIER).pvalue)
    assert r.rank_biserial == -1.0  # every video steadier
    assert r.ci_low <= r.median_diff <= r.ci_high < 0 and r.status == "steadier"
    # filtered rows: half the jitter, so half the differences
    f = t[(t.bodypart == "centroid") & t.filtered & (t.metric == "jitter_px")].iloc[0]
    assert f.median_diff == pytest.approx(np.median(STEADIER / 2))
    # the other metrics: random and independent draws in each table, paired as given
    j = t[(t.bodypart == "snout") & ~t.filtered & (t.metric == "jump_rate")].iloc[0]
    b = base[(base.bodypart == "snout") & ~base.filtered].set_index("video").jump_rate
    c = cand[(cand.bodypart == "snout") & ~cand.filtered].set_index("video").jump_rate
    assert j.median_diff == pytest.approx(np.median((c - b.loc[c.index]).to_numpy()))


def test_mixed_changes_are_unchanged_and_few_videos_undetermined() -> None:
    mixed = np.array([-1.0, 1.2, -0.5, 0.8, -0.3, 0.4, -0.9, 1.1])
    t = T.compare_quality(_quality(VIDEOS, BASE_JITTER, 0),
                          _quality(VIDEOS, BASE_JITTER + mixed, 1), n_boot=500)
    r = t[(t.bodypart == "centroid") & ~t.filtered & (t.metric == "jitter_px")].iloc[0]
    assert r.ci_low < 0 < r.ci_high and r.status == "unchanged"
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(mixed).pvalue)
    few = T.compare_quality(_quality(VIDEOS[:3], BASE_JITTER[:3], 0),
                            _quality(VIDEOS[:3], BASE_JITTER[:3] + STEADIER[:3], 1), n_boot=200)
    assert few.status.eq("undetermined").all() and few.wilcoxon_p.isna().all()
    assert "need >= 5" in few.reason.iloc[0]


def test_cli_writes_trajectories_csv_and_refuses_a_wrong_file(tmp_path) -> None:
    e0 = compare_errors(0, {}, 40, 8)
    e0.to_parquet(tmp_path / "e0.parquet")
    e0.assign(error_px=e0.error_px * 0.8).to_parquet(tmp_path / "e1.parquet")
    (tmp_path / "b").mkdir()
    _quality(VIDEOS, BASE_JITTER, 0).to_csv(tmp_path / "b" / "video_quality.csv", index=False)
    _quality(VIDEOS, BASE_JITTER + STEADIER, 1).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": {
        "n_boot": 300, "log_mlflow": False, "gate": False, "history": "",
        "out": str(tmp_path / "cmp")}}))
    argv = ["compare", str(tmp_path / "e0.parquet"), str(tmp_path / "e1.parquet"),
            "--params", str(tmp_path / "params.yaml"), "--trajectories"]
    # a folder (the behaviour stage's out) or the file itself
    assert main([*argv, str(tmp_path / "b"), str(tmp_path / "c.csv")]) == 0
    out = pd.read_csv(tmp_path / "cmp" / "trajectories.csv")
    r = out[(out.bodypart == "centroid") & ~out.filtered & (out.metric == "jitter_px")].iloc[0]
    assert r.median_diff == pytest.approx(np.median(STEADIER)) and r.status == "steadier"
    # the per-video pairs behind it (the report's table): values as given, with the condition
    pv = pd.read_csv(tmp_path / "cmp" / "trajectories_videos.csv")
    c = pv[(pv.bodypart == "centroid") & ~pv.filtered].set_index("video").loc[VIDEOS]
    np.testing.assert_allclose(c.jitter_px_baseline, BASE_JITTER)
    np.testing.assert_allclose(c.jitter_px_candidate, BASE_JITTER + STEADIER)
    np.testing.assert_allclose(c.jitter_px_diff, STEADIER)
    assert (c.condition == "vehicle").all() and len(pv) == len(VIDEOS) * 2 * 2
    # not a video_quality.csv: one line naming the file, exit 2
    e0.to_csv(tmp_path / "errors.csv", index=False)
    assert main([*argv, str(tmp_path / "b"), str(tmp_path / "errors.csv")]) == 2
    with pytest.raises(PoseopsError, match="errors.csv"):
        T.read_quality(tmp_path / "errors.csv")
    with pytest.raises(PoseopsError, match="no .* in common"):
        T.compare_quality(_quality(VIDEOS[:2], BASE_JITTER[:2], 0),
                          _quality(["other"], BASE_JITTER[:1], 1))


def test_per_individual_quality_tables_pair_each_animal_track(tmp_path) -> None:
    """Tracked multi-animal behaviour outputs (an ``individual`` column): each animal's track is
    one paired unit, ``<video>/<individual>``, never two animals of a video mixed."""
    videos = VIDEOS[:4]
    tables = []
    for k, jit in enumerate((BASE_JITTER, BASE_JITTER + STEADIER)):
        q = pd.concat([_quality(videos, jit[i::2], k).assign(individual=ind)
                       for i, ind in enumerate(("mouse1", "mouse2"))], ignore_index=True)
        q.to_csv(tmp_path / f"q{k}.csv", index=False)
        tables.append(T.read_quality(tmp_path / f"q{k}.csv"))
    assert sorted(tables[0].video.unique()) == sorted(f"{v}/{i}" for v in videos
                                                      for i in ("mouse1", "mouse2"))
    t = T.compare_quality(*tables, n_boot=300)
    r = t[(t.bodypart == "centroid") & ~t.filtered & (t.metric == "jitter_px")].iloc[0]
    assert r.n_videos == 8 and r.median_diff == pytest.approx(np.median(STEADIER))
