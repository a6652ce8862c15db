"""poseops.quality.gx: suite loading (loud on dropped expectations), parameter placeholders, routing of
expectations to tables, tidy results, failure messages, results JSON and Data Docs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseops.core.errors import PoseopsError
from poseops.quality import gx as pgx


def _write_suite(path: Path, expectations: list[dict]) -> Path:
    path.write_text(json.dumps({"name": "t", "expectations": expectations}))
    return path


def _labels() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    images = [f"labeled-data/v{v}/img{i:04d}.png" for v in range(2) for i in range(5)]
    rows = []
    for img in images:
        for bp in ["snout", "tailbase"]:
            rows.append({"image": img, "bodypart": bp, "x": rng.uniform(0, 150), "width": 160})
    df = pd.DataFrame(rows)
    df.loc[3, "x"] = 170.0  # outside the 160 px image
    df.loc[7, "x"] = 999.0
    return df


X_INSIDE = {
    "type": "expect_column_pair_values_a_to_be_greater_than_b",
    "kwargs": {"column_A": "width", "column_B": "x", "ignore_row_if": "either_value_is_missing"},
    "meta": {"table": "labels", "name": "x_inside_image"},
}


def test_unknown_expectation_type_fails_loading_naming_it(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [
            X_INSIDE,
            {
                "type": "expect_column_values_to_be_betwen",  # misspelled
                "kwargs": {"column": "x", "min_value": 0},
                "meta": {"table": "labels", "name": "x_nonnegative"},
            },
        ],
    )
    with pytest.raises(PoseopsError, match="expect_column_values_to_be_betwen") as e:
        pgx.load_suite(suite)
    assert "x_nonnegative" in str(e.value) and "s.json" in str(e.value)
    with pytest.raises(PoseopsError, match="did not load"):
        pgx.validate_tables(suite, {"labels": _labels()})


def test_invalid_kwargs_fail_loading(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [
            {
                "type": "expect_compound_columns_to_be_unique",
                "kwargs": {"column_list": ["image"]},  # GE needs two columns
                "meta": {"table": "labels", "name": "unique_rows"},
            }
        ],
    )
    with pytest.raises(PoseopsError, match="unique_rows.*at least two columns"):
        pgx.load_suite(suite)


def _placeholder_params(obj: object, out: dict, kwarg: str = "") -> dict:
    """Dummy values for every {"$param": path} in a suite: a list for value sets, else 1."""
    if isinstance(obj, dict):
        if "$param" in obj:
            node = out
            *parents, leaf = obj["$param"].split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = ["a", "b"] if "set" in kwarg else 1
        for k, v in obj.items():
            _placeholder_params(v, out, k)
    elif isinstance(obj, list):
        for v in obj:
            _placeholder_params(v, out, kwarg)
    return out


def test_repo_suites_load_every_expectation(repo_root: Path) -> None:
    """Every suite in expectations/ loads whole: GE drops nothing (types and kwargs valid)."""
    suites = sorted((repo_root / "expectations").glob("*.json"))
    assert any(p.name == "dataset.json" for p in suites)
    for path in suites:
        spec = json.loads(path.read_text())
        suite = pgx.load_suite(path, _placeholder_params(spec, {}))
        assert len(suite.expectations) == len(spec["expectations"]), path


def test_dataset_suite_params_are_in_params_yaml(repo_root: Path) -> None:
    """Every threshold the dataset suite needs is set in the repository's params.yaml."""
    from poseops.config.loader import load_params

    spec = json.loads((repo_root / "expectations" / "dataset.json").read_text())
    needed = _placeholder_params(spec, {})
    params = load_params(repo_root / "params.yaml")
    for sec, keys in needed.items():
        if sec == "config":  # filled from the DLC project's config.yaml at run time
            continue
        for key in keys:
            assert key in params[sec], f"{sec}.{key}"


def test_missing_meta_table_is_refused(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}],
    )
    with pytest.raises(PoseopsError, match="meta.table"):
        pgx.validate_tables(suite, {"labels": _labels()})


def test_placeholders_filled_from_params(tmp_path: Path) -> None:
    exp = {
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": {"$param": "validate.min_rows"}},
        "meta": {"table": "labels", "name": "enough_rows"},
    }
    suite = _write_suite(tmp_path / "s.json", [exp])
    labels = _labels()
    n = len(labels)
    ok = pgx.validate_tables(suite, {"labels": labels}, {"validate": {"min_rows": n}})
    assert ok.success and ok.results.loc[0, "kwargs"]["min_value"] == n
    bad = pgx.validate_tables(suite, {"labels": labels}, {"validate": {"min_rows": n + 1}})
    assert not bad.success
    assert bad.results.loc[0, "observed"] == str(n)
    with pytest.raises(PoseopsError, match="enough_rows.*'validate.min_rows' is not set"):
        pgx.validate_tables(suite, {"labels": labels}, {"validate": {}})
    exp["kwargs"]["min_value"] = {"$param": "validate.min_rows", "default": n + 5}
    suite = _write_suite(tmp_path / "s.json", [exp])
    with_default = pgx.validate_tables(suite, {"labels": labels}, {})
    assert with_default.results.loc[0, "kwargs"]["min_value"] == n + 5
    assert not with_default.success


def test_routing_and_tidy_results(tmp_path: Path) -> None:
    labels = _labels()
    stats = labels.groupby("bodypart", as_index=False)["x"].max().rename(columns={"x": "x_max"})
    suite = _write_suite(
        tmp_path / "s.json",
        [
            X_INSIDE,
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "x_max", "max_value": 500},
                "meta": {"table": "bodypart_stats", "name": "x_max_small"},
            },
            {
                "type": "expect_compound_columns_to_be_unique",
                "kwargs": {"column_list": ["image", "bodypart"]},
                "meta": {"table": "labels", "name": "unique"},
            },
        ],
    )
    res = pgx.validate_tables(suite, {"labels": labels, "bodypart_stats": stats})
    r = res.results.set_index("name")
    assert list(res.results["name"]) == ["x_inside_image", "x_max_small", "unique"]  # suite order
    assert r.loc["x_inside_image", "table"] == "labels"
    assert r.loc["x_max_small", "table"] == "bodypart_stats"
    # independent count of offending rows
    assert r.loc["x_inside_image", "unexpected_count"] == int(
        (labels["x"] >= labels["width"]).sum()
    )
    assert r.loc["x_inside_image", "element_count"] == len(labels)
    assert not r.loc["x_inside_image", "success"]
    bad_bp = stats.loc[stats["x_max"] > 500, "bodypart"].tolist()
    assert [e["bodypart"] for e in r.loc["x_max_small", "examples"]] == bad_bp
    assert r.loc["unique", "success"]
    ex = r.loc["x_inside_image", "examples"]
    offending = labels[labels["x"] >= labels["width"]]
    assert {(e["image"], e["bodypart"]) for e in ex} == set(
        zip(offending["image"], offending["bodypart"], strict=True)
    )


def test_failure_message_names_expectation_observed_value_and_example(tmp_path: Path) -> None:
    suite = _write_suite(tmp_path / "s.json", [X_INSIDE])
    labels = _labels()
    res = pgx.validate_tables(suite, {"labels": labels})
    with pytest.raises(PoseopsError) as e:
        res.check(fail_on_error=True)
    msg = str(e.value)
    assert "\n" not in msg
    assert "x_inside_image" in msg and "expect_column_pair_values_a_to_be_greater_than_b" in msg
    assert f"2 of {len(labels)} rows unexpected" in msg
    assert "image=labeled-data/v0/img0001.png bodypart=tailbase" in msg
    assert "x=170.0" in msg


def test_fail_on_error_false_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    suite = _write_suite(tmp_path / "s.json", [X_INSIDE])
    res = pgx.validate_tables(suite, {"labels": _labels()})
    with caplog.at_level(logging.WARNING, logger="poseops.quality.gx"):
        res.check(fail_on_error=False)
    assert "x_inside_image" in caplog.text and "fail_on_error is off" in caplog.text


def test_missing_column_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "animal"},
                "meta": {"table": "labels", "name": "animal_known"},
            }
        ],
    )
    res = pgx.validate_tables(suite, {"labels": _labels()})
    assert not res.success
    assert "animal_known" in res.message()


def test_enabled_by_and_optional_tables(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [
            {**X_INSIDE, "meta": {**X_INSIDE["meta"], "enabled_by": "validate.check_x"}},
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 1},
                "meta": {"table": "labeler_qc", "optional": True, "name": "qc_rows"},
            },
        ],
    )
    res = pgx.validate_tables(suite, {"labels": _labels()}, {"validate": {"check_x": False}})
    assert res.success
    assert res.results["success"].isna().all()
    assert "check_x is off" in res.results.loc[0, "observed"]
    on = pgx.validate_tables(suite, {"labels": _labels()}, {"validate": {"check_x": True}})
    assert not on.success
    required = _write_suite(
        tmp_path / "r.json",
        [
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 1},
                "meta": {"table": "metrics"},
            }
        ],
    )
    with pytest.raises(PoseopsError, match="table 'metrics'.*not given"):
        pgx.validate_tables(required, {"labels": _labels()})


def test_results_json_and_data_docs(tmp_path: Path) -> None:
    suite = _write_suite(
        tmp_path / "s.json",
        [
            X_INSIDE,
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 1},
                "meta": {"table": "frames"},
            },
        ],
    )
    labels = _labels()
    frames = labels[["image"]].drop_duplicates()
    docs = tmp_path / "reports" / "validation" / "dataset-docs"
    docs.mkdir(parents=True)
    (docs / "stale.html").write_text("old")
    res = pgx.validate_tables(suite, {"labels": labels, "frames": frames}, docs_dir=docs)
    assert res.docs_index == docs / "index.html" and res.docs_index.exists()
    assert not (docs / "stale.html").exists()
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 2  # one validation page per table
    out = res.save(tmp_path / "reports" / "validation" / "dataset.json")
    data = json.loads(out.read_text())
    assert data["success"] is False
    assert data["statistics"] == {"evaluated": 2, "successful": 1, "failed": 1, "skipped": 0}
    assert data["results"][0]["name"] == "x_inside_image"
    assert [p.name for p in docs.parent.iterdir() if p.name.startswith(".")] == []
