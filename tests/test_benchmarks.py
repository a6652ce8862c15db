"""benchmarks/*.py keep working: each script runs at its smallest size (``--smoke``) as a
subprocess from the repository root, exits 0 and prints its figure (the line the benchmark exists
to report). Only tracking_overhead trains DeepLabCut for real (marked slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

# script -> (smallest-size arguments, regex of its figure line in stdout)
FIGURES: dict[str, tuple[list[str], str]] = {
    "aggregate_scaling.py": (
        ["--smoke"], r"^time ratio 1e4/1e3 = \d+\.\d \(rows ratio 10; linear ~10\)$"),
    "consensus_scaling.py": (
        ["--smoke"], r"^vectorised vs per-group loop on [\d,]+ rows: \d+x faster, "
                     r"identical results: True$"),
    "evaluate_memory.py": (
        ["--smoke"], r"^peak RSS growth: \d+\.\dx frames -> \d+\.\d\dx memory \(\d+\.\d\d GB at "
                     r"\d+ frames; target flat, < 3 GB\)$"),
    "demo_ingest.py": (
        ["--smoke"], r"^ingest growth: \d+\.\dx images -> \d+\.\dx time$"),
    "dataloader_throughput.py": (
        ["--smoke"], r"^\s*160x120\s+8\s+\d+\s+(True|False)\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d\s+"
                     r"\d+\.\d\s+\d+\.\d%$"),
    "pruning_efficiency.py": (
        ["--smoke"], r"^compute ratio \(epochs, pruned/unpruned\): \d+\.\d%   target <= 40 %"),
    "tracking_overhead.py": (
        ["--smoke"], r"^in-loop overhead ratio \(wall\): \d+\.\d{4} \([+-]\d+\.\d\d %, "
                     r"target <= \+2 %\)$"),
}
SLOW = {"tracking_overhead.py"}  # real DeepLabCut training (two 1-epoch runs of the small demo)


def test_every_benchmark_has_a_smoke_run() -> None:
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == sorted(FIGURES)


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(FIGURES)],
)
def test_benchmark_prints_its_figure(script: str, tmp_path: Path) -> None:
    args, figure = FIGURES[script]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{script} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    assert re.search(figure, r.stdout, re.MULTILINE), f"{script}: no figure line in\n{r.stdout}"
