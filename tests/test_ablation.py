"""Issue 24 item 2: the augmentation ablation. Pure: the results table recomputed independently
from constructed arms' errors tables (known effects), the recommendation line, the params checks.
Slow: `dvc repro` of pipelines/ablation/dvc.yaml on the small demo in a clone (2 arms x 2 seeds,
1 epoch): a second repro is a no-op, results.csv equals a recomputation from the arms' errors
tables, `dvc exp show` and MLflow list every arm."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poseops.config.ablation import AblationParams
from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError

VIDEOS = {f"v{i}": ("vehicle", "high_dose")[i % 2] for i in range(12)}
BODYPARTS = ["snout", "tailbase"]


def _errors(seed: int, effect: dict[str, float]) -> pd.DataFrame:
    """An errors table: 12 test videos x 4 frames x 2 bodyparts; error = 3 px + noise (per
    seed) + the arm's effect in a condition."""
    rng = np.random.default_rng(seed)
    rows = []
    for video, cond in VIDEOS.items():
        for f in range(4):
            for bp in BODYPARTS:
                rows.append({"image": f"labeled-data/{video}/img{f:04d}.png", "split": "test",
                             "bodypart": bp, "video": video, "condition": cond,
                             "error_px": 3.0 + rng.gamma(2.0, 0.5) + effect.get(cond, 0.0),
                             "likelihood": 0.9})
    df = pd.DataFrame(rows)
    train = df.iloc[:4].assign(split="train", error_px=0.1)  # other splits are ignored
    return pd.concat([df, train.assign(image=train["image"] + "x")], ignore_index=True)


def _runs() -> dict[tuple[str, int], pd.DataFrame]:
    return {("current", 0): _errors(0, {}), ("current", 1): _errors(1, {}),
            ("occlusion", 0): _errors(10, {"high_dose": -1.5}),
            ("occlusion", 1): _errors(11, {"high_dose": -1.5})}


P = AblationParams(arms={"current": {}, "occlusion": {"covering": 0.5}}, seeds=[0, 1],
                   min_units=5, n_boot=500)


def test_results_table_equals_an_independent_recomputation() -> None:
    from poseops.refine.ablation import results_table

    runs = _runs()
    res = results_table(runs, P).set_index(["arm", "condition", "bodypart"])
    assert len(res) == 2 * 3 * 3  # arms x (all + 2 conditions) x (all + 2 bodyparts)
    for cond in ("all", "vehicle", "high_dose"):
        for bp in ("all", *BODYPARTS):
            def cell(df: pd.DataFrame, cond=cond, bp=bp) -> pd.DataFrame:
                t = df[df["split"] == "test"]
                if cond != "all":
                    t = t[t["condition"] == cond]
                return t if bp == "all" else t[t["bodypart"] == bp]

            per_seed = {a: [cell(runs[(a, s)])["error_px"].mean() for s in (0, 1)]
                        for a in ("current", "occlusion")}
            row = res.loc[("occlusion", cond, bp)]
            assert row["mean_px"] == pytest.approx(np.mean(per_seed["occlusion"]))
            assert row["seed_sd_px"] == pytest.approx(np.std(per_seed["occlusion"], ddof=1))
            assert row["baseline_mean_px"] == pytest.approx(np.mean(per_seed["current"]))
            # paired on the seed-averaged errors, per frame then per video
            avg = {a: (cell(runs[(a, 0)]).set_index(["image", "bodypart"])["error_px"]
                       + cell(runs[(a, 1)]).set_index(["image", "bodypart"])["error_px"]) / 2
                   for a in ("current", "occlusion")}
            diff = (avg["occlusion"] - avg["current"]).rename("d").reset_index()
            assert row["delta_mean_px"] == pytest.approx(diff["d"].mean())
            per_frame = diff.groupby("image")["d"].mean()
            assert row["median_diff_px"] == pytest.approx(per_frame.median())
            per_video = per_frame.groupby(per_frame.index.str.split("/").str[1]).mean()
            assert row["n_units"] == len(per_video) and row["n_frames"] == len(per_frame)
            assert row["p_value"] == pytest.approx(stats.wilcoxon(per_video.to_numpy()).pvalue)
            assert row["ci_low_px"] <= row["median_diff_px"] <= row["ci_high_px"]
    base = res.loc[("current", "all", "all")]
    assert base["reason"] == "baseline" and np.isnan(base["p_value"])


def test_recommendation_names_the_arm_condition_and_ci() -> None:
    from poseops.refine.ablation import recommendation, results_table

    # the same noise in both arms: vehicle unchanged, high_dose 1.5 px better in every frame
    same = {("current", 0): _errors(0, {}), ("current", 1): _errors(1, {}),
            ("occlusion", 0): _errors(0, {"high_dose": -1.5}),
            ("occlusion", 1): _errors(1, {"high_dose": -1.5})}
    res = results_table(same, P)
    line = recommendation(res, P)
    hd = res[(res["arm"] == "occlusion") & (res["condition"] == "high_dose")
             & (res["bodypart"] == "all")].iloc[0]
    assert line.startswith("occlusion helps high_dose by ")
    assert f"{hd['median_diff_px']:+.2f} px [{hd['ci_low_px']:+.2f}, {hd['ci_high_px']:+.2f}]" in line
    assert "vehicle" not in line and line.endswith("vs current, no harm elsewhere")
    assert hd["median_diff_px"] == pytest.approx(-1.5) and hd["ci_high_px"] == pytest.approx(-1.5)
    # an arm that hurts vehicle is not recommended
    runs = {**same, ("occlusion", 0): _errors(0, {"high_dose": -1.5, "vehicle": 2.0}),
            ("occlusion", 1): _errors(1, {"high_dose": -1.5, "vehicle": 2.0})}
    res = results_table(runs, P)
    line = recommendation(res, P)
    assert line.startswith("keep current:")
    # the trade-off is spelled out: what the arm buys and what it costs, with their CIs
    veh = res[(res["arm"] == "occlusion") & (res["condition"] == "vehicle")
              & (res["bodypart"] == "all")].iloc[0]
    assert veh["ci_low_px"] > 0
    assert line.endswith(f"; occlusion helps high_dose by {_fmt_px(res, 'high_dose')} but raises "
                         f"vehicle by {_fmt_px(res, 'vehicle')}")


def _fmt_px(res: pd.DataFrame, cond: str) -> str:
    r = res[(res["arm"] == "occlusion") & (res["condition"] == cond) & (res["bodypart"] == "all")
            & (res["split"] == "test")].iloc[0]
    return f"{r['median_diff_px']:+.2f} px [{r['ci_low_px']:+.2f}, {r['ci_high_px']:+.2f}]"


def _cohort(seed: int, effect: float) -> pd.DataFrame:
    """A held-out cohort's errors (split ``cohort:new_condition``): 6 videos of a condition
    never trained on, 4 frames x 2 bodyparts, 6 px + noise + the arm's effect."""
    rng = np.random.default_rng(100 + seed)
    rows = [{"image": f"labeled-data/c{v}/img{f:04d}.png", "split": "cohort:new_condition",
             "bodypart": bp, "video": f"c{v}", "condition": "cluttered",
             "error_px": 6.0 + rng.gamma(2.0, 0.5) + effect, "likelihood": 0.8}
            for v in range(6) for f in range(4) for bp in BODYPARTS]
    return pd.DataFrame(rows)


def test_cohorts_are_evaluated_beside_the_test_set() -> None:
    """split.cohorts in the arms' errors tables: rows per cohort (recomputed by hand), the
    recommendation names the cohort, and ``ablation.cohorts: false`` leaves them out."""
    import dataclasses

    from poseops.refine.ablation import recommendation, results_table

    runs = {(a, s): pd.concat([_errors(s, {}), _cohort(s, -2.0 if a == "occlusion" else 0.0)],
                              ignore_index=True)
            for a in ("current", "occlusion") for s in (0, 1)}
    res = results_table(runs, P)
    assert list(dict.fromkeys(res["split"])) == ["test", "cohort:new_condition"]
    co = res[res["split"] == "cohort:new_condition"].set_index(["arm", "condition", "bodypart"])
    assert sorted(set(co.index.get_level_values("condition"))) == ["all", "cluttered"]
    row = co.loc[("occlusion", "cluttered", "all")]
    per_seed = [runs[("occlusion", s)].query("split == 'cohort:new_condition'")["error_px"].mean()
                for s in (0, 1)]
    assert row["mean_px"] == pytest.approx(np.mean(per_seed))
    assert row["median_diff_px"] == pytest.approx(-2.0) and row["ci_high_px"] == pytest.approx(-2.0)
    assert row["n_units"] == 6 and row["n_frames"] == 24
    # the test rows are those of the same runs without the cohort
    plain = results_table({k: v[v["split"] == "test"] for k, v in runs.items()}, P)
    test = res[res["split"] == "test"].reset_index(drop=True)
    pd.testing.assert_frame_equal(test, plain)
    line = recommendation(res, P)
    assert line.startswith("occlusion helps cluttered (new_condition cohort) by -2.00 px")
    assert line.endswith("vs current, no harm elsewhere")
    off = dataclasses.replace(P, cohorts=False)
    assert set(results_table(runs, off)["split"]) == {"test"}


def test_seed_spread_of_headline_numbers() -> None:
    from poseops.refine.ablation import seed_spread

    heads = {("a", 0): {"mean_px": 2.0, "rmse_px": 3.0}, ("a", 1): {"mean_px": 4.0, "rmse_px": 3.5},
             ("a", 2): {"mean_px": 3.0, "rmse_px": 2.5, "note": "x"}}
    s = seed_spread(heads).set_index(["arm", "metric"])
    assert s.loc[("a", "mean_px"), "sd"] == pytest.approx(1.0)
    assert s.loc[("a", "rmse_px"), "range"] == pytest.approx(1.0)
    assert s.loc[("a", "mean_px"), "n_seeds"] == 3 and ("a", "note") not in s.index


def test_ablation_params_are_checked() -> None:
    from poseops.refine.ablation_run import arm_params

    with pytest.raises(PoseopsError, match="baseline"):
        AblationParams(arms={"a": {}}, baseline="b")
    with pytest.raises(PoseopsError, match="letters"):
        AblationParams(arms={"a-b": {}}, baseline="a-b")
    with pytest.raises(PoseopsError, match="seeds"):
        AblationParams(arms={"a": {}}, baseline="a", seeds=[1, 1])
    p = AblationParams(arms={"a": {"coverng": 0.5}}, baseline="a", train={"epochs": 3})
    with pytest.raises(PoseopsError, match="covering"):  # the closest train: key
        arm_params(TrainParams(), p, "a", 0)
    p = AblationParams(arms={"a": {"covering": 0.5}}, baseline="a", train={"epochs": 3})
    t = arm_params(TrainParams(), p, "a", 7)
    assert (t.covering, t.epochs, t.seed, t.registered_model) == (0.5, 3, 7, None)
    assert t.workdir == str(Path("data/ablation/runs/a-7"))


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_ablation_pipeline_end_to_end(tmp_path: Path) -> None:
    import subprocess

    from mlflow import MlflowClient
    from support.e2e import clone_repo, sh, user_env

    from poseops.config.loader import update_params
    from poseops.refine.ablation import results_table

    env = user_env()
    repo = clone_repo(tmp_path / "clone", env)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    update_params({
        "demo": {"animals": 4, "sessions": 3, "frames_per_video": 30, "labeled_per_video": 6},
        "split": {"stratify_by": None, "test_fraction": 0.25, "val_fraction": 0.2,
                  "cohorts": {"new_session": {"session": "s3"}}},
        "train": {"epochs": 1, "save_epochs": 1},
        "ablation": {"arms": {"current": {}, "all": {"covering": 0.5, "covering_holes": 3, "brightness": 0.3,
                                                     "gamma": 0.3, "grayscale": True,
                                                     "elastic": True},
                              "bedding": {"covering": 0.5, "covering_holes": 2,
                                          "covering_fill": "floor", "covering_place": "keypoints",
                                          "covering_labels": "keep"}},
                     "seeds": [0, 1], "n_boot": 200, "min_units": 2},
    }, repo / "params.yaml")
    sh(["poseops", "demo"], repo, env)
    sh(["poseops", "init", "data/raw/demo", "--in-place", "--keep-metadata"], repo, env)
    log = sh(["dvc", "repro", "pipelines/ablation/dvc.yaml"], repo, env)
    for stage in ("arm@current-0", "arm@current-1", "arm@all-0", "arm@all-1", "arm@bedding-0",
                  "arm@bedding-1", "results"):
        assert re.search(rf"Running stage '(pipelines/ablation/dvc.yaml:)?{stage}'", log), stage
    again = sh(["dvc", "repro", "pipelines/ablation/dvc.yaml"], repo, env)
    assert "Running stage" not in again
    # the "all" arm trained with DLC's covering (our patch settings) and the lighting transforms
    txt = (repo / "data/ablation/runs/all-0").rglob("train.txt")
    txt = next(txt).read_text()
    assert "RandomGamma" in txt and "RandomBrightnessContrast" in txt and "Grayscale" in txt
    assert "CoarseDropout" in txt and "max_holes=3" in txt and "ElasticTransform" in txt
    # the "bedding" arm trained with poseops' Covering: floor fill, on keypoints, labels kept
    txt = next((repo / "data/ablation/runs/bedding-0").rglob("train.txt")).read_text()
    line = next(t for t in txt.splitlines() if "Covering(" in t)
    assert "max_holes=2," in line and "fill='floor', place='keypoints', labels='keep'" in line
    assert "CoarseDropout" not in txt
    # results.csv = a recomputation from the arms' errors tables
    p = AblationParams(arms={"current": {}, "all": {}, "bedding": {}}, seeds=[0, 1], n_boot=200,
                       min_units=2)
    runs = {(a, s): pd.read_parquet(repo / f"data/ablation/runs/{a}-{s}/eval/errors.parquet")
            for a in ("current", "all", "bedding") for s in (0, 1)}
    got = pd.read_csv(repo / "reports/ablation/results.csv", keep_default_na=False,
                      na_values=[""])
    want = results_table(runs, p)
    cols = ["mean_px", "seed_sd_px", "delta_mean_px", "median_diff_px", "p_value"]
    np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float), rtol=1e-9,
                               equal_nan=True)
    split = pd.read_csv(repo / "data/processed/split.csv")
    held = sorted(split.loc[split["split"] == "cohort:new_session", "image"])
    assert held and all(i.split("/")[1].endswith("-s3") for i in held)
    for t in runs.values():  # every arm saw the same fixed test set and the whole cohort
        test = sorted(set(t.loc[t["split"] == "test", "image"]))
        assert test == sorted(set(runs[("current", 0)].query("split == 'test'")["image"]))
        assert sorted(set(t.loc[t["split"] == "cohort:new_session", "image"])) == held
    assert set(got["split"]) == {"test", "cohort:new_session"}
    summary = json.loads((repo / "reports/ablation/summary.json").read_text())
    assert summary["recommendation"] and set(summary["arms"]) == {"current", "all", "bedding"}
    assert (repo / "reports/ablation/ablation.png").stat().st_size > 1000
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                           text=True, check=True).stdout
    for run in ("current-0", "current-1", "all-0", "all-1", "bedding-0", "bedding-1"):
        assert f"data/ablation/metrics/{run}.json" in shown
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("poseops")
    found = client.search_runs([exp.experiment_id])
    parents = [r for r in found if r.data.tags.get("poseops.ablation_role") == "parent"]
    arms = [r for r in found if r.data.tags.get("poseops.ablation_role") == "arm"]
    assert len(parents) == 1
    assert sorted((r.data.tags["ablation_arm"], r.data.tags["ablation_seed"]) for r in arms) == [
        ("all", "0"), ("all", "1"), ("bedding", "0"), ("bedding", "1"), ("current", "0"),
        ("current", "1")]
    assert {r.data.tags.get("mlflow.parentRunId") for r in arms} == {parents[0].info.run_id}
    assert all("test.mean_px" in r.data.metrics for r in arms)
    assert all("cohort:new_session.mean_px" in r.data.metrics for r in arms)


def test_demo_clutter_occludes_one_condition_only(small_demo_root: Path, tmp_path: Path) -> None:
    """``demo.clutter``: extra bedding patches on the animal in one condition's videos (their
    pixels change), the other videos and every label byte-identical to the default demo."""
    from poseops.config.demo import DemoParams
    from poseops.demo.project import generate_demo

    out = tmp_path / "demo"
    generate_demo(out, DemoParams.small(clutter={"high_dose": 3}), metadata=tmp_path / "videos.csv")
    base = small_demo_root / "raw" / "demo"
    meta = pd.read_csv(tmp_path / "videos.csv").set_index("video")["condition"]
    changed = {c: 0 for c in meta.unique()}
    pngs = sorted(base.glob("labeled-data/*/*.png"))
    assert pngs
    for png in pngs:
        rel = png.relative_to(base)
        same = png.read_bytes() == (out / rel).read_bytes()
        changed[meta[rel.parts[1]]] += not same
    n_hd = sum(meta[p.parent.name] == "high_dose" for p in pngs)
    assert changed["high_dose"] == n_hd and sum(changed.values()) == n_hd
    for h5 in base.glob("labeled-data/*/CollectedData_*.csv"):  # labels untouched
        assert h5.read_bytes() == (out / h5.relative_to(base)).read_bytes()
    manifest = json.loads((out / "demo_manifest.json").read_text())
    assert manifest["params"]["clutter"] == {"high_dose": 3}
    assert "clutter" not in json.loads((base / "demo_manifest.json").read_text())["params"]
    with pytest.raises(PoseopsError, match="clutter"):
        DemoParams.small(clutter={"nope": 1}).check()


def test_single_arm_is_a_seed_ensemble_with_disagreement_and_figure(tmp_path: Path) -> None:
    """One arm x 2 seeds: baseline rows only, the recommendation says so, and the ensemble's
    disagreement is the known spread of the constructed predictions (x 2 px apart: sd 1 px)."""
    from poseops.refine.ablation import disagreement_table, figure, recommendation, results_table

    p = AblationParams(arms={"current": {}}, seeds=[0, 1], n_boot=100)
    errors = {("current", 0): _errors(0, {}), ("current", 1): _errors(1, {})}
    preds = {k: e[["image", "bodypart"]].assign(x=10.0 + 2 * k[1], y=5.0, likelihood=0.9)
             for k, e in errors.items()}
    res = results_table(errors, p)
    assert set(res["arm"]) == {"current"} and recommendation(res, p).startswith("only the baseline")
    dis = disagreement_table(preds, errors, p).set_index("condition")
    assert dis.loc["all", "mean_sd_px"] == pytest.approx(1.0)
    assert dis.loc["all", "n_keypoints"] == len(VIDEOS) * 4 * len(BODYPARTS)  # test rows only
    assert figure(res, p, tmp_path / "a.png").stat().st_size > 0


@pytest.mark.parametrize("files", [["ablation-occlusion.yaml"],
                                   ["ablation-occlusion.yaml", "ablation-occlusion-loo.yaml"]])
def test_documented_ablation_recipes_are_valid_params(files: list[str], tmp_path: Path) -> None:
    """The recipes behind the README's measured table merge into params.yaml and load as typed,
    checked sections: every arm's train params, the demo, the split (with its cohort)."""
    import shutil

    import yaml

    from poseops.config.loader import update_params
    from poseops.config.pipeline import PipelineParams
    from poseops.refine.ablation_run import arm_params

    root = Path(__file__).resolve().parents[1]
    params = tmp_path / "params.yaml"
    shutil.copy(root / "params.yaml", params)
    for name in files:
        update_params(yaml.safe_load((root / "docs" / "examples" / name).read_text()), params)
    cfg = PipelineParams.load(params)
    cfg.demo.check()
    assert cfg.demo.clutter == {"high_dose": 3}
    for arm in cfg.ablation.arms:
        for seed in cfg.ablation.seeds:
            arm_params(cfg.train, cfg.ablation, arm, seed)
    bedding = arm_params(cfg.train, cfg.ablation, "bedding", 0)
    assert (bedding.covering_fill, bedding.covering_place, bedding.covering_labels) == (
        "floor", "keypoints", "keep")
    if len(files) == 1:
        assert cfg.split.cohorts == {"new_condition": {"condition": "high_dose"}}
    else:
        assert cfg.split.mode == "leave-one-out" and not cfg.split.cohorts
