"""The CLI shell: every stage verb is there, start-up stays light, params edits keep the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from poseops.config.loader import from_dict, section, update_params
from poseops.core.errors import PoseopsError

VERBS = [
    "demo", "init", "ingest", "consensus", "validate", "composition", "split", "train",
    "evaluate", "validate-report", "report", "sweep", "extract", "analyze", "outliers",
    "merge", "compare",
]
HEAVY = ["deeplabcut", "torch", "mlflow", "great_expectations", "optuna", "dvc"]


def test_every_stage_has_a_verb_and_startup_imports_nothing_heavy():
    code = (
        "import json, sys\n"
        "from poseops.cli import build_parser\n"
        "p = build_parser()\n"
        "verbs = sorted(p._subparsers._group_actions[0].choices)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'verbs': verbs, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(VERBS) <= set(got["verbs"]), sorted(set(VERBS) - set(got["verbs"]))
    assert got["heavy"] == []


def test_error_message_names_file_row_and_bodypart():
    e = PoseopsError("not a number", file="labeled-data/v/CollectedData_a.csv", row=7, bodypart="snout")
    assert str(e) == "labeled-data/v/CollectedData_a.csv, row 7, bodypart 'snout': not a number"


def test_cli_turns_user_errors_into_one_line_and_exit_2(tmp_path, capsys):
    from poseops.cli import main

    rc = main(["ingest", "--project", str(tmp_path / "nope"), "--out", str(tmp_path / "l.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
    assert not (tmp_path / "l.parquet").exists()


def test_update_params_keeps_comments_nulls_and_other_sections(tmp_path: Path):
    p = tmp_path / "params.yaml"
    p.write_text(
        "# top comment\n"
        "project:\n  path: data/raw/demo   # the project\n  metadata: null\n"
        "train:\n  lr: 0.0005  # learning rate\n  scaling: [0.5, 1.25]\n"
    )
    update_params({"train": {"lr": 0.001, "epochs": 3}, "project": {"path": "data/raw/lab"}}, p)
    text = p.read_text()
    assert "# top comment" in text and "# learning rate" in text and "# the project" in text
    assert "metadata: null" in text and "scaling: [0.5, 1.25]" in text
    data = yaml.safe_load(text)
    assert data["train"] == {"lr": 0.001, "scaling": [0.5, 1.25], "epochs": 3}
    assert data["project"] == {"path": "data/raw/lab", "metadata": None}


def test_unknown_param_key_is_named(tmp_path: Path):
    from dataclasses import dataclass

    @dataclass
    class P:
        a: int = 1

    with pytest.raises(PoseopsError, match=r"^params.yaml \[x\] unknown key 'b' \(known keys: a\)$"):
        from_dict(P, {"b": 2}, where="params.yaml [x]")
    p = tmp_path / "params.yaml"
    p.write_text("x:\n  a: 5\n")
    assert section("x", P, p).a == 5
