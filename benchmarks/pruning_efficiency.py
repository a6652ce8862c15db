"""Pruning efficiency of `poseops sweep` on the demo: compute saved vs best validation error lost.

Runs the same trials twice with real DeepLabCut training (CPU is fine; minutes):
  1. unpruned: the sweep's sampler (seeded) draws ``--trials`` points, every trial trains the
     full epoch budget;
  2. pruned: exactly the same points (enqueued in the same order) with the pruner on.
Prints the compute ratio (epochs trained, pruned / unpruned; target <= 40 %) and the best
validation error of each (target: pruned within 5 % of unpruned). As a cross-check it also
replays the unpruned validation curves through the pruner offline (no training), which shows
what the pruner decides on the same curves. Training is seeded, so on one machine the replay
and the trained pruned sweep agree exactly; the replay is the cheap way to compare pruners.

    .venv/bin/python benchmarks/pruning_efficiency.py [--trials 16] [--epochs 12]
        [--pruner sha|median|percentile|hyperband|patience] [--demo small|default] [--keep DIR]
        [--val-fraction F] [--save-curves FILE] [--from-curves FILE [--train-pruned]]
    .venv/bin/python benchmarks/pruning_efficiency.py --smoke   # no training, seconds

``--smoke`` checks the script runs: it replays closed-form synthetic curves (6 trials x 6 epochs,
as if loaded with ``--from-curves``) through the pruners; its numbers say nothing about DLC.

The demo is split with params.yaml ``split:`` (``--val-fraction`` overrides): how many frames the
validation error is measured on decides how noisy each epoch's value is, and so how often a
pruner (or the unpruned "best") is fooled by one lucky or unlucky epoch.

The replay also runs the curves in many random orders: with a handful of trials the order decides
much of the saving (a good trial drawn early sets a bar the others must meet).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def prepare_demo(root: Path, size: str, val_fraction: float):
    """Demo project -> consensus labels + grouped split (the pipeline's own functions, params.yaml
    ``split:`` as the pipeline uses it, with ``val_fraction``)."""
    from poseops.config.data import SplitParams
    from poseops.config.demo import DemoParams
    from poseops.config.loader import section
    from poseops.data.consensus import build_consensus
    from poseops.data.ingest import ingest_project
    from poseops.data.split import make_split
    from poseops.demo.project import generate_demo
    from poseops.sweep.space import TrainInputs

    demo = DemoParams.small() if size == "small" else DemoParams()
    project = root / "raw" / "demo"
    generate_demo(project, demo, metadata=root / "videos.csv")
    labels = build_consensus(ingest_project(project, root / "videos.csv"))
    sp = dataclasses.replace(section("split", SplitParams), val_fraction=val_fraction)
    if size == "small":  # one condition only
        sp = dataclasses.replace(sp, stratify_by=None)
    split = make_split(labels, sp)
    n = split["split"].value_counts()
    print(f"split: {dict(n)} frames (val_fraction {sp.val_fraction})", flush=True)
    return TrainInputs(labels, split, project)


def sweep(inputs, train_base, p, label: str) -> tuple[list[dict], float]:
    """Run one study to the end; rows: number, params, state, epochs_trained, value, curve."""
    from poseops.sweep.worker import run_worker

    t0 = time.monotonic()
    report = run_worker(p, train_base, inputs)
    import optuna

    study = optuna.load_study(study_name=report.study_name, storage=p.storage)
    rows = [
        {
            "number": t.number,
            "params": dict(t.params),
            "state": t.state.name,
            "epochs": int(t.user_attrs.get("epochs_trained", 0)),
            "value": t.value,
            "curve": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
        }
        for t in study.get_trials()
    ]
    elapsed = time.monotonic() - t0
    print(f"[{label}] {len(rows)} trials in {elapsed / 60:.1f} min", flush=True)
    return rows, elapsed


def replay(rows: list[dict], p) -> tuple[int, float]:
    """Offline: feed the unpruned curves, in order, through the pruner (no training)."""
    import optuna

    from poseops.sweep.study import build_pruner

    study = optuna.create_study(direction="minimize", pruner=build_pruner(p))
    epochs, best = 0, float("inf")
    for r in rows:
        t = study.ask()
        stopped = False
        for e, v in enumerate(r["curve"], start=1):
            t.report(v, e)
            epochs += 1
            if t.should_prune():
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                stopped = True
                break
        if not stopped:
            value = min(r["curve"])
            study.tell(t, value)
            best = min(best, value)
    return epochs, best


def replay_orders(rows: list[dict], p, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Replay ``n`` random orders of the same trials: (mean compute share, its 90th percentile,
    share of orders whose best stays within 5 % of the unpruned best). The order a sweep happens
    to draw decides a lot with few trials; this shows how much."""
    import random

    rng = random.Random(seed)
    total = sum(len(r["curve"]) for r in rows)
    best_all = min(min(r["curve"]) for r in rows)
    shares, ok = [], 0
    for _ in range(n):
        epochs, best = replay(rng.sample(rows, len(rows)), p)
        shares.append(epochs / total)
        ok += (best - best_all) / best_all <= 0.05
    shares.sort()
    return sum(shares) / n, shares[min(n - 1, int(0.9 * n))], ok / n


# pruners compared on the replayed curves (sweep params overridden)
CANDIDATES: list[tuple[str, dict]] = [
    ("sha (min 2, rf 3)", {"pruner": "sha", "min_resource": 2, "reduction_factor": 3}),
    ("sha (min 1, rf 3)", {"pruner": "sha", "min_resource": 1, "reduction_factor": 3}),
    ("sha (min 3, rf 3)", {"pruner": "sha", "min_resource": 3, "reduction_factor": 3}),
    ("median (start 4, warm 2)", {"pruner": "median", "n_startup_trials": 4, "n_warmup_steps": 2}),
    ("median (start 2, warm 2)", {"pruner": "median", "n_startup_trials": 2, "n_warmup_steps": 2}),
    (
        "percentile 25 (2, 2)",
        {"pruner": "percentile", "percentile": 25.0, "n_startup_trials": 2, "n_warmup_steps": 2},
    ),
    ("hyperband (min 2, rf 3)", {"pruner": "hyperband", "min_resource": 2, "reduction_factor": 3}),
    ("patience 3", {"pruner": "patience", "patience": 3}),
]


def synthetic_curves(trials: int = 6, epochs: int = 6) -> dict:
    """A ``--save-curves`` document without training (for ``--smoke``): trial i has lr from 1e-4
    to 1e-1 (log-spaced) and batch 4/8/16; its val error after epoch e is a floor that is lowest at
    lr 3e-3 and batch 8, plus 10 * exp(-e / 2)."""
    import math

    rows = []
    for i in range(trials):
        lr = 10 ** (-4 + 3 * i / max(1, trials - 1))
        batch = (4, 8, 16)[i % 3]
        floor = 2.0 + 3.0 * (math.log10(lr) - math.log10(3e-3)) ** 2 + 0.1 * abs(batch - 8)
        curve = [floor + 10.0 * math.exp(-e / 2.0) for e in range(1, epochs + 1)]
        rows.append({"number": i, "params": {"lr": lr, "batch_size": batch}, "state": "COMPLETE",
                     "epochs": epochs, "value": min(curve), "curve": curve})
    return {"trials": rows, "demo": "synthetic", "val_fraction": None, "wall_s": 0.0}


def best_value(rows: list[dict]) -> float:
    vals = [r["value"] for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return min(vals) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--orders", type=int, default=100, help="random trial orders replayed")
    ap.add_argument("--pruner", default=None, help="default: params.yaml sweep.pruner")
    ap.add_argument("--startup", type=int, default=None, help="sweep.n_startup_trials")
    ap.add_argument("--warmup", type=int, default=None, help="sweep.n_warmup_steps")
    ap.add_argument("--patience", type=int, default=None, help="sweep.patience")
    ap.add_argument("--metric", default=None, help="sweep.metric (default val.rmse)")
    ap.add_argument("--seed", type=int, default=None, help="sweep.seed")
    ap.add_argument("--demo", choices=["small", "default"], default="default")
    ap.add_argument("--val-fraction", type=float, default=None, help="split.val_fraction")
    ap.add_argument("--keep", default=None, help="keep the work folder here")
    ap.add_argument("--save-curves", default=None, help="write the unpruned trials (JSON) here")
    ap.add_argument(
        "--from-curves",
        default=None,
        help="skip unpruned training: load its trials from --save-curves output (--trials, "
        "--epochs, --demo and --val-fraction come from the file); replay only unless --train-pruned",
    )
    ap.add_argument(
        "--train-pruned",
        action="store_true",
        help="with --from-curves: also train the pruned sweep on the saved trials' points",
    )
    ap.add_argument(
        "--replay-only",
        action="store_true",
        help="train only the unpruned trials; judge the pruner on their curves (half the time)",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="no training: replay synthetic curves (6 trials x 6 epochs, 5 orders)",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("poseops.sweep").setLevel(logging.INFO)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per replayed study otherwise
    saved = json.loads(Path(a.from_curves).read_text()) if a.from_curves else None
    if a.smoke:
        saved, a.orders, a.train_pruned = saved or synthetic_curves(), min(a.orders, 5), False
    if saved:  # the saved sweep fixes the trials and the epoch budget (hyperband's max_resource)
        a.trials = len(saved["trials"])
        a.epochs = max(len(r["curve"]) for r in saved["trials"])
        a.demo = saved.get("demo", a.demo)
        a.val_fraction = saved.get("val_fraction", a.val_fraction)
        a.replay_only = not a.train_pruned

    from poseops.config.data import SplitParams
    from poseops.config.loader import section
    from poseops.config.sweep import SweepParams
    from poseops.config.train import TrainParams

    if a.val_fraction is None:  # recorded with saved curves: params.yaml may change later
        a.val_fraction = section("split", SplitParams).val_fraction

    root = Path(a.keep or tempfile.mkdtemp(prefix="poseops-prune-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    base = section("sweep", SweepParams)
    tuned = {
        "n_startup_trials": a.startup,
        "n_warmup_steps": a.warmup,
        "patience": a.patience,
        "metric": a.metric,
        "seed": a.seed,
    }
    base = dataclasses.replace(base, **{k: v for k, v in tuned.items() if v is not None})
    train_base = dataclasses.replace(
        TrainParams(),
        net_type="cspnext_s",
        pretrained=False,  # offline: random init (hub weights unreachable)
        device="cpu" if not os.environ.get("CUDA_VISIBLE_DEVICES") else "auto",
        save_epochs=max(1, a.epochs),
        experiment="poseops-prune-bench",
        workdir=str(root / "train"),
    )
    inputs = None if saved and a.replay_only else prepare_demo(root, a.demo, a.val_fraction)
    common = dict(n_trials=a.trials, epochs=a.epochs, log_test=False, study_name=None)
    unpruned_p = dataclasses.replace(
        base,
        **common,
        pruner="none",
        patience=None,
        storage=f"sqlite:///{root / 'unpruned.db'}",
        out=str(root / "unpruned"),
    )
    if saved:
        unpruned, t_un = saved["trials"], saved["wall_s"]
    else:
        unpruned, t_un = sweep(inputs, train_base, unpruned_p, "unpruned")
        if a.save_curves:
            meta = {"demo": a.demo, "val_fraction": a.val_fraction, "wall_s": t_un}
            Path(a.save_curves).write_text(json.dumps({"trials": unpruned, **meta}))
    points = [r["params"] for r in sorted(unpruned, key=lambda r: r["number"])]
    pruned_p = dataclasses.replace(
        base,
        **common,
        pruner=a.pruner or base.pruner,
        enqueue=points,
        storage=f"sqlite:///{root / 'pruned.db'}",
        out=str(root / "pruned"),
    )
    e_rp, b_rp = replay(sorted(unpruned, key=lambda r: r["number"]), pruned_p)
    if a.replay_only:
        pruned, t_pr = [], float("nan")
        e_pr, b_pr, n_pruned = e_rp, b_rp, -1
    else:
        pruned, t_pr = sweep(inputs, train_base, pruned_p, "pruned")
        assert [r["params"] for r in sorted(pruned, key=lambda r: r["number"])] == points
        e_pr = sum(r["epochs"] for r in pruned)
        b_pr = best_value(pruned)
        n_pruned = sum(r["state"] == "PRUNED" for r in pruned)
    e_un = sum(r["epochs"] for r in unpruned)
    b_un = best_value(unpruned)
    print()
    print(
        f"pruner: {pruned_p.pruner} (n_startup_trials={pruned_p.n_startup_trials}, "
        f"n_warmup_steps={pruned_p.n_warmup_steps}, patience={pruned_p.patience}); "
        f"{a.trials} trials x {a.epochs} epochs, demo={a.demo}, val_fraction={a.val_fraction}"
    )
    print(f"{'':24s}{'epochs':>8s}{'wall min':>10s}{'best val px':>13s}")
    print(f"{'unpruned':24s}{e_un:8d}{t_un / 60:10.1f}{b_un:13.3f}")
    if not a.replay_only:
        print(
            f"{'pruned (trained)':24s}{e_pr:8d}{t_pr / 60:10.1f}{b_pr:13.3f}   ({n_pruned} pruned)"
        )
    print(f"{'pruned (replayed curves)':24s}{e_rp:8d}{'':10s}{b_rp:13.3f}")
    for r in sorted(unpruned, key=lambda r: r["number"]):
        curve = " ".join(f"{v:.1f}" for v in r["curve"])
        print(
            f"  trial {r['number']:2d} lr={r['params'].get('lr', 0):.2e} "
            f"batch={r['params'].get('batch_size')}: {curve}"
        )
    ratio = e_pr / e_un
    gap = (b_pr - b_un) / b_un
    print(
        f"compute ratio (epochs, pruned/unpruned): {ratio:.1%}   target <= 40 %  "
        f"{'OK' if ratio <= 0.40 else 'MISSED'}"
    )
    print(
        f"best val error, pruned vs unpruned: {gap:+.1%}   target within 5 %  "
        f"{'OK' if gap <= 0.05 else 'MISSED'}"
    )
    print(f"replay: compute {e_rp / e_un:.1%}, best error {(b_rp - b_un) / b_un:+.1%}")
    print(
        f"\nthe same unpruned curves replayed through each pruner (no training): the sweep's order,"
        f" then {a.orders} random orders of the same trials (mean and 90th percentile compute, share"
        " of orders whose best stays within 5 %)"
    )
    ordered = sorted(unpruned, key=lambda r: r["number"])
    for name, extra in CANDIDATES:
        cand = dataclasses.replace(pruned_p, **extra)
        e, b = replay(ordered, cand)
        mean, p90, ok = replay_orders(ordered, cand, a.orders)
        print(
            f"  {name:26s} compute {e / e_un:6.1%}  best {(b - b_un) / b_un:+6.1%}   "
            f"orders: compute {mean:6.1%} (p90 {p90:6.1%}), best within 5 % in {ok:4.0%}"
        )
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
