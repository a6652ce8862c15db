"""poseops.quality.dataset + expectations/dataset.json: each dataset rule catches its violation, names the
culprit, and the stage writes results JSON + Data Docs (or stops `poseops validate` with exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from support.params import validate_params_file

from poseops import cli
from poseops.commands import validate as CV
from poseops.core.errors import PoseopsError
from poseops.data import labels as L
from poseops.quality import dataset as V
from poseops.quality.gx import validate_tables

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
CONDITIONS = ["vehicle", "low_dose", "high_dose"]
W, H = 32, 24


def make_project(
    root: Path, frames_per_video: int = 4, videos_per_condition: int = 2, seed: int = 0
) -> tuple[Path, pd.DataFrame]:
    """A tiny DLC-like project on disk (config.yaml + PNGs) and its labels table."""
    rng = np.random.default_rng(seed)
    project = root / "proj"
    (project / "labeled-data").mkdir(parents=True)
    (project / "config.yaml").write_text(
        yaml.safe_dump({"scorer": "alice", "bodyparts": BODYPARTS, "video_sets": {}})
    )
    rows = []
    for ci, cond in enumerate(CONDITIONS):
        for v in range(videos_per_condition):
            video = f"m{v}s{ci}"
            (project / "labeled-data" / video).mkdir()
            for f in range(frames_per_video):
                image = f"labeled-data/{video}/img{f:04d}.png"
                Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
                    project / image
                )
                for bp in BODYPARTS:
                    rows.append(
                        {
                            "image": image,
                            "video": video,
                            "frame": f,
                            "scorer": "alice",
                            "bodypart": bp,
                            "x": rng.uniform(0, W - 1),
                            "y": rng.uniform(0, H - 1),
                            "width": W,
                            "height": H,
                            "animal": f"m{v}",
                            "session": f"s{ci}",
                            "condition": cond,
                            "dose": float(ci),
                            "camera": "top",
                        }
                    )
    labels = pd.DataFrame(rows)
    labels["labeled"] = True
    return project, labels


PARAMS = {
    "validate": {
        "max_nan_share": 0.25,
        "min_frames_per_condition": 5,
        "max_condition_ratio": 3.0,
        "min_total_frames": 20,
        "check_images": True,
    },
    "config": {"bodyparts": BODYPARTS},
}


def check(repo_root: Path, labels: pd.DataFrame, project: Path | None, **overrides) -> pd.DataFrame:
    params = {**PARAMS, "validate": {**PARAMS["validate"], **overrides}}
    tables = V.dataset_tables(labels, project)
    res = validate_tables(repo_root / "expectations" / "dataset.json", tables, params)
    return res.results.set_index("name")


def failed(results: pd.DataFrame) -> list[str]:
    return sorted(results.index[results["success"].eq(False)])


@pytest.fixture
def proj(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    return make_project(tmp_path)


def test_clean_dataset_passes(repo_root: Path, proj) -> None:
    project, labels = proj
    r = check(repo_root, labels, project)
    assert failed(r) == []
    ran = r[r["success"].notna()]
    assert ran["success"].all() and len(ran) >= 18
    # only expectations on tables other stages add (labeler QC from consensus) are skipped
    skipped = r[r["success"].isna()]
    assert skipped["observed"].str.contains("not given").all()
    assert (
        not skipped["table"].isin(["labels", "frames", "bodypart_stats", "condition_stats"]).any()
    )
    assert len(r) == len(
        json.loads((repo_root / "expectations/dataset.json").read_text())["expectations"]
    )


def test_coordinates_outside_image(repo_root: Path, proj) -> None:
    project, labels = proj
    labels.loc[5, "x"] = W  # x == width is outside (0 <= x < width)
    labels.loc[9, "y"] = -0.5
    labels.loc[13, "y"] = H + 3
    r = check(repo_root, labels, project)
    assert failed(r) == ["x_inside_image", "y_inside_image", "y_not_negative"]
    assert r.loc["y_inside_image", "unexpected_count"] == 1
    ex = r.loc["x_inside_image", "examples"][0]
    assert (ex["image"], ex["bodypart"]) == (labels.loc[5, "image"], labels.loc[5, "bodypart"])


def test_bodyparts_must_match_config(repo_root: Path, proj) -> None:
    project, labels = proj
    labels.loc[labels["bodypart"] == "tailbase", "bodypart"] = "tail"
    r = check(repo_root, labels, project)
    assert failed(r) == ["bodyparts_complete", "bodyparts_in_config"]
    assert r.loc["bodyparts_in_config", "examples"][0]["bodypart"] == "tail"
    assert "tailbase" in r.loc["bodyparts_complete", "observed"]


def test_duplicate_keypoint_rows(repo_root: Path, proj) -> None:
    project, labels = proj
    labels = pd.concat([labels, labels.iloc[[2]]], ignore_index=True)
    r = check(repo_root, labels, project)
    assert failed(r) == ["unique_keypoints"]
    assert r.loc["unique_keypoints", "examples"][0]["bodypart"] == labels.loc[2, "bodypart"]


def test_nan_share_per_bodypart(repo_root: Path, proj) -> None:
    project, labels = proj
    snout = labels.index[labels["bodypart"] == "snout"]
    labels.loc[snout[: len(snout) // 3 + 1], ["x", "y"]] = np.nan
    labels.loc[labels.index[labels["bodypart"] == "leftear"][0], "y"] = np.nan
    stats = L.bodypart_stats(labels).set_index("bodypart")
    expected = {
        bp: np.mean(np.isnan(g["x"].to_numpy()) | np.isnan(g["y"].to_numpy()))
        for bp, g in labels.groupby("bodypart")
    }
    np.testing.assert_allclose(stats["nan_share"], [expected[b] for b in stats.index])
    assert stats.loc["leftear", "n_missing"] == 1
    r = check(repo_root, labels, project)
    assert failed(r) == ["nan_share_per_bodypart"]
    assert [e["bodypart"] for e in r.loc["nan_share_per_bodypart", "examples"]] == ["snout"]
    assert failed(check(repo_root, labels, project, max_nan_share=0.5)) == []


def test_every_frame_needs_metadata(repo_root: Path, proj) -> None:
    project, labels = proj
    img = labels.loc[0, "image"]
    labels.loc[labels["image"] == img, "animal"] = None
    r = check(repo_root, labels, project)
    assert failed(r) == ["frame_has_animal"]
    assert r.loc["frame_has_animal", "examples"][0]["image"] == img
    no_meta = labels.drop(columns=["animal", "session", "condition"])
    r = check(repo_root, no_meta, project)
    assert {
        "frame_has_animal",
        "frame_has_session",
        "frame_has_condition",
        "conditions_present",
    } <= set(failed(r))


def test_condition_counts_and_balance(repo_root: Path, tmp_path: Path) -> None:
    project, labels = make_project(tmp_path, frames_per_video=3)
    frames = V.frames_table(labels)
    stats = V.condition_stats(frames).set_index("condition")
    assert stats["n_frames"].to_dict() == {c: 6 for c in CONDITIONS}
    # drop frames of high_dose: 6 -> 1 frame
    keep = ~labels["image"].isin(frames.loc[frames["condition"] == "high_dose", "image"].iloc[1:])
    labels = labels[keep]
    stats = V.condition_stats(V.frames_table(labels)).set_index("condition")
    counts = labels.drop_duplicates("image")["condition"].value_counts()
    assert stats["n_frames"].to_dict() == counts.to_dict()
    np.testing.assert_allclose(stats["ratio_to_smallest"], counts.loc[stats.index] / counts.min())
    r = check(repo_root, labels, project, min_total_frames=1)
    assert failed(r) == ["condition_balance", "frames_per_condition"]
    assert {e["condition"] for e in r.loc["condition_balance", "examples"]} == {
        "vehicle",
        "low_dose",
    }
    assert r.loc["frames_per_condition", "examples"][0]["condition"] == "high_dose"
    ok = check(
        repo_root,
        labels,
        project,
        min_total_frames=1,
        min_frames_per_condition=1,
        max_condition_ratio=6,
    )
    assert failed(ok) == []


def test_total_frames(repo_root: Path, proj) -> None:
    project, labels = proj
    n = labels["image"].nunique()
    r = check(repo_root, labels, project, min_total_frames=n + 1)
    assert failed(r) == ["total_frames"]
    assert r.loc["total_frames", "observed"] == str(n)


def test_missing_and_corrupt_images(repo_root: Path, proj) -> None:
    project, labels = proj
    images = list(dict.fromkeys(labels["image"]))
    (project / images[1]).unlink()
    data = (project / images[2]).read_bytes()
    (project / images[2]).write_bytes(data[: len(data) // 2])  # truncated PNG
    status = V.image_status(images, project).set_index("image")
    assert not status.loc[images[1], "exists"] and not status.loc[images[1], "decodes"]
    assert status.loc[images[2], "exists"] and not status.loc[images[2], "decodes"]
    assert status["decodes"].sum() == len(images) - 2
    r = check(repo_root, labels, project)
    assert failed(r) == ["image_decodes", "image_exists"]
    assert {e["image"] for e in r.loc["image_decodes", "examples"]} == {images[1], images[2]}
    off = check(repo_root, labels, None, check_images=False)
    assert failed(off) == []
    assert off.loc["image_decodes", "success"] is None


def test_cli_stage_outputs_and_failure(tmp_path: Path, proj, capsys) -> None:
    project, labels = proj
    labels_path = tmp_path / "labels.parquet"
    labels.to_parquet(labels_path)
    params = validate_params_file(tmp_path, project, labels_path)
    assert cli.main(["validate", "--params", str(params)]) == 0
    out = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert out["success"] is True and out["statistics"]["failed"] == 0
    assert (tmp_path / "out" / "dataset-docs" / "index.html").is_file()

    bad = labels.copy()
    bad.loc[6, "x"] = 10 * W
    bad.to_parquet(labels_path)
    assert cli.main(["validate", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "x_inside_image" in err and f"x={10 * W:.1f}" in err
    assert f"image={bad.loc[6, 'image']} bodypart={bad.loc[6, 'bodypart']}" in err
    out = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert out["success"] is False  # results are saved even when the stage fails
    # warn-only: param or flag
    assert cli.main(["validate", "--params", str(params), "--warn-only"]) == 0
    params = validate_params_file(tmp_path, project, labels_path, fail_on_error=False)
    assert cli.main(["validate", "--params", str(params)]) == 0


def test_relative_output_paths(tmp_path: Path, proj, monkeypatch: pytest.MonkeyPatch) -> None:
    """params.yaml paths are relative to the repository root (DVC runs stages there)."""
    project, labels = proj
    labels.to_parquet(tmp_path / "labels.parquet")
    monkeypatch.chdir(tmp_path)
    params = {
        "project": {"path": "proj"},
        "validate": {
            "suite": str(Path(__file__).parents[1] / "expectations" / "dataset.json"),
            "input": "labels.parquet",
            "out": "reports/validation/dataset.json",
            "docs": "reports/validation/dataset-docs",
        },
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert cli.main(["validate"]) == 0
    assert (tmp_path / "reports/validation/dataset-docs/index.html").is_file()
    assert sorted(p.name for p in (tmp_path / "reports/validation").iterdir()) == [
        "dataset-docs",
        "dataset.json",
    ]


def test_missing_input_names_file(tmp_path: Path, proj) -> None:
    project, _ = proj
    params = validate_params_file(tmp_path, project, tmp_path / "nope.parquet")
    with pytest.raises(PoseopsError, match="nope.parquet"):
        CV.run(str(params))


def _repo_params(repo_root: Path, project: Path, labels: pd.DataFrame) -> dict:
    from poseops.config.loader import load_params

    params = load_params(repo_root / "params.yaml")
    return {**params, "config": {"bodyparts": V.config_bodyparts(project, labels)}}


def test_openfield_needs_metadata(repo_root: Path, openfield: Path, tmp_path: Path) -> None:
    from poseops.data.ingest import ingest_project

    labels = ingest_project(openfield, None)
    suite = repo_root / "expectations" / "dataset.json"
    res = validate_tables(
        suite, V.dataset_tables(labels, openfield), _repo_params(repo_root, openfield, labels)
    )
    r = res.results.set_index("name")
    assert failed(r) == [
        "conditions_present",
        "frame_has_animal",
        "frame_has_condition",
        "frame_has_session",
    ]
    assert r.loc["total_frames", "observed"] == "116"
    assert r.loc["frame_has_animal", "unexpected_count"] == 116
    assert "fill the metadata CSV" in res.message()
    meta = tmp_path / "videos.csv"
    pd.DataFrame(
        [
            {
                "video": "m4s1",
                "animal": "m4",
                "session": "s1",
                "condition": "vehicle",
                "dose": 0.0,
                "camera": "top",
            }
        ]
    ).to_csv(meta, index=False)
    labels = ingest_project(openfield, meta)
    res = validate_tables(
        suite, V.dataset_tables(labels, openfield), _repo_params(repo_root, openfield, labels)
    )
    assert res.success, res.message()
    frames = V.frames_table(labels)
    assert len(frames) == 116 and set(zip(frames["width"], frames["height"], strict=True)) == {
        (640, 480)
    }


def test_demo_passes_with_repo_thresholds(
    repo_root: Path, demo_project: Path, demo_metadata: Path
) -> None:
    from poseops.data.ingest import ingest_project

    labels = ingest_project(demo_project, demo_metadata)
    tables = V.dataset_tables(labels, demo_project)
    res = validate_tables(
        repo_root / "expectations" / "dataset.json",
        tables,
        _repo_params(repo_root, demo_project, labels),
    )
    assert res.success, res.message()
    stats = tables["bodypart_stats"].set_index("bodypart")
    for bp, g in labels.groupby("bodypart"):
        assert stats.loc[bp, "n_missing"] == int(g["x"].isna().sum())
    assert tables["frames"]["decodes"].all() and len(tables["frames"]) == labels["image"].nunique()
