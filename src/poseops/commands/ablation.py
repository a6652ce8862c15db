"""`poseops ablation arm ARM SEED` / `poseops ablation results` (pipelines/ablation/dvc.yaml):
the augmentation ablation (issue 24). Reads params.yaml ``ablation:`` with ``train:``,
``evaluate:`` and the consensus/split/project paths.

``arm``: one DVC matrix stage per arm x seed: trains on the shared split (``train:`` +
``ablation.train`` + the arm's overrides, ``train.seed`` = SEED) into
``<ablation.out>/runs/<arm>-<seed>`` as an MLflow run nested under the ablation's parent run,
evaluates it on the fixed test set and writes ``<ablation.out>/metrics/<arm>-<seed>.json``.
``results``: ``<ablation.reports>/results.csv`` (test error per arm x condition x bodypart, paired
statistics vs the baseline arm), ``spread.csv`` (run-to-run spread of the headline numbers over
seeds), ``disagreement.csv`` (seed-ensemble disagreement), ``ablation.png``, ``summary.json``
(with the recommendation line, also printed and logged to the parent run).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from poseops.config.pipeline import PipelineParams
from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_csv, write_json

log = logging.getLogger(__name__)


def run_arm(arm: str, seed: int, params_file: str | None = None) -> dict[str, Any]:
    """The matrix stage ``arm@<arm>-<seed>``: train, evaluate, metrics JSON."""
    from poseops.refine import ablation_run as R
    from poseops.train.session import read_training_inputs
    from poseops.train.trainer import train_model

    cfg = PipelineParams.load(params_file)
    cfg.require("train", "ablation")
    p = cfg.ablation
    if seed not in p.seeds:
        raise PoseopsError(f"params.yaml [ablation] seeds: {seed} is not one of {p.seeds}")
    params = R.arm_params(cfg.train, p, arm, seed)
    labels, split, md5s = read_training_inputs(Path(cfg.consensus.out), Path(cfg.split.out))
    ident = R.ablation_id(p, cfg.train)
    parent = R.parent_run(params.experiment, ident, p)
    res = train_model(params, labels, split, Path(cfg.project.path), Path(params.workdir),
                      dvc_md5s=md5s, mlflow_parent_run_id=parent,
                      run_name=f"{ident}/{p.run_name(arm, seed)}",
                      tags={R.TAG: ident, R.TAG_ROLE: "arm", "ablation_arm": arm,
                            "ablation_seed": seed})
    from poseops.train.record import single_scorer

    heads = R.evaluate_run(res, single_scorer(labels), split, p, cfg.evaluate,
                           source_project=cfg.project.path)
    R.log_test_metrics(res.run_id, heads)
    metrics = {"arm": arm, "seed": seed, "run_id": res.run_id,
               **{f"{s}.{k}": v for s, h in heads.items() for k, v in h.items()}}
    write_json(metrics, R.metrics_path(p, arm, seed))
    for s, h in heads.items():
        log.info("ablation %s seed %d: %s mean %.2f px", arm, seed, s, h.get("mean_px", float("nan")))
    return metrics


def run_results(params_file: str | None = None) -> dict[str, Any]:
    """The ``results`` stage: tables, figure, recommendation over every arm x seed."""
    from poseops.refine import ablation as A
    from poseops.refine import ablation_run as R

    cfg = PipelineParams.load(params_file)
    cfg.require("ablation")
    p = cfg.ablation
    errors, preds, heads = R.read_runs(p)
    results = A.results_table(errors, p)
    spread = A.seed_spread(heads)
    disagreement = A.disagreement_table(preds, errors, p)
    line = A.recommendation(results, p)
    out = Path(p.reports)
    paths = {"results": write_csv(results, out / "results.csv"),
             "spread": write_csv(spread, out / "spread.csv"),
             "disagreement": write_csv(disagreement, out / "disagreement.csv"),
             "figure": A.figure(results, p, out / "ablation.png")}
    pooled = results[(results["condition"] == A.ALL) & (results["bodypart"] == A.ALL)]
    keys = ("mean_px", "seed_sd_px", "median_diff_px", "ci_low_px", "ci_high_px")
    summary = {"recommendation": line, "baseline": p.baseline, "split": p.split,
               "arms": {r["arm"]: {k: r[k] for k in keys}
                        for _, r in pooled[pooled["split"] == p.split].iterrows()}}
    cohorts = pooled[pooled["split"] != p.split]
    if not cohorts.empty:  # split.cohorts: each arm on each held-out cohort
        summary["cohorts"] = {s: {r["arm"]: {k: r[k] for k in keys} for _, r in part.iterrows()}
                              for s, part in cohorts.groupby("split", sort=False)}
    write_json(summary, out / "summary.json")
    _log_parent(cfg, p, summary, paths)
    log.info("ablation: %s", line)
    return summary


def _log_parent(cfg: PipelineParams, p: Any, summary: dict, paths: dict[str, Path]) -> None:
    from poseops.refine import ablation_run as R

    parent = R.parent_run(p.experiment or cfg.train.experiment, R.ablation_id(p, cfg.train), p)
    if parent is None:
        return
    try:
        from mlflow import MlflowClient

        from poseops.tracking.runs import tracking_uri

        client = MlflowClient(tracking_uri())
        client.set_tag(parent, "recommendation", summary["recommendation"][:5000])
        for arm, m in summary["arms"].items():
            for k, v in m.items():
                if v == v and v is not None:
                    client.log_metric(parent, f"{arm}.{k}", float(v))
        for path in paths.values():
            client.log_artifact(parent, str(path), "ablation")
    except Exception as e:  # noqa: BLE001 - the results are on disk either way
        log.warning("ablation results not logged to MLflow (%s)", type(e).__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ablation", help="augmentation ablation: arms x seeds vs a baseline")
    p.add_argument("--params", default=None, help="params file (default params.yaml)")
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("arm", help="train + evaluate one arm with one seed (a DVC matrix stage)")
    a.add_argument("arm")
    a.add_argument("seed", type=int)
    sub.add_parser("results", help="results table, spread, figure and recommendation")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    if args.step == "arm":
        print(json.dumps(run_arm(args.arm, args.seed, args.params), indent=1, default=str))
    else:
        print(run_results(args.params)["recommendation"])
    return 0
