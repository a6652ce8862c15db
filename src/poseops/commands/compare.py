"""`poseops compare BASELINE CANDIDATE`: did the refinement iteration help, on the same test set?
Then the backward-compatibility gate: the GE suite ``compare.suite`` on compare's tables; when it
passes the registry alias ``compare.champion_alias`` moves to the candidate's model version,
when it fails the alias stays and the command exits 2 naming what got worse.

Reads params ``compare`` (and ``train.workdir``: the candidate's run.json when the candidate is a
file); the work is :func:`poseops.refine.compare.compare_models` and
:func:`poseops.refine.gate.run_gate` (the suite through :mod:`poseops.quality.gx`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from poseops.config.pipeline import PipelineParams
from poseops.core.errors import PoseopsError
from poseops.refine.compare import compare_models

log = logging.getLogger(__name__)


def run(
    baseline: str,
    candidate: str,
    out: str | None = None,
    log_mlflow: bool = True,
    params_file: str | Path | None = None,
    gate: bool | None = None,
    candidate_run: str | None = None,
    iterations: tuple[int, int] | None = None,
    trajectories: tuple[str, str] | None = None,
    seed_spread: str | None = None,
) -> dict:
    """params.yaml ``compare`` (``out`` overrides it; ``log_mlflow=False``: no MLflow run;
    ``gate`` overrides ``compare.gate``; ``candidate_run``: the candidate's MLflow training run
    id; ``iterations``: their iteration numbers for the history; ``seed_spread`` overrides
    ``compare.seed_spread``: the baseline's seed-to-seed SD) -> :func:`compare_models`,
    then the gate. BASELINE / CANDIDATE: an errors file, an
    iteration number or an MLflow run id. Returns the result tables and summary (``summary
    ["gate"]``: the gate's outcome)."""
    cfg = PipelineParams.load(params_file)
    params = cfg.compare
    if out:
        params.out = out
    if not log_mlflow:
        params.log_mlflow = False
    if gate is not None:
        params.gate = gate
    if seed_spread:
        params.seed_spread = seed_spread
    if params.gate and params.min_gain_seed_sd is not None and not params.seed_spread:
        raise PoseopsError("params.yaml [compare] min_gain_seed_sd is set but seed_spread is not: "
                           "the gate needs the baseline's seed-to-seed SD (or --seed-spread)")
    if cfg.data.get("train") is not None:
        params.train_workdir = cfg.train.workdir
    if cfg.data.get("merge") is not None:
        params.merge_report = cfg.merge.report
    result = compare_models(params, baseline, candidate, tuple(iterations or (None, None)),
                            write_history=True)
    if trajectories:
        _trajectories(result, params, *trajectories)
    if params.gate:
        from poseops.quality import gx
        from poseops.refine.gate import run_gate

        values = {"compare": asdict(params)}
        run_gate(result, params, lambda tables: gx.validate_tables(params.suite, tables, values),
                 candidate_run=candidate_run)
    return result


def _trajectories(result: dict, params, base: str, cand: str) -> None:
    """--trajectories: the paired per-video comparison of two behaviour outputs'
    video_quality.csv -> <compare.out>/trajectories.csv and the per-video pairs
    trajectories_videos.csv (:mod:`poseops.refine.trajectories`; shown by the report)."""
    from poseops.core.fileio import write_csv
    from poseops.refine import trajectories as T

    qb, qc = T.read_quality(base), T.read_quality(cand)
    table = T.compare_quality(qb, qc, params.n_boot, params.ci, params.seed, params.min_units)
    write_csv(table, Path(params.out) / "trajectories.csv", index=False)
    write_csv(T.paired_videos(qb, qc), Path(params.out) / T.VIDEOS_FILE, index=False)
    result["trajectories"] = table
    h = T.headline(table)
    if h:
        log.info("compare: centroid jitter %.2f -> %.2f px over %d videos (median diff %.2f "
                 "[%.2f, %.2f]): %s", h["median_baseline"], h["median_candidate"],
                 h["n_videos"], h["median_diff"], h["ci_low"], h["ci_high"], h["status"])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired comparison of two models on the fixed test set, "
                                       "then the backward-compatibility gate")
    p.add_argument("baseline", help="errors file, iteration number or MLflow run id")
    p.add_argument("candidate", help="errors file, iteration number or MLflow run id")
    p.add_argument("--out", help="output folder (default: params compare.out)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--candidate-run", help="the candidate's MLflow training run id (default: the "
                   "run its errors came from, else train.workdir/run.json)")
    p.add_argument("--no-gate", dest="gate", action="store_const", const=False, default=None,
                   help="skip the backward-compatibility gate (default: params compare.gate)")
    p.add_argument("--iterations", nargs=2, type=int, metavar=("B", "C"),
                   help="iteration numbers of baseline and candidate for reports/iterations.csv "
                        "(default: from the references or merge's report)")
    p.add_argument("--trajectories", nargs=2, metavar=("B", "C"),
                   help="also compare two `poseops behaviour` outputs (video_quality.csv or its "
                        "folder), paired per video: did the candidate make trajectories steadier?")
    p.add_argument("--seed-spread", metavar="PATH",
                   help="the baseline config's seed-to-seed SD of test RMSE: an ablation reports "
                        "folder or its spread.csv, a per-seed CSV (rmse_px) or a quoted glob of "
                        "per-seed errors tables (default: params compare.seed_spread)")
    p.add_argument("--params", dest="params_file", help="params file (default: params.yaml)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.baseline, args.candidate, args.out, log_mlflow=not args.no_mlflow,
        params_file=args.params_file, gate=args.gate, candidate_run=args.candidate_run,
        iterations=args.iterations, trajectories=args.trajectories,
        seed_spread=args.seed_spread)
    return 0
