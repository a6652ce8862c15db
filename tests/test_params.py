"""params.yaml is typed: every section is validated on load, defaults in code equal the shipped
file, YAML 1.2 numbers (``1e-3``) are numbers, and mistakes are one line naming the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from poseops.config.loader import from_dict, load_params, load_yaml, section
from poseops.config.pipeline import SECTIONS, PipelineParams
from poseops.core.errors import PoseopsError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "params.yaml"
SRC = REPO / "src" / "poseops"


# section name -> the dataclass every command reads it with (``cfg.<name>`` of PipelineParams)
READERS: dict[str, type] = SECTIONS
SHIPPED_DATA = load_params(SHIPPED)
WITH_CLASS = sorted(s for s in SHIPPED_DATA if s in READERS)


def _conforms(value: Any, tp: Any) -> bool:
    """Is ``value`` exactly of type ``tp`` (a float field holds a float, not an int or a str)?"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if tp in (bool, int, float, str):
        return type(value) is tp
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    return isinstance(value, origin or tp)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------- the shipped file


def test_every_shipped_section_has_a_dataclass():
    assert sorted(set(SHIPPED_DATA) - set(READERS)) == []


@pytest.mark.parametrize("name", WITH_CLASS)
def test_shipped_section_loads_typed(name: str):
    """The section loads through its dataclass, and every value has the annotated type."""
    cls = READERS[name]
    p = section(name, cls, SHIPPED)
    assert type(p) is cls
    hints = typing.get_type_hints(cls)
    wrong = [
        f"{name}.{f.name}: {getattr(p, f.name)!r} is not {hints[f.name]}"
        for f in dataclasses.fields(cls)
        if not _conforms(getattr(p, f.name), hints[f.name])
    ]
    assert wrong == []


# pipeline wiring, not a default: the shipped value names other stages' outputs, and as a default
# a standalone `poseops validate` (no consensus run) would fail on the missing tables
NOT_DEFAULTS = {"validate.tables"}


@pytest.mark.parametrize("name", WITH_CLASS)
def test_defaults_in_code_equal_shipped_params(name: str):
    """``Cls()`` == the shipped section, key by key (keys the file leaves out are not compared)."""
    cls = READERS[name]
    shipped = section(name, cls, SHIPPED)
    default = cls()
    keys = SHIPPED_DATA.get(name) or {}
    differ = [
        f"{name}.{f.name}: code {getattr(default, f.name)!r} "
        f"!= params.yaml {getattr(shipped, f.name)!r}"
        for f in dataclasses.fields(cls)
        if f.name in keys and getattr(default, f.name) != getattr(shipped, f.name)
    ]
    exempt = [d for d in differ if d.split(":")[0] in NOT_DEFAULTS]
    assert [d for d in differ if d not in exempt] == []
    # an exemption that no longer differs (or whose key is gone) is stale: remove it
    stale = {k for k in NOT_DEFAULTS if k.split(".")[0] == name} - {d.split(":")[0] for d in exempt}
    assert not stale, f"stale NOT_DEFAULTS entries: {sorted(stale)}"


# ---------------------------------------------------------------------------- numbers


def test_yaml_12_floats_are_numbers_for_every_reader(tmp_path: Path):
    p = _write(tmp_path, "train:\n  lr: 1e-3\n  x: [1E5, -2.5e+3, .5e-3, 1.0e3, 3, 0.5]\n"
                         "  s: [1e, e5, m1e5, '1e-3', 1_0, 1.2.3]\n")
    data = load_params(p)["train"]
    assert data["lr"] == 0.001 and type(data["lr"]) is float
    assert data["x"] == [1e5, -2500.0, 0.0005, 1000.0, 3, 0.5]
    assert [type(v) for v in data["x"]] == [float] * 4 + [int, float]
    assert data["s"] == ["1e", "e5", "m1e5", "1e-3", 10, "1.2.3"]  # quoted stays a string
    assert load_yaml("a: 1e-4")["a"] == 1e-4
    assert yaml.safe_load("a: 1e-4")["a"] == "1e-4"  # PyYAML's own loader is left alone


def test_train_lr_in_scientific_notation(tmp_path: Path):
    from poseops.config.train import TrainParams

    p = _write(tmp_path, "train:\n  lr: 1e-3\n  epochs: 5.0\n  tracking_timeout_s: 30\n")
    tp = section("train", TrainParams, p)
    assert tp.lr == 0.001 and type(tp.lr) is float
    assert tp.epochs == 5 and type(tp.epochs) is int
    assert tp.tracking_timeout_s == 30.0 and type(tp.tracking_timeout_s) is float
    # a quoted number (a string) is accepted for a float field too
    assert from_dict(TrainParams, {"lr": "1e-3"}, where="params.yaml [train]").lr == 0.001
    # still a plain dataclass
    assert dataclasses.replace(tp, lr=0.01).lr == 0.01
    assert dataclasses.asdict(tp)["lr"] == 0.001


def test_sweep_lr_bounds_in_scientific_notation_end_to_end(tmp_path: Path):
    import optuna

    from poseops.config.sweep import SweepParams
    from poseops.sweep.space import suggest

    p = _write(tmp_path, "sweep:\n  lr: [1e-4, 1e-2]\n  batch_size: [8]\n  epochs: 3\n"
                         "  augmentation: {hflip: [0, 5e-1]}\n"
                         "  enqueue: [{lr: 5e-4, batch_size: 8}]\n")
    sp = section("sweep", SweepParams, p)
    assert sp.lr == [1e-4, 1e-2] and all(type(v) is float for v in sp.lr)
    assert sp.augmentation == {"hflip": [0, 0.5]} and sp.enqueue == [{"lr": 5e-4, "batch_size": 8}]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(sp.enqueue[0])
    points = [suggest(study.ask(), sp) for _ in range(5)]
    assert points[0]["lr"] == 5e-4
    assert all(1e-4 <= pt["lr"] <= 1e-2 and pt["batch_size"] == 8 and pt["epochs"] == 3
               for pt in points)
    assert {pt["hflip"] for pt in points} <= {0, 0.5}


# ---------------------------------------------------------------------------- mistakes
def _error(fn, *args, **kwargs) -> str:
    """The one-line message of the PoseopsError that ``fn(*args)`` raises."""
    with pytest.raises(PoseopsError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def test_wrong_type_is_one_line_naming_file_section_and_key(tmp_path: Path):
    from poseops.config.sweep import SweepParams
    from poseops.config.train import TrainParams

    p = _write(tmp_path, "train:\n  lr: fast\nsweep:\n  lr: [1e-4, fast]\n")
    assert _error(section, "train", TrainParams, p) == f"{p} [train] lr: expected a number, got 'fast'"
    assert _error(section, "sweep", SweepParams, p) == f"{p} [sweep] lr: expected a list of numbers, got [0.0001, 'fast']"
    with pytest.raises(PoseopsError, match=r"\[train\] epochs: expected an integer, got 2.5$"):
        from_dict(TrainParams, {"epochs": 2.5}, where="params.yaml [train]")
    with pytest.raises(PoseopsError, match=r"\[train\] crop_width: expected an integer or null"):
        from_dict(TrainParams, {"crop_width": "wide"}, where="params.yaml [train]")
    with pytest.raises(PoseopsError, match=r"\[train\]: expected a mapping of keys, got \[1, 2\]"):
        from_dict(TrainParams, [1, 2], where="params.yaml [train]")  # type: ignore[arg-type]
    # the dataclass's own checks name the file and section too
    with pytest.raises(PoseopsError) as e:
        section("sweep", SweepParams, _write(tmp_path, "sweep:\n  lr: [1e-2, 1e-4]\n"))
    assert str(e.value).startswith(f"{tmp_path / 'params.yaml'} [sweep]: sweep.lr must be [low, high]")


def test_wrong_type_through_the_cli_is_one_line_exit_2(tmp_path: Path, capsys):
    from poseops.cli import main

    p = _write(tmp_path, "sweep:\n  n_trials: many\n")
    assert main(["sweep", "--params", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"poseops sweep: error: {p} [sweep] n_trials: expected an integer, got 'many'"]


def test_unknown_key_names_the_closest_valid_key(tmp_path: Path):
    from poseops.config.data import SplitParams
    from poseops.config.train import TrainParams

    p = _write(tmp_path, "train:\n  learning_rate: 1e-3\nsplit:\n  val_fracton: 0.2\n")
    assert _error(section, "train", TrainParams, p) == f"{p} [train] unknown key 'learning_rate'; did you mean 'lr'?"
    assert _error(section, "split", SplitParams, p) == f"{p} [split] unknown key 'val_fracton'; did you mean 'val_fraction'?"
    assert _error(from_dict, TrainParams, {"Epochs": 3, "LR": 1}, where="params.yaml [train]") == (
        "params.yaml [train] unknown keys 'Epochs' (did you mean 'epochs'?), 'LR' (did you mean 'lr'?)"
    )
    # nothing close: the known keys are listed
    with pytest.raises(PoseopsError, match=r"unknown key 'zzz' \(known keys: net_type, .*, lr, "):
        from_dict(TrainParams, {"zzz": 1}, where="params.yaml [train]")


def test_train_overrides_are_typed_and_checked(tmp_path, repo_root) -> None:
    """`poseops train -P lr=1e-3` (and MLproject parameters) go through the same checks."""
    import shutil

    from poseops.commands.train import _parse_value, run
    from poseops.core.errors import PoseopsError

    assert _parse_value("1e-3") == pytest.approx(0.001) and isinstance(_parse_value("1e-3"), float)
    params = shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    with pytest.raises(PoseopsError, match=r"lr: expected a number, got 'fast'"):
        run(str(params), {"lr": "fast"})
    with pytest.raises(PoseopsError, match=r"did you mean 'lr'"):
        run(str(params), {"learning_rate": 0.1})


# ---------------------------------------------------------------------------- PipelineParams


def test_pipeline_params_reads_each_section_typed_and_only_when_used(tmp_path: Path) -> None:
    """``cfg.<section>`` is the section validated into its dataclass (the same object
    ``section()`` gives); a mistake in a section a stage does not read does not stop it, and
    is reported, naming the file, section and key, by the stage that reads it."""
    import re

    text = re.sub(r"(?m)^(sweep:.*\n)", r"\1  n_trialz: 3\n", SHIPPED.read_text(), count=1)
    assert "n_trialz" in text
    p = tmp_path / "params.yaml"
    p.write_text(text)
    cfg = PipelineParams.load(p)
    assert cfg.consensus == section("consensus", SECTIONS["consensus"], p)
    assert cfg.split.out == yaml.safe_load(text)["split"]["out"]
    assert type(cfg.train) is SECTIONS["train"]
    with pytest.raises(PoseopsError, match=r"\[sweep\] unknown key 'n_trialz'; did you mean 'n_trials'"):
        _ = cfg.sweep


def test_pipeline_params_has_every_shipped_section_and_defaults_when_absent(tmp_path: Path):
    assert sorted(SECTIONS) == sorted(SHIPPED_DATA)
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  epochs: 3\n")
    cfg = PipelineParams.load(p)
    assert cfg.train.epochs == 3
    assert cfg.evaluate == SECTIONS["evaluate"]()
