"""`poseops analyze` on several videos loads the model once (one DeepLabCut call for the batch),
with the same outputs as one video at a time: per-video ``<video><scorer>.h5`` and the tidy
table in the order the videos were given. Two videos with one file stem (DLC's output name) still
get their own predictions."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest


@pytest.mark.slow
def test_videos_are_analyzed_with_one_model_load_and_unchanged_outputs(small_demo_model, tmp_path,
                                                                       monkeypatch):
    import deeplabcut.pose_estimation_pytorch.apis.utils as dlc_utils

    from poseops.config.refine import AnalyzeParams
    from poseops.refine.analyze import analyze_videos

    tr = small_demo_model.result
    videos = small_demo_model.project / "videos"
    # a video whose stem collides with m1-s1.mp4 but whose frames are m1-s2's
    other = tmp_path / "other" / "m1-s1.mp4"
    other.parent.mkdir()
    shutil.copy(videos / "m1-s2.mp4", other)

    def params(out: str) -> AnalyzeParams:
        return AnalyzeParams(config=str(tr.config_path), shuffle=tr.shuffle, device="cpu",
                             out=str(tmp_path / out))

    # every video alone (one model load each): the reference outputs
    alone = {name: analyze_videos(params(f"alone-{name}"), [videos / f"{name}.mp4"])
             for name in ("m1-s1", "m1-s2", "m1-s4")}

    loads = []
    real = dlc_utils.get_pose_inference_runner

    def counted(*args, **kwargs):
        loads.append(kwargs.get("snapshot_path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dlc_utils, "get_pose_inference_runner", counted)
    given = [videos / "m1-s4.mp4", videos / "m1-s1.mp4", videos / "m1-s2.mp4"]
    preds = analyze_videos(params("batch"), given)
    assert len(loads) == 1, f"the model was loaded {len(loads)} times for 3 videos"

    # the same table as one video at a time, in the order given; the same per-video h5 files
    expected = pd.concat([alone[p.stem] for p in given], ignore_index=True)
    pd.testing.assert_frame_equal(preds, expected)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "batch" / "predictions.parquet"),
        pd.concat([pd.read_parquet(tmp_path / f"alone-{p.stem}" / "predictions.parquet")
                   for p in given], ignore_index=True))
    for name in alone:
        (h5,) = (tmp_path / f"alone-{name}").glob(f"{name}DLC*.h5")
        pd.testing.assert_frame_equal(pd.read_hdf(tmp_path / "batch" / h5.name),
                                      pd.read_hdf(h5))

    # a stem shared by two videos: two DLC calls, each video gets its own frames' predictions
    loads.clear()
    mixed = analyze_videos(params("mixed"), [videos / "m1-s1.mp4", other])
    assert len(loads) == 2
    cols = ["frame", "bodypart", "x", "y", "likelihood"]
    first = mixed[mixed.video_path == str(videos / "m1-s1.mp4")][cols].reset_index(drop=True)
    second = mixed[mixed.video_path == str(other)][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, alone["m1-s1"][cols])
    pd.testing.assert_frame_equal(second, alone["m1-s2"][cols])
