"""Issue 24 item 3: `poseops compare` judges the candidate's gain against the baseline config's
seed-to-seed SD (from an ablation / seed-ensemble run of the baseline), checked against a hand
computation: each seed's true test RMSE recomputed from its errors table, numpy std (ddof 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.tables import compare_errors

from poseops.cli import main

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "expectations" / "compare.json"
SCALE = {0: 1.0, 1: 1.12, 2: 0.93}  # seeds of the baseline config differ by these factors


def _seed_errors(seed: int) -> pd.DataFrame:
    """Seed ``seed``'s errors on the fixed test set (same images for every seed)."""
    e = compare_errors(100 + seed, {}, 40, 8)
    return e.assign(error_px=e["error_px"] * SCALE[seed])


def _rmse(df: pd.DataFrame) -> float:
    e = df.loc[df["split"] == "test", "error_px"].to_numpy(float)
    return float(np.sqrt(np.mean(e**2)))


def _seed_runs(root: Path) -> tuple[list[pd.DataFrame], str]:
    """Per-seed errors tables in the ablation's layout; returns them and their glob."""
    tables = []
    for seed in SCALE:
        t = _seed_errors(seed)
        f = root / "runs" / f"current-{seed}" / "eval" / "errors.parquet"
        f.parent.mkdir(parents=True)
        t.to_parquet(f)
        tables.append(t)
    return tables, str(root / "runs" / "current-*" / "eval" / "errors.parquet")


def _argv(tmp_path: Path, base: pd.DataFrame, cand: pd.DataFrame, **compare: object) -> list[str]:
    base.to_parquet(tmp_path / "base.parquet")
    cand.to_parquet(tmp_path / "cand.parquet")
    section = {"n_boot": 100, "log_mlflow": False, "suite": str(SUITE), "gate": False,
               "out": str(tmp_path / "cmp"), "train_workdir": str(tmp_path / "no-train"),
               "history": str(tmp_path / "iterations.csv"),
               "merge_report": str(tmp_path / "merge.json"), **compare}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": section}))
    return ["compare", str(tmp_path / "base.parquet"), str(tmp_path / "cand.parquet"),
            "--params", str(tmp_path / "params.yaml")]


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "cmp" / "summary.json").read_text())


def test_gain_against_seed_sd_from_per_seed_errors_tables(tmp_path, mlflow_uri):
    """--seed-spread with a glob of per-seed errors tables: the SD is numpy's ddof-1 SD of the
    seeds' RMSEs; the gain (baseline - candidate RMSE) / SD goes to summary.json,
    seed_spread.csv and the MLflow compare run; a small gain reads 'within seed-to-seed noise'."""
    import mlflow

    seeds, pattern = _seed_runs(tmp_path)
    base = seeds[0]
    cand = base.assign(error_px=base["error_px"] * 0.98)
    per_seed = [_rmse(t) for t in seeds]
    sd = float(np.std(per_seed, ddof=1))
    gain = _rmse(base) - _rmse(cand)
    assert 0 < gain < sd  # the construction: a real but small gain
    assert main([*_argv(tmp_path, base, cand, log_mlflow=True), "--seed-spread", pattern]) == 0
    s = _summary(tmp_path)
    assert s["seed_sd_px"] == pytest.approx(sd) and s["seed_n"] == 3
    assert s["gain_px"] == pytest.approx(gain)
    assert s["gain_seed_sd"] == pytest.approx(gain / sd)
    assert s["seed_noise"] == "within"
    assert s["seed_verdict"].startswith(f"gain {gain:.2f} px is within seed-to-seed noise "
                                        f"(SD {sd:.2f} px over 3 seeds")
    assert sorted(r["rmse_px"] for r in s["seed_spread"]["per_seed"]) == pytest.approx(
        sorted(per_seed))
    row = pd.read_csv(tmp_path / "cmp" / "seed_spread.csv").iloc[0]
    assert row["seed_sd_px"] == pytest.approx(sd) and row["gain_seed_sd"] == pytest.approx(gain / sd)
    runs = mlflow.search_runs(search_all_experiments=True,
                              filter_string="tags.`poseops.stage` = 'compare'")
    assert len(runs) == 1
    assert runs["metrics.gain_seed_sd"].iloc[0] == pytest.approx(gain / sd)
    assert runs["metrics.seed_sd_px"].iloc[0] == pytest.approx(sd)


def test_seed_sd_from_the_ablation_reports_folder(tmp_path, mlflow_uri):
    """The user's flow: `poseops ablation results` over the arms' runs writes reports/ablation;
    `compare.seed_spread: reports/ablation` takes the baseline arm's SD of test RMSE (its
    spread.csv), or another arm's with seed_spread_arm; a large gain is 'beyond' the noise."""
    seeds, _ = _seed_runs(tmp_path / "abl")
    occl = {s: _seed_errors(s).assign(error_px=lambda d, s=s: d["error_px"] * (0.8 + 0.2 * s))
            for s in SCALE}
    for s, t in occl.items():
        f = tmp_path / "abl" / "runs" / f"occlusion-{s}" / "eval" / "errors.parquet"
        f.parent.mkdir(parents=True)
        t.to_parquet(f)
    for arm, tables in (("current", dict(enumerate(seeds))), ("occlusion", occl)):
        for s, t in tables.items():
            ev = tmp_path / "abl" / "runs" / f"{arm}-{s}" / "eval"
            t[["image", "bodypart"]].assign(x=1.0 + s, y=2.0, likelihood=0.9).to_parquet(
                ev / "predictions.parquet")
            (ev / "headline.json").write_text(json.dumps({"rmse_px": _rmse(t), "n": len(t)}))
    ablation = {"arms": {"current": {}, "occlusion": {"covering": 0.5}}, "seeds": list(SCALE),
                "out": str(tmp_path / "abl"), "reports": str(tmp_path / "reports"), "n_boot": 50,
                "experiment": "tests"}
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump({"ablation": ablation}))
    assert main(["ablation", "--params", str(tmp_path / "abl.yaml"), "results"]) == 0

    base = seeds[0]
    cand = base.assign(error_px=base["error_px"] * 0.7)
    gain = _rmse(base) - _rmse(cand)
    sd = float(np.std([_rmse(t) for t in seeds], ddof=1))
    assert gain > 2 * sd
    argv = _argv(tmp_path, base, cand, seed_spread=str(tmp_path / "reports"))
    assert main(argv) == 0
    s = _summary(tmp_path)
    assert s["seed_spread"]["arm"] == "current" and s["seed_n"] == 3
    assert s["seed_sd_px"] == pytest.approx(sd)
    assert s["gain_seed_sd"] == pytest.approx(gain / sd) and s["seed_noise"] == "beyond"
    assert "is beyond seed-to-seed noise" in s["seed_verdict"]
    occl_sd = float(np.std([_rmse(t) for t in occl.values()], ddof=1))
    assert main(_argv(tmp_path, base, cand, seed_spread=str(tmp_path / "reports"),
                      seed_spread_arm="occlusion")) == 0
    assert _summary(tmp_path)["seed_sd_px"] == pytest.approx(occl_sd)


def test_gate_rule_min_gain_in_seed_sds(tmp_path, capsys):
    """compare.min_gain_seed_sd: 1.0 in the gate: a gain below one seed SD fails (exit 2, one
    line naming the rule), a larger one passes; off (null, the default) the check is skipped."""
    seeds, pattern = _seed_runs(tmp_path)
    base = seeds[0]
    sd = float(np.std([_rmse(t) for t in seeds], ddof=1))
    small = base.assign(error_px=base["error_px"] * 0.98)
    rule = {"gate": True, "seed_spread": pattern, "min_gain_seed_sd": 1.0}
    assert main(_argv(tmp_path, base, small, **rule)) == 2
    err = capsys.readouterr().err.strip()
    ratio = (_rmse(base) - _rmse(small)) / sd
    assert len(err.splitlines()) == 1 and "compare gate failed" in err
    assert f"= {ratio:+.2f} x the baseline's seed-to-seed SD ({sd:.2f} px over 3 seeds)" in err
    assert "compare.min_gain_seed_sd 1" in err
    gate = json.loads((tmp_path / "cmp" / "gate.json").read_text())
    assert gate["failed"] == ["gain_beyond_seed_noise"] and gate["gain_seed_sd"] == pytest.approx(ratio)

    big = base.assign(error_px=base["error_px"] * 0.7)
    assert main(_argv(tmp_path, base, big, **rule)) == 0
    assert json.loads((tmp_path / "cmp" / "gate.json").read_text())["passed"] is True

    assert main(_argv(tmp_path, base, small, gate=True, seed_spread=pattern)) == 0  # rule off
    checks = json.loads((tmp_path / "cmp" / "gate.json").read_text())["checks"]
    seed_check = [c for c in checks if c["name"] == "gain_beyond_seed_noise"]
    assert len(seed_check) == 1 and seed_check[0]["success"] is None


def test_seed_spread_user_errors_are_one_line(tmp_path, capsys):
    seeds, pattern = _seed_runs(tmp_path)
    base = seeds[0]
    cases = [
        ({"gate": True, "min_gain_seed_sd": 1.0}, "min_gain_seed_sd is set but seed_spread is not"),
        ({"seed_spread": str(tmp_path / "none-*.parquet")}, "no errors table matches"),
        ({"seed_spread": pattern.replace("current-*", "current-0")}, "needs >= 2 seeds"),
        ({"seed_spread": str(tmp_path / "missing")}, "compare.seed_spread: no such file"),
    ]
    for section, message in cases:
        assert main(_argv(tmp_path, base, base, **section)) == 2, message
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    spread = tmp_path / "spread.csv"  # an ablation spread.csv with two arms, no summary beside
    pd.DataFrame({"arm": ["a", "b"], "metric": "rmse_px", "n_seeds": 3, "mean": 4.0,
                  "sd": [0.5, 0.7]}).to_csv(spread, index=False)
    assert main(_argv(tmp_path, base, base, seed_spread=str(spread))) == 2
    err = capsys.readouterr().err
    assert "compare.seed_spread_arm: no arm given" in err and "['a', 'b']" in err and "spread.csv" in err
