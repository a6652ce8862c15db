"""Consensus + labeler QC on the demo project's three simulated labelers (ingest -> consensus)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.commands import consensus as CC
from poseops.config.data import ConsensusParams
from poseops.core import schema as S
from poseops.data import consensus as C


@pytest.fixture(scope="module")
def demo_labels(demo_project: Path, demo_metadata: Path) -> pd.DataFrame:
    from poseops.data.ingest import ingest_project

    return ingest_project(demo_project, demo_metadata)


@pytest.fixture(scope="module")
def demo_result(demo_labels: pd.DataFrame) -> C.ConsensusResult:
    return C.analyse(demo_labels, ConsensusParams())


def test_biased_labeler_is_flagged_and_offset_recovered(
    demo_project: Path, demo_result: C.ConsensusResult
):
    manifest = json.loads((demo_project / "demo_manifest.json").read_text())
    bias = manifest["bias"]
    qc = demo_result.qc.set_index([S.SCORER, S.BODYPART])
    row = qc.loc[(bias["labeler"], bias["bodypart"])]
    dx, dy = bias["dx_dy_px"]
    assert row["flagged_bias"]
    assert row["dx_loo"] == pytest.approx(dx, abs=0.5) and row["dy_loo"] == pytest.approx(
        dy, abs=0.5
    )
    assert row["bias_x"] == pytest.approx(dx, abs=0.5) and row["bias_y"] == pytest.approx(
        dy, abs=0.5
    )
    assert demo_result.summary["flagged_bias"] == [f"{bias['labeler']}/{bias['bodypart']}"]


def test_consensus_error_is_lower_than_every_labeler(
    demo_project: Path, demo_labels: pd.DataFrame, demo_result: C.ConsensusResult
):
    truth = pd.read_csv(demo_project / "ground_truth.csv")
    cons = demo_result.consensus
    multi = cons.loc[cons[C.N_LABELERS] >= 2, [S.IMAGE, S.BODYPART]]
    assert len(multi) > 100

    def error(df: pd.DataFrame) -> float:
        m = df.merge(multi, on=[S.IMAGE, S.BODYPART]).merge(
            truth[[S.IMAGE, S.BODYPART, S.X, S.Y]], on=[S.IMAGE, S.BODYPART], suffixes=("", "_t")
        )
        return float(np.nanmean(np.hypot(m[S.X] - m["x_t"], m[S.Y] - m["y_t"])))

    labelers = {s: error(g) for s, g in demo_labels.groupby(S.SCORER)}
    assert set(labelers) == {"alice", "bob", "carol"}
    assert error(cons) < min(labelers.values())


def test_single_labeled_frames_pass_through(
    demo_labels: pd.DataFrame, demo_result: C.ConsensusResult
):
    cons = demo_result.consensus
    assert len(cons) == demo_labels[[S.IMAGE, S.BODYPART]].drop_duplicates().shape[0]
    alice = demo_labels[demo_labels[S.SCORER] == "alice"].set_index([S.IMAGE, S.BODYPART])
    once = cons[cons[C.N_LABELERS] == 1].set_index([S.IMAGE, S.BODYPART])
    assert len(once) > 0
    np.testing.assert_array_equal(once[[S.X, S.Y]], alice.loc[once.index, [S.X, S.Y]])
    for c in S.METADATA_COLUMNS:
        assert cons[c].notna().all()


def test_icc_excellent_on_the_demo(demo_result: C.ConsensusResult):
    icc = demo_result.icc
    assert len(icc) == 8 and (icc["n_raters"] == 3).all()
    assert (icc["icc"] >= 0.95).all()


def test_consensus_written_in_dlc_format_reads_back(
    demo_copy: Path, demo_result: C.ConsensusResult
):
    import yaml

    from poseops.dlc import files as dlcio

    cfg = yaml.safe_load((demo_copy / "config.yaml").read_text())
    cons = demo_result.consensus
    paths = CC.consensus_to_dlc(cons, demo_copy, cfg["scorer"], bodyparts=cfg["bodyparts"])
    assert len(paths) == cons[S.VIDEO].nunique()
    back = pd.concat([dlcio.wide_to_long(pd.read_hdf(p)) for p in paths], ignore_index=True)
    assert (back[S.SCORER] == cfg["scorer"]).all()
    m = back.merge(cons, on=[S.IMAGE, S.BODYPART], suffixes=("", "_c"))
    assert len(m) == len(cons)
    np.testing.assert_allclose(m[S.X], m["x_c"])
    np.testing.assert_allclose(m[S.Y], m["y_c"])
