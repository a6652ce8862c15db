"""Multi-animal metrics: DLC's matching of predicted assemblies to labeled animals, the errors
and stratified tables with individuals, identity errors (swaps), DLC's mAP/mAR/rmse.

Checked against hand computations and against DeepLabCut's own ``compute_metrics``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.multianimal import (
    BPS,
    W,
    animal,
    dlc_arrays,
    labels_table,
    preds_table,
    random_project,
    split_table,
    with_scores,
)

from poseops.core import schema as S
from poseops.evaluate import matching as MA
from poseops.evaluate import metrics as M


def test_matching_recovers_the_permutation_of_unordered_assemblies():
    rng = np.random.default_rng(1)
    names = ["a1", "a2", "a3"]
    centres = {"a1": (40, 40), "a2": (100, 80), "a3": (160, 120)}
    gt, pred, truth = {}, {}, {}
    for k in range(6):
        image = f"labeled-data/v1/img{k:03d}.png"
        gt[image] = {n: animal(*centres[n]) + rng.normal(0, 3, (3, 2)) for n in names}
        perm = rng.permutation(3)  # assembly a predicts animal names[perm[a]]
        pred[image] = np.stack([with_scores(gt[image][names[p]] + rng.normal(0, 1, (3, 2)),
                                            0.5 + 0.1 * a) for a, p in enumerate(perm)])
        truth[image] = [names[p] for p in perm]
    m = MA.match_predictions(labels_table(gt), preds_table(pred), individuals=names)
    got = m.drop_duplicates([S.IMAGE, S.ASSEMBLY]).set_index([S.IMAGE, S.ASSEMBLY])[S.INDIVIDUAL]
    for image, inds in truth.items():
        assert [got[(image, a)] for a in range(3)] == inds
    assert (m[MA.OKS] > 0).all()  # every assembly matched with a positive OKS


def test_swapped_keypoint_is_counted_per_image_and_split():
    a, b = animal(50, 60), animal(140, 60)
    img1, img2 = "labeled-data/v1/img000.png", "labeled-data/v1/img001.png"
    gt = {img1: {"a1": a, "a2": b}, img2: {"a1": a, "a2": b}}
    # img1: assembly 0 takes a1's nose and body but a2's tail (a mixed assembly)
    mixed = a.copy()
    mixed[2] = b[2] + 1.0
    pred = {img1: np.stack([with_scores(mixed), with_scores(b + 0.5)]),
            img2: np.stack([with_scores(a + 0.5), with_scores(b - 0.5)])}
    labels = labels_table(gt)
    errors = M.compute_errors(labels, preds_table(pred), split_table([img1, img2]))
    sw = errors[errors[MA.SWAPPED]]
    assert list(zip(sw[S.IMAGE], sw[S.INDIVIDUAL], sw[S.BODYPART], sw[MA.NEAREST], strict=True)) \
        == [(img1, "a1", "tail", "a2")]
    # the swapped keypoint's error is the distance to a1's tail (what DLC's rmse counts)
    row = sw.iloc[0]
    assert row[S.ERROR_PX] == pytest.approx(np.hypot(*(b[2] + 1.0 - a[2])))
    m = MA.match_predictions(labels, preds_table(pred))
    ident = MA.identity_table(errors, m).set_index(S.IMAGE)
    assert ident.loc[img1, "n_swapped"] == 1 and ident.loc[img2, "n_swapped"] == 0
    assert ident.loc[img1, "n_swapped_keypoints"] == 1
    summ = MA.identity_summary(ident.reset_index())[S.TEST]
    assert summ["identity_swaps"] == 1 and summ["n_matched_animals"] == 4
    assert summ["identity_swap_rate"] == pytest.approx(0.25)


def test_dlc_oks_map_equals_hand_computation_on_one_animal():
    gt_xy = np.array([[50.0, 50.0], [90.0, 80.0], [70.0, 60.0]])
    d = np.array([3.0, 4.0, 0.0])  # prediction offsets along x
    pred_xy = gt_xy + np.stack([d, np.zeros(3)], axis=1)
    image = "labeled-data/v1/img000.png"
    labels = labels_table({image: {"a1": gt_xy}})
    preds = preds_table({image: with_scores(pred_xy)[None]})
    got = MA.dlc_multianimal_metrics(labels, preds, [image], pcutoff=0.6)
    # COCO OKS with DLC's area (product of the keypoints' extent) and sigma 0.1 for every kpt
    area = np.prod(np.ptp(gt_xy, axis=0) + np.spacing(1))
    oks = np.mean(np.exp(-(d ** 2) / (2 * area * (2 * 0.1) ** 2)))
    thresholds = np.linspace(0.5, 0.95, 10)
    # one animal, one prediction: precision = recall = 1 where OKS >= t, else 0
    expected = 100 * np.mean(oks >= thresholds)
    assert 0 < expected < 100  # the case separates thresholds
    assert got["mAP"] == pytest.approx(expected, abs=1e-9)
    assert got["mAR"] == pytest.approx(expected, abs=1e-9)
    assert got["dlc_rmse_px"] == pytest.approx(d.mean())


@pytest.mark.parametrize("pcutoff", [0.6, {"nose": 0.3, "body": 0.5, "tail": 0.7, "corner": 0.4}])
def test_errors_table_mean_equals_dlc_rmse_after_matching(pcutoff):
    from deeplabcut.core.metrics import compute_metrics

    labels, preds, names = random_project(7)
    images = sorted(preds[S.IMAGE].unique())
    split = pd.DataFrame({S.IMAGE: images, S.SPLIT: [S.TRAIN, S.TEST] * 6})
    errors = M.compute_errors(labels, preds, split)
    st = M.stratified_table(errors, M.MetricSpec(pcutoff=pcutoff))
    head = M.headline_metrics(st)
    # DLC's own arrays (built here independently of pose_arrays) and DLC's compute_metrics
    for split_name in (S.TRAIN, S.TEST):
        imgs = split.loc[split[S.SPLIT] == split_name, S.IMAGE]
        gt, pr, gu, pu = dlc_arrays(labels, preds, imgs, names)
        cut = pcutoff if not isinstance(pcutoff, dict) else [pcutoff[b] for b in BPS + ["corner"]]
        want = compute_metrics(gt, pr, single_animal=False, unique_bodypart_gt=gu,
                               unique_bodypart_poses=pu, pcutoff=cut,
                               compute_detection_rmse=False)
        assert head[split_name]["mean_px"] == pytest.approx(want["rmse"], abs=1e-9)
        assert head[split_name]["mean_px_pcutoff"] == pytest.approx(want["rmse_pcutoff"], abs=1e-9)
        ours = MA.dlc_multianimal_metrics(labels, preds, list(imgs), pcutoff, names)
        assert ours["mAP"] == pytest.approx(want["mAP"], abs=1e-9)
        assert ours["mAR"] == pytest.approx(want["mAR"], abs=1e-9)
        assert ours["dlc_rmse_px"] == pytest.approx(want["rmse"], abs=1e-9)


def test_stratified_table_gains_individual_and_animals_in_frame():
    labels, preds, _ = random_project(3)
    images = sorted(preds[S.IMAGE].unique())
    split = pd.DataFrame({S.IMAGE: images, S.SPLIT: S.TEST})
    errors = M.compute_errors(labels, preds, split)
    st = M.stratified_table(errors)
    # animals in frame = labeled animals (not "single") per image, counted independently
    lab = labels[labels[S.X].notna() & (labels[S.INDIVIDUAL] != S.SINGLE)]
    n_animals = lab.groupby(S.IMAGE)[S.INDIVIDUAL].nunique()
    assert (errors[S.ANIMALS_IN_FRAME] == errors[S.IMAGE].map(n_animals).fillna(0)).all()
    for st_type, col in ((S.INDIVIDUAL, S.INDIVIDUAL), (S.ANIMALS_IN_FRAME, S.ANIMALS_IN_FRAME)):
        sub = st[st[M.STRATUM_TYPE] == st_type].set_index(M.STRATUM)
        assert len(sub)
        for value, g in errors.groupby(errors[col].astype(str)):
            e = g[S.ERROR_PX].dropna()
            if not g[S.LABELED].any():
                assert value not in sub.index
                continue
            assert sub.loc[value, M.N] == len(e)
            assert sub.loc[value, "n_labeled"] == g[S.LABELED].sum()
            if len(e):
                assert sub.loc[value, "mean_px"] == pytest.approx(e.mean())
    assert set(st.loc[st[M.STRATUM_TYPE] == S.INDIVIDUAL, M.STRATUM]) >= {"a1", S.SINGLE}


def test_unmatched_animal_is_missed_not_an_error():
    a, b = animal(50, 60), animal(140, 60)
    image = "labeled-data/v1/img000.png"
    labels = labels_table({image: {"a1": a, "a2": b}})
    # one prediction on a1; a2 is missed; a far-off prediction is a false positive
    preds = preds_table({image: np.stack([with_scores(a + 1.0), with_scores(a * 0 + [[5, 140]] * 1,
                                                                            0.1)])})
    errors = M.compute_errors(labels, preds, split_table([image]))
    st = M.stratified_table(errors)
    row = st[(st[M.STRATUM_TYPE] == S.INDIVIDUAL) & (st[M.STRATUM] == "a2")].iloc[0]
    assert row[M.N] == 0 and row["n_labeled"] == 3 and np.isnan(row["mean_px"])
    ident = MA.identity_table(errors, MA.match_predictions(labels, preds)).iloc[0]
    assert (ident["n_matched"], ident["n_missed"], ident["n_false_positive"]) == (1, 1, 1)


def test_keypoint_outside_the_image_is_not_visible_as_in_dlc():
    image = "labeled-data/v1/img000.png"
    xy = animal(100, 60)
    xy[0] = [W + 3.0, 60.0]
    labels = labels_table({image: {"a1": xy, "a2": animal(40, 100)}})
    arr = MA.pose_arrays(labels, preds_table({image: with_scores(xy)[None]}), [image])
    assert arr["gt"][image][0, :, 2].tolist() == [0.0, 2.0, 2.0]
    errors = M.compute_errors(labels, preds_table({image: with_scores(xy)[None]}),
                              split_table([image]))
    nose = errors[(errors[S.INDIVIDUAL] == "a1") & (errors[S.BODYPART] == "nose")].iloc[0]
    assert not nose[S.LABELED] and np.isnan(nose[S.ERROR_PX])


def test_single_animal_errors_table_unchanged_by_multi_animal_columns():
    image = "labeled-data/v1/img000.png"
    labels = labels_table({image: {"a1": animal(50, 60)}}).drop(columns=S.INDIVIDUAL)
    preds = labels[[S.IMAGE, S.BODYPART, S.X, S.Y]].assign(**{S.LIKELIHOOD: 0.9})
    errors = M.compute_errors(labels, preds, split_table([image]))
    assert S.INDIVIDUAL not in errors.columns and S.ANIMALS_IN_FRAME not in errors.columns
    st = M.stratified_table(errors)
    assert not set(st[M.STRATUM_TYPE]) & {S.INDIVIDUAL, S.ANIMALS_IN_FRAME}
    assert "n_labeled" not in st.columns
