"""Issue 24 item 3: seed-ensemble disagreement, on constructed predictions whose variance is
known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poseops.core.errors import PoseopsError
from poseops.refine.ensemble import ensemble_disagreement, frame_disagreement


def _members(offsets: dict[str, list[tuple[float, float]]]) -> dict[str, pd.DataFrame]:
    """Members predicting two images x two bodyparts at a base position + their offset."""
    keys = [("labeled-data/v1/img001.png", "snout"), ("labeled-data/v1/img001.png", "tailbase"),
            ("labeled-data/v2/img007.png", "snout"), ("labeled-data/v2/img007.png", "tailbase")]
    out = {}
    for name, offs in offsets.items():
        out[name] = pd.DataFrame([{"image": i, "bodypart": b, "x": 50.0 + k + dx, "y": 20.0 + dy,
                                   "likelihood": 0.9} for k, ((i, b), (dx, dy))
                                  in enumerate(zip(keys, offs, strict=True))])
    return out


def test_disagreement_is_the_variance_of_positions_across_members() -> None:
    # keypoint 0: x at -2, 0, +2 -> var_x = 8/3, var_y = 0; keypoint 1: all agree -> 0;
    # keypoint 2: a 3-4-5 triangle around the mean; keypoint 3: one member far off in y
    offs = {"s0": [(-2, 0), (1, 1), (3, 4), (0, 0)],
            "s1": [(0, 0), (1, 1), (-3, -4), (0, 0)],
            "s2": [(2, 0), (1, 1), (0, 0), (0, 30)]}
    got = ensemble_disagreement(_members(offs)).set_index(["image", "bodypart"])
    stacked = np.array(list(offs.values()), float)  # (members, keypoints, xy)
    want = stacked.var(axis=0, ddof=0).sum(axis=1)  # mean squared distance to the mean position
    np.testing.assert_allclose(got["variance_px2"].to_numpy(), want)
    np.testing.assert_allclose(got["variance_px2"].iloc[0], 8 / 3)
    np.testing.assert_allclose(got["variance_px2"].iloc[2], 50 / 3)
    np.testing.assert_allclose(got["sd_px"].to_numpy(), np.sqrt(want))
    assert (got["n_members"] == 3).all()
    frames = frame_disagreement(got.reset_index()).set_index("image")
    assert frames.loc["labeled-data/v1/img001.png", "max_sd_px"] == pytest.approx(np.sqrt(8 / 3))
    assert frames.loc["labeled-data/v2/img007.png", "max_sd_px"] == pytest.approx(np.sqrt(want[3]))


def test_missing_predictions_and_bad_inputs() -> None:
    m = _members({"a": [(0, 0)] * 4, "b": [(4, 0)] * 4})
    m["b"].loc[0, "x"] = np.nan  # one member lost keypoint 0: no variance from one member
    got = ensemble_disagreement(m)
    assert got.loc[0, "n_members"] == 1 and np.isnan(got.loc[0, "variance_px2"])
    np.testing.assert_allclose(got.loc[1:, "variance_px2"], 4.0)  # (+-2)^2
    with pytest.raises(PoseopsError, match="2 members"):
        ensemble_disagreement({"a": m["a"]})
    with pytest.raises(PoseopsError, match="unordered"):
        ensemble_disagreement({k: v.assign(assembly=0) for k, v in m.items()})
    with pytest.raises(PoseopsError, match="twice"):
        ensemble_disagreement({"a": pd.concat([m["a"], m["a"]]), "b": m["b"]})
