"""analyze: DLC's video-analysis output read back into tidy predictions; clear errors for an
undecodable video and a missing model (before any DeepLabCut work)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poseops.config.refine import AnalyzeParams
from poseops.core.errors import PoseopsError
from poseops.dlc.inference import predictions_from_dlc
from poseops.refine import analyze as A


def _dlc_frame(n=5, bps=("snout", "tailbase"), scorer="DLC_Cspnext_demoJan1shuffle1_2"):
    """The frame deeplabcut.analyze_videos writes (create_df_from_prediction's layout)."""
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 1, (n, len(bps), 3))
    cols = pd.MultiIndex.from_product([[scorer], list(bps), ["x", "y", "likelihood"]],
                                      names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(arr.reshape(n, -1), columns=cols, index=range(n)), arr


def test_predictions_from_dlc_round_trip(tmp_path):
    df, arr = _dlc_frame()
    df.to_hdf(tmp_path / "v.h5", key="df_with_missing", format="table", mode="w")
    p = predictions_from_dlc(pd.read_hdf(tmp_path / "v.h5", "df_with_missing"), "v")
    assert len(p) == 10 and set(p.video) == {"v"}
    row = p[(p.frame == 3) & (p.bodypart == "tailbase")].iloc[0]
    assert (row.x, row.y, row.likelihood) == tuple(arr[3, 1])
    s = A.likelihood_summary(p, pcutoff=0.5)
    f3 = s[s.frame == 3].iloc[0]
    assert f3.mean_likelihood == pytest.approx(arr[3, :, 2].mean())
    assert f3.min_likelihood == pytest.approx(arr[3, :, 2].min())
    assert f3.n_below_pcutoff == int((arr[3, :, 2] < 0.5).sum())


def test_missing_model_is_a_clear_error(small_demo_root, tmp_path):
    project = small_demo_root / "raw" / "demo"
    params = AnalyzeParams(config=str(project / "config.yaml"), shuffle=1, out=str(tmp_path))
    with pytest.raises(PoseopsError, match="model missing.*shuffle 1"):
        A.analyze_videos(params, [project / "videos" / "m1-s4.mp4"])
    params = AnalyzeParams(train_workdir=str(tmp_path / "nowhere"), out=str(tmp_path))
    with pytest.raises(PoseopsError, match="run.json.*no trained model"):
        A.analyze_videos(params, [project / "videos" / "m1-s4.mp4"])


def test_undecodable_video_is_named_before_the_model_loads(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 500)
    params = AnalyzeParams(train_workdir=str(tmp_path / "nowhere"), out=str(tmp_path))
    with pytest.raises(PoseopsError, match=r"broken\.mp4.*cannot be decoded"):
        A.analyze_videos(params, [bad])
