"""behaviour (issue 23, done means) with a REAL model against the demo's truth: cspnext_s trained
on the small demo until it has learned (24 epochs: the session's shared ``small_demo_model``, also
iteration 0 of test_refinement_rounds.py) analyzes
whole videos it has never seen; the behaviour stage (DLC's median filter, endpoints, agreement,
effects) is run with the true centroid of every frame as the "manual" scoring. Its distance
travelled must agree with the truth (ICC(2,1) above a bound derived from the model's pixel error
on its labeled test frames) and its dose effect on speed must have the true sign and lie within the
truth's bootstrap CI. The same checks on a model trained for 1 epoch fail: they can fail.

Why a second demo for the analysis (what is defensible on a tiny CPU model):
- Videos per condition: the small demo has 2 (Hedges' g with 2 + 2 videos has 2 degrees of
  freedom and a bootstrap over 2 videos per group repeats one video half the time: no meaningful
  CI). The analyzed demo is ``DemoParams.small`` with 4 animals x 3 sessions: 12 videos of 30
  frames at 160x120, 4 per condition, another seed (every analyzed video is new to the model).
- Speed: at the demo's speeds (0.6 / 1.0 / 1.6 px per frame) this model (centroid error ~4-6 px,
  jitter ~2-3.5 px after DLC's median filter) cannot measure distance: measured on the
  same 12 videos, distance ICC(2,1) 0.14 and both dose effects on speed with the WRONG sign (the
  stage's verdict rightly says "not valid"): the animal moves less per frame than the model's
  error changes. The analyzed demo's animals walk 3x faster (1.8 / 3.0 / 4.8 px per frame; the
  rendering does not depend on speed, so the trained model's images look the same).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseops.config.demo import BODYPARTS, DemoParams

EPOCHS = 24  # test_refinement_rounds.py: seed 42, batch 4, no pixel noise / motion blur: ~6 px
ANALYZED = DemoParams.small(seed=11, animals=4, unlabeled_videos=0, speeds=[1.8, 3.0, 4.8])
N_SIM = 400  # Monte Carlo replicates of the ICC bound


def _centroid_errors(tr, labels: pd.DataFrame, split: pd.DataFrame) -> np.ndarray:
    """Per labeled test frame: distance (px) between the predicted and the labeled centroid of the
    four bodyparts (the stage's reference point), frames with all four labeled."""
    from poseops.dlc.inference import predict

    test = sorted(split.loc[split.split == "test", "image"])
    pred = predict(tr.pytorch_config_path, tr.snapshot, tr.config_path.parent, test, device="cpu")
    lab = labels[labels.image.isin(test) & labels.bodypart.isin(BODYPARTS)].dropna(subset=["x"])
    full = lab.groupby("image").bodypart.nunique() == len(BODYPARTS)
    keep = full[full].index
    c_lab = lab[lab.image.isin(keep)].groupby("image")[["x", "y"]].mean()
    c_pred = pred[pred.image.isin(keep)].groupby("image")[["x", "y"]].mean().loc[c_lab.index]
    return np.hypot(*(c_pred - c_lab).to_numpy().T)


def _truth_centroid(project: Path) -> pd.DataFrame:
    t = pd.read_csv(project / "ground_truth_tracks.csv")
    t = t[t.bodypart.isin(BODYPARTS)]
    return t.groupby(["video", "frame"], sort=True)[["x", "y"]].mean().reset_index()


def _icc21(a: np.ndarray, b: np.ndarray) -> float:
    """ICC(2,1) (Shrout & Fleiss; two-way random, absolute agreement) of two raters, in numpy."""
    y = np.stack([a, b], axis=1)
    n, k = y.shape
    gm = y.mean()
    msr = k * ((y.mean(axis=1) - gm) ** 2).sum() / (n - 1)
    msc = n * ((y.mean(axis=0) - gm) ** 2).sum() / (k - 1)
    mse = ((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0) + gm) ** 2).sum() / ((n - 1) * (k - 1))
    return float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n))


def _distance(xy: np.ndarray) -> float:
    return float(np.hypot(*np.diff(xy, axis=0).T).sum())


def error_sd_upper(errors_px: np.ndarray, level: float = 0.95) -> float:
    """Upper ``level`` confidence bound of the per-coordinate error sd, from 2D centroid errors
    of n frames: sum(dx^2 + dy^2) / sd^2 ~ chi^2 with 2n degrees of freedom (zero-mean errors)."""
    from scipy.stats import chi2

    return float(np.sqrt((errors_px ** 2).sum() / chi2.ppf(1 - level, 2 * len(errors_px))))


def icc_bound(truth: pd.DataFrame, sd_px: float, window: int, seed: int = 0) -> float:
    """The ICC(2,1) of distance travelled that a model with centroid error sd ``sd_px`` per
    coordinate must reach: the 5th percentile, over N_SIM replicates, of ICC(2,1) between the
    true distance of each analyzed video and the distance of its true centroid track + independent
    N(0, sd_px^2) per coordinate and frame, median-filtered (scipy's medfilt, what DLC's median
    filter runs; here on the centroid, DLC's on each bodypart).

    Why independent errors: distance is a sum of frame-to-frame steps, so what matters is how the
    position error changes from frame to frame. The labeled test frames are far apart in time and
    give the error's size, not its time course; for a given size, errors independent from frame
    to frame are the worst case (every error goes into two steps; an error shared by consecutive
    frames, as a network's errors on similar images are, cancels in the step)."""
    from scipy.signal import medfilt

    rng = np.random.default_rng(seed)
    groups = [g[["x", "y"]].to_numpy() for _, g in truth.groupby("video", sort=True)]
    true_d = np.array([_distance(xy) for xy in groups])
    iccs = []
    for _ in range(N_SIM):
        noisy = []
        for xy in groups:
            z = xy + rng.normal(0.0, sd_px, xy.shape)
            noisy.append(_distance(np.stack([medfilt(z[:, j], window) for j in range(2)], 1)))
        iccs.append(_icc21(true_d, np.array(noisy)))
    return float(np.percentile(iccs, 5))


@dataclasses.dataclass
class Outcome:
    test_errors_px: np.ndarray  # centroid errors on the labeled test frames of the small demo
    agreement: pd.DataFrame  # agreement.csv (model at every frame vs the truth at every frame)
    effects: pd.DataFrame  # effects.csv
    behaviour: pd.DataFrame  # behaviour.csv


def _behaviour(tr, root: Path, name: str, project: Path, meta: Path, truth_csv: Path,
               arena: Path) -> pd.DataFrame:
    from poseops.cli import main
    from poseops.config.refine import AnalyzeParams
    from poseops.refine.analyze import analyze_videos

    analyzed = root / name / "analyze"
    analyze_videos(AnalyzeParams(config=str(tr.config_path), shuffle=tr.shuffle, device="cpu",
                                 out=str(analyzed)), sorted((project / "videos").glob("*.mp4")))
    doc = {"project": {"metadata": str(meta)},
           "analyze": {"config": str(tr.config_path), "shuffle": tr.shuffle,
                       "train_workdir": str(root / "none")},
           "behaviour": {"analyzed": str(analyzed), "filter": "median", "pcutoff": 0.0,
                         "control": "vehicle", "arena": str(arena), "manual": str(truth_csv),
                         "out": str(root / name / "out"), "workdir": str(root / name / "work"),
                         "n_boot": 2000, "log_mlflow": False}}
    params = root / name / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    assert main(["behaviour", "--params", str(params)]) == 0
    return root / name / "out"


@pytest.fixture(scope="module")
def outcomes(demo_src, small_demo_model, tmp_path_factory) -> dict[str, Outcome]:
    """Both models (24 epochs: the shared ``small_demo_model``, read-only; 1 epoch: trained
    here) through analyze + behaviour; truth + arena of the analyzed demo."""
    from support.train import tiny

    from poseops.demo.project import generate_demo
    from poseops.demo.scoring import write_behaviour_inputs
    from poseops.train.trainer import train_model

    root = tmp_path_factory.mktemp("behaviour_model")
    m = small_demo_model
    labels, split = m.labels, m.split  # split by video: test m2-s3, val m2-s2
    uri = f"sqlite:///{root / 'mlflow.db'}"
    p = tiny(epochs=EPOCHS, batch_size=4, save_epochs=EPOCHS, net_type="cspnext_s",
             experiment="behaviour-model", registered_model="behaviour-model", init="random",
             gaussian_noise=0.0, motion_blur=False)
    # the shared model was trained with this recipe (only the MLflow names differ)
    assert m.params == dataclasses.replace(p, experiment=m.params.experiment,
                                           registered_model=m.params.registered_model)
    project = generate_demo(root / "analyzed" / "demo", ANALYZED, metadata=root / "analyzed.csv")
    write_behaviour_inputs(project, ANALYZED, root / "inputs")
    truth = _truth_centroid(project)
    truth.to_csv(root / "truth.csv", index=False)
    out = {}
    for name, params in (("trained", None), ("one_epoch", dataclasses.replace(p, epochs=1,
                                                                               save_epochs=1))):
        tr = m.result if params is None else train_model(
            params, labels, split, demo_src[0], root / name / "train", tracking_uri=uri)
        err = _centroid_errors(tr, labels, split)
        folder = _behaviour(tr, root, name, project, root / "analyzed.csv", root / "truth.csv",
                            root / "inputs" / "arena.csv")
        out[name] = Outcome(err,
                            pd.read_csv(folder / "agreement.csv"),
                            pd.read_csv(folder / "effects.csv"),
                            pd.read_csv(folder / "behaviour.csv"))
    out["truth"] = truth  # type: ignore[assignment]
    return out


def _checks(o: Outcome, bound: float) -> dict[str, bool]:
    """The done-means checks: distance ICC(2,1) > bound; per dose, the model's g on speed has the
    truth's sign and lies in the truth's bootstrap CI."""
    a = o.agreement.set_index("endpoint").loc["distance_cm"]
    e = o.effects[(o.effects.endpoint == "mean_speed_cm_s") & (o.effects.model_frames == "all")]
    assert sorted(e.condition) == ["high_dose", "low_dose"]
    res = {"icc": bool(a["icc2_1"] > bound)}
    for _, r in e.iterrows():
        res[f"sign:{r.condition}"] = bool(np.sign(r.g_model) == np.sign(r.g_manual))
        res[f"ci:{r.condition}"] = bool(r.g_manual_lo <= r.g_model <= r.g_manual_hi)
    return res


@pytest.mark.slow
def test_a_trained_model_measures_distance_and_the_dose_effect_a_one_epoch_model_does_not(
        outcomes) -> None:
    good, bad = outcomes["trained"], outcomes["one_epoch"]
    rms = float(np.sqrt(np.mean(good.test_errors_px ** 2)))
    # the model has learned: its centroid is within a few px on its 6 test frames (the animal is
    # ~20 px long; the 1-epoch model is ~70 px off, a constant guess)
    assert rms < 10.0 < float(np.sqrt(np.mean(bad.test_errors_px ** 2)))
    # The ICC bound from the pixel error: 6 test frames measure the error's sd loosely, and the
    # analyzed videos are new to the model, so the bound is for the upper 95 % confidence bound
    # of the sd (chi-square, 12 degrees of freedom: x1.5), with errors independent from frame to
    # frame (the worst case, see icc_bound), and the 12 videos' sampling (5th percentile).
    sd_hi = error_sd_upper(good.test_errors_px)
    bound = icc_bound(outcomes["truth"], sd_hi, 5)
    assert bound > 0.5, f"the bound ({bound:.2f}, sd <= {sd_hi:.1f} px) checks nothing"
    ok, ko = _checks(good, bound), _checks(bad, bound)
    info = (f"test centroid RMS {rms:.2f} px, sd <= {sd_hi:.2f} px, ICC bound {bound:.3f}: "
            f"trained {ok}, 1 epoch {ko}")
    assert all(ok.values()), info
    # the same checks (the same bound: a bound derived from the 1-epoch model's own ~70 px error
    # would be ~0 and excuse it) on the 1-epoch model fail: the ICC one and the effect one
    assert not ko["icc"], info
    assert not all(v for k, v in ko.items() if k != "icc"), info
