"""The refinement loop on Lightning Pose folders (issue 21), in both layouts: outliers writes the
picked frames where a Lightning Pose user relabels them, with machine labels under the header of
the folder's labels CSV; merge appends the relabeled frames to that CSV; the next ingest reads
them with the relabeled coordinates, in the folder's bodypart order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.commands import ingest, merge, outliers
from poseops.config.loader import update_params
from poseops.config.refine import MergeParams, OutliersParams
from poseops.core.errors import PoseopsError
from poseops.refine import merge as M
from poseops.refine import outliers as O
from tests.support.e2e import REPO, lightning_pose_variant

VIDEO = "m3v1mp4"  # the openfield video in the variant's videos/ (2330 frames: 4-digit names)
PICKED = [4, 9, 17]  # frames with a planted low likelihood
ORDER = ["tailbase", "snout", "rightear", "leftear"]  # the folder's order: neither DLC's nor sorted


def _header(path: Path) -> list[str]:
    return path.read_text().splitlines()[:3]


def _lp_folder(tmp_path: Path, flat: bool) -> Path:
    """The openfield Lightning Pose variant (160x120), its CSV columns in ORDER."""
    proj = lightning_pose_variant(tmp_path / "lp", scale=0.25, flat=flat)
    csv = proj / "CollectedData.csv"
    wide = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
    wide[[c for b in ORDER for c in wide.columns if c[1] == b]].to_csv(csv)
    return proj


def _predictions(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(3)
    rows = []
    for f in range(40):
        for j, bp in enumerate(ORDER):
            lik = 0.1 if (f in PICKED and bp == "snout") else 0.95
            rows.append((VIDEO, f, bp, 100 + 30 * j + f + rng.random(), 80 + 10 * j + rng.random(),
                         lik))
    preds = pd.DataFrame(rows, columns=["video", "frame", "bodypart", "x", "y", "likelihood"])
    path = tmp_path / "preds.parquet"
    preds.to_parquet(path)
    return path, preds


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "subfolders"])
def test_lightning_pose_outliers_merge_ingest_round_trip(tmp_path, flat, monkeypatch):
    """Through the commands, as a user runs them with params.yaml project.format: lightning-pose."""
    proj = _lp_folder(tmp_path, flat)
    root_csv = proj / "CollectedData.csv"
    header = _header(root_csv)
    before = pd.read_csv(root_csv, header=[0, 1, 2], index_col=0)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"video": [VIDEO], "animal": ["m3"], "session": ["s1"], "condition": ["ctrl"],
                  "dose": ["0"], "camera": ["top"]}).to_csv(meta, index=False)
    ppath, preds = _predictions(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    update_params({"project": {"path": str(proj), "format": "lightning-pose", "metadata": str(meta)},
                   "outliers": {"predictions": str(ppath), "p_bound": 0.6, "epsilon": 1e9,
                                "uncertain_fraction": 0.0, "n_frames": 3, "balance_by": None},
                   "merge": {"dvc": False}}, params)
    monkeypatch.chdir(tmp_path)  # relative outputs (manifest, split, report) land here

    manifest = outliers.run(params_file=params)

    # the frames sit where a Lightning Pose user relabels them, named as the folder uses them
    expected = ([f"labeled-data/{VIDEO}_img{f:04d}.png" for f in PICKED] if flat
                else [f"labeled-data/{VIDEO}/img{f:04d}.png" for f in PICKED])
    assert sorted(manifest["image"]) == expected
    for img in expected:
        assert (proj / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = proj / "labeled-data" / ("" if flat else VIDEO)
    ml_csv = folder / "machinelabels-iter0.csv"
    assert _header(ml_csv) == header  # the same 3-row header as the folder's labels CSV
    ml = pd.read_csv(ml_csv, header=[0, 1, 2], index_col=0)
    assert list(ml.index) == expected
    for img, f in zip(expected, PICKED, strict=True):
        for bp in ORDER:
            p = preds[(preds.frame == f) & (preds.bodypart == bp)].iloc[0]
            assert ml.loc[img, ("Pranav", bp, "x")] == pytest.approx(p.x)
            assert ml.loc[img, ("Pranav", bp, "y")] == pytest.approx(p.y)
    assert not list(proj.glob("labeled-data/**/*.h5"))  # no DLC file in a Lightning Pose folder

    # the user relabels: saves CollectedData_<scorer>.csv beside the frames (columns in another
    # order, one keypoint left unlabeled)
    rel = ml.copy()
    rng = np.random.default_rng(7)
    rel.loc[:, :] = np.round(rng.uniform(5, 115, rel.shape), 3)
    rel.loc[expected[1], ("Pranav", "leftear", "x")] = np.nan
    rel.loc[expected[1], ("Pranav", "leftear", "y")] = np.nan
    rel = rel[sorted(rel.columns, key=lambda c: (c[1], c[2]))]
    rel.to_csv(folder / "CollectedData_Pranav.csv")

    report = merge.run(git=False, params_file=params)
    assert report["frames_added"] == 3 and report["iteration"] == 1
    assert _header(root_csv) == header
    assert not list(proj.glob("labeled-data/**/*.h5"))

    labels = pd.read_parquet(ingest.run(params_file=params))
    assert labels["image"].nunique() == len(before) + 3
    for img in expected:
        rows = labels[labels.image == img]
        assert list(rows.bodypart) == ORDER
        assert (rows.video == (proj.name if flat else VIDEO)).all()
        for _, r in rows.iterrows():
            x, y = rel.loc[img, ("Pranav", r.bodypart, "x")], rel.loc[img, ("Pranav", r.bodypart, "y")]
            if np.isnan(x):
                assert not r.labeled and np.isnan(r.x) and np.isnan(r.y)
            else:
                assert r.labeled and (r.x, r.y) == (pytest.approx(x), pytest.approx(y))
    old = labels[~labels.image.isin(expected)].set_index(["image", "bodypart"])
    for img in before.index[:5]:
        for bp in ORDER:
            assert old.loc[(img, bp), "x"] == pytest.approx(before.loc[img, ("Pranav", bp, "x")])


def test_lightning_pose_merge_refuses_a_wrong_bodypart_and_changes_nothing(tmp_path):
    proj = _lp_folder(tmp_path, flat=True)
    root_csv = proj / "CollectedData.csv"
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"video": [VIDEO], "condition": ["ctrl"]}).to_csv(meta, index=False)
    ppath, _ = _predictions(tmp_path)
    op = OutliersParams(predictions=str(ppath), epsilon=1e9, uncertain_fraction=0.0, n_frames=3,
                        balance_by=None, manifest=str(tmp_path / "out" / "manifest.csv"))
    O.pick_outliers(op, proj, meta, fmt="lightning-pose")
    ml = pd.read_csv(proj / "labeled-data" / "machinelabels-iter0.csv", header=[0, 1, 2], index_col=0)
    ml.rename(columns={"snout": "nose"}, level=1).to_csv(proj / "labeled-data" / "CollectedData_Pranav.csv")
    before = root_csv.read_bytes()
    mp = MergeParams(manifest=op.manifest, split=str(tmp_path / "no-split.csv"), dvc=False,
                     git=False, report=str(tmp_path / "merge.json"))
    with pytest.raises(PoseopsError, match=r"CollectedData_Pranav\.csv, bodypart 'nose': "
                       r"bodypart not in CollectedData\.csv bodyparts"):
        M.merge_iteration(mp, proj, fmt="lightning-pose")
    assert root_csv.read_bytes() == before
    assert not (proj / "poseops_iteration.yaml").exists()
