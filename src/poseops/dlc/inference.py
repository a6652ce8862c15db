"""DeepLabCut predictions as tidy tables: the one place poseops runs DLC's inference runner on
images and flattens what DLC predicts (runner outputs, the video-analysis .h5) into rows.

One naming convention for every table: the k-th assembly (an unordered animal) of an image is
``assembly`` k, named after the k-th of the model's ``individuals`` (``individual<k>`` past
them); a multi-animal model's unique bodyparts are assembly -1, DLC's individual ``single``.

Tables (one row per image x assembly x bodypart; x, y in pixels of the input image):
    :func:`assemblies_table`   image, assembly, bodypart, x, y, likelihood
    :func:`predict`            image, bodypart, x, y, likelihood, snapshot (single animal), or
                               image, assembly, bodypart, x, y, likelihood, snapshot
    :func:`individuals_table`  image, individual, bodypart, x, y, likelihood (the pyfunc model)
    :func:`predictions_from_dlc` video, frame, [assembly,] bodypart, x, y, likelihood, scorer
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError
from poseops.dlc.files import read_config_unchecked, read_pytorch_config

log = logging.getLogger(__name__)

UNIQUE_ASSEMBLY = -1  # the assembly index of a multi-animal model's unique bodyparts
ASSEMBLY_COLUMNS = [S.IMAGE, S.ASSEMBLY, S.BODYPART, S.X, S.Y, S.LIKELIHOOD]
INDIVIDUAL_COLUMNS = [S.IMAGE, S.INDIVIDUAL, S.BODYPART, S.X, S.Y, S.LIKELIHOOD]


# ------------------------------------------------------------------------------- naming
def individual_name(assembly: int, individuals: Sequence[str]) -> str:
    """The individual of assembly ``assembly``: ``single`` for the unique bodyparts (-1), the
    k-th of ``individuals``, else ``individual<k>``."""
    if assembly == UNIQUE_ASSEMBLY:
        return S.SINGLE
    return individuals[assembly] if assembly < len(individuals) else f"individual{assembly}"


def assembly_slots(individuals: Sequence[str]) -> dict[str, int]:
    """Inverse of :func:`individual_name` for DLC's column order of individuals (an untracked
    analysis names its k-th assembly after the k-th individual): name -> assembly index,
    ``single`` -> -1."""
    animals = [i for i in individuals if i != S.SINGLE]
    return {ind: k for k, ind in enumerate(animals)} | {S.SINGLE: UNIQUE_ASSEMBLY}


# ------------------------------------------------------------------------------- config
def project_pcutoff(config_path: Path) -> float:
    """``pcutoff`` of a DLC project's config.yaml (0.6 when it has none; the config unchecked)."""
    return float(read_config_unchecked(Path(config_path)).get("pcutoff", 0.6))


def project_individuals(config_path: Path) -> list[str] | None:
    """DLC's config order of the individuals (multi-animal projects), None if not listed (the
    config unchecked)."""
    inds = read_config_unchecked(Path(config_path)).get("individuals")
    return [str(i) for i in inds] if inds else None


# ------------------------------------------------------------------------------- runner
def as_image_list(model_input: Any) -> tuple[list[Any], list[Any]]:
    """(inputs for DLC, names for the output table) from the accepted pyfunc inputs: image
    paths, a DataFrame with an ``image`` column (else its first column), one RGB uint8 array
    (H, W, 3) or a stack (N, H, W, 3) (names 0..N-1)."""
    if isinstance(model_input, pd.DataFrame):
        col = "image" if "image" in model_input.columns else model_input.columns[0]
        paths = [str(p) for p in model_input[col]]
        return paths, paths
    if isinstance(model_input, np.ndarray):
        arr = model_input[None] if model_input.ndim == 3 else model_input
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise PoseopsError(f"images array must be (N, H, W, 3) RGB, got {model_input.shape}")
        return [np.ascontiguousarray(a, dtype=np.uint8) for a in arr], list(range(len(arr)))
    if isinstance(model_input, str | Path):
        return [str(model_input)], [str(model_input)]
    items = list(model_input)
    names = [str(x) if isinstance(x, str | Path) else i for i, x in enumerate(items)]
    return [str(x) if isinstance(x, Path) else x for x in items], names


def _input_size(image: Any) -> tuple[int, int]:
    """(width, height) of an image path (header only) or an (H, W, 3) array."""
    if isinstance(image, str | Path):
        from poseops.dlc.files import image_size

        return image_size(Path(image))
    return int(image.shape[1]), int(image.shape[0])


def pose_runner(pytorch_config: Mapping[str, Any] | str | Path, snapshot: str | Path,
                batch_size: int = 8, device: str = "cpu") -> Any:
    """DLC's pose inference runner (``get_pose_inference_runner``) with its part-affinity-field
    predictor, if any, run one image at a time (:func:`assemble_per_image`): the network still
    sees ``batch_size`` images per forward pass. Images are read one batch at a time
    (:func:`streaming_inference_config`)."""
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner

    cfg = (pytorch_config if isinstance(pytorch_config, Mapping)
           else read_pytorch_config(Path(pytorch_config)))
    runner = get_pose_inference_runner(model_config=cfg, snapshot_path=str(snapshot),
                                       batch_size=batch_size, device=device,
                                       inference_cfg=streaming_inference_config(cfg))
    assemble_per_image(runner.model)
    release_memory_per_batch(runner)
    return runner


def release_memory_per_batch(runner: Any) -> bool:
    """Make ``runner`` hand the heap memory freed by the previous batch back to the system
    before each batch (:func:`release_freed_memory`); returns False if it already did.

    Without it the peak grew with the number of batches: after the first forward pass glibc
    raises its mmap threshold to the largest buffer freed (up to 32 MB), so the next passes'
    activations come from the heap, and what they free lies between live chunks, where glibc
    keeps it resident: 202 MB before the second batch of 8 frames at 1280x720, whose peak was
    201 MB higher (2924 MB at 8 frames, 3147 MB at 16, benchmarks/evaluate_memory.py).
    Trimming returns those pages without changing where glibc allocates, so the predictions
    are unchanged; it costs milliseconds per batch (a full ``gc.collect`` took seconds with
    DeepLabCut imported, and the growth was free heap, not garbage)."""
    if getattr(runner, "_poseops_release", False):
        return False
    batched = runner.predict

    def predict(inputs: Any, **kwargs: Any) -> Any:
        release_freed_memory()
        return batched(inputs, **kwargs)

    runner.predict = predict
    runner._poseops_release = True
    return True


def release_freed_memory() -> int:
    """Return the C heap's free pages to the system: glibc's ``malloc_trim(0)`` (every arena,
    not only the top of the heap). Returns 1 if glibc released memory, 0 if not or where there
    is no glibc (macOS, musl)."""
    trim = _malloc_trim()
    return int(trim(0)) if trim is not None else 0


_TRIM: list[Any] = []  # [glibc's malloc_trim or None], looked up once


def _malloc_trim() -> Callable[[int], int] | None:
    if not _TRIM:
        import ctypes

        try:  # the symbols the process already has: glibc's where it runs on glibc
            trim = ctypes.CDLL(None).malloc_trim
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            trim = None
        _TRIM.append(trim)
    return _TRIM[0]


def streaming_inference_config(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The model's ``inference`` settings (compile, autocast, ...) with DLC's read-ahead off.

    By default DLC's runner loads and preprocesses images in a background thread that queues up
    to 4 stacked batches ahead of the network (``multithreading.queue_length``), each batch a
    float32 tensor of ``batch_size`` whole frames (88 MB at 8 x 1280x720), plus the batch being
    stacked: the peak grew with the number of frames up to ~5 batches. Sequential inference reads
    the next batch only after the previous one is predicted, so the peak is one batch of images
    plus the network's activations, whatever the number of frames."""
    inference = dict(model_config.get("inference") or {})
    threads = dict(inference.get("multithreading") or {})
    inference["multithreading"] = {**threads, "enabled": False}
    return inference


def assemble_per_image(model: Any) -> bool:
    """Make the model's part-affinity-field predictor (multi-animal bottom-up models) assemble
    the images of a batch one at a time; returns whether it had one.

    DLC's ``PartAffinityFieldPredictor`` pairs every peak of an edge's source bodypart with
    every peak of its target over the whole batch before it integrates the PAF along each pair:
    its memory is the batch's number of candidate pairs (quadratic in the peaks of a barely
    trained model on large frames: ~20 GB for a batch of 8 frames at 1280x720), freed only after
    the batch. Each image's peaks, costs and assemblies depend on that image only, so per image
    the poses are identical and the peak is one image's pairs, not ``batch_size`` images'."""
    heads = getattr(model, "heads", None)
    head = heads["bodypart"] if heads is not None and "bodypart" in heads else None
    predictor = getattr(head, "predictor", None)
    if predictor is None or type(predictor).__name__ != "PartAffinityFieldPredictor":
        return False
    if not getattr(predictor, "_poseops_per_image", False):
        predictor.forward = _per_image(predictor.forward)
        predictor._poseops_per_image = True
    return True


@contextmanager
def per_image_paf_assembly() -> Iterator[None]:
    """Within the block, every DLC ``PartAffinityFieldPredictor`` assembles one image at a time
    (:func:`assemble_per_image`): for DLC's training loop, whose per-epoch validation assembles
    each validation batch with the full (unpruned) graph."""
    from deeplabcut.pose_estimation_pytorch.models.predictors import PartAffinityFieldPredictor

    batched = PartAffinityFieldPredictor.forward

    def forward(self: Any, stride: float, outputs: dict[str, Any]) -> dict[str, Any]:
        return _per_image(lambda st, out: batched(self, st, out))(stride, outputs)

    PartAffinityFieldPredictor.forward = forward
    try:
        yield
    finally:
        PartAffinityFieldPredictor.forward = batched


def _per_image(batched: Callable[[float, dict[str, Any]], dict[str, Any]]) -> Callable:
    """A PAF predictor's ``forward(stride, outputs)`` run on each image of the batch alone, the
    per-image results joined back into the batch's."""

    def forward(stride: float, outputs: dict[str, Any]) -> dict[str, Any]:
        n = len(next(iter(outputs.values())))
        if n <= 1:
            return batched(stride, outputs)
        parts = [batched(stride, {k: v[b : b + 1] for k, v in outputs.items()}) for b in range(n)]
        return {key: _join([p[key] for p in parts]) for key in parts[0]}

    return forward


def _join(values: list[Any]) -> Any:
    """One batch's value from per-image values: tensors concatenated on dim 0, lists joined."""
    import torch

    if isinstance(values[0], torch.Tensor):
        return torch.cat(values, dim=0)
    return [item for v in values for item in v]


def inference_by_size(runner: Any, images: list[Any]) -> list[Any]:
    """``runner.inference(images)`` with each call given images of one size only, results in
    the input order.

    DeepLabCut's inference runner stacks up to ``batch_size`` preprocessed images into one tensor
    (``torch.stack``), which fails for a project with two frame sizes; every ``inference`` call
    flushes its last partial batch, so one call per size never mixes sizes in a batch.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(_input_size(image), []).append(i)
    out: list[Any] = [None] * len(images)
    for idx in groups.values():
        for i, result in zip(idx, runner.inference([images[i] for i in idx]), strict=True):
            out[i] = result
    return out


def stream_tables(runner: Any, images: Sequence[Any], names: Sequence[Any],
                  flatten: Callable[[Sequence[Any], Sequence[Mapping[str, Any]]], pd.DataFrame],
                  chunk: int = 32) -> pd.DataFrame:
    """``runner`` on ``images`` ``chunk`` at a time (:func:`inference_by_size`), each chunk's
    outputs flattened at once (``flatten(names, outputs) -> table``) and dropped: what stays in
    memory is the tidy table, never every image's runner outputs (DLC's per-image dicts hold
    numpy views that can keep a whole batch's head outputs alive), so the peak does not grow with
    the number of images. Returns the chunks' tables concatenated, in the input order."""
    tables = []
    chunk = max(int(chunk), 1)
    for start in range(0, len(images), chunk):
        outs = inference_by_size(runner, list(images[start : start + chunk]))
        tables.append(flatten(names[start : start + chunk], outs))
        del outs
        if len(images) > chunk:
            log.info("predicted %d / %d images", min(start + chunk, len(images)), len(images))
    nonempty = [t for t in tables if len(t)]
    if not nonempty:
        return flatten([], [])
    return pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0]


# ------------------------------------------------------------------------------- flattening
def assemblies_table(images: Sequence[Any], outputs: Sequence[Mapping[str, Any]],
                     bodyparts: Sequence[str], unique_bodyparts: Sequence[str]) -> pd.DataFrame:
    """The runner's per-image outputs (``bodyparts``: (assemblies, bodyparts, >=3) x, y, score;
    ``unique_bodyparts``: (1, unique, 3)) as the table ``image, assembly, bodypart, x, y,
    likelihood``: per image, assembly 0.. in the runner's order (score -1: none), then the
    unique bodyparts as assembly -1."""
    parts = []
    for image, o in zip(images, outputs, strict=True):
        arr = np.asarray(o["bodyparts"], float)[..., :3]
        n_asm = arr.shape[0]
        parts.append(pd.DataFrame({
            S.IMAGE: image, S.ASSEMBLY: np.repeat(np.arange(n_asm), len(bodyparts)),
            S.BODYPART: np.tile(bodyparts, n_asm), S.X: arr[..., 0].ravel(),
            S.Y: arr[..., 1].ravel(), S.LIKELIHOOD: arr[..., 2].ravel()}))
        if unique_bodyparts and o.get("unique_bodyparts") is not None:
            u = np.asarray(o["unique_bodyparts"], float)[..., :3].reshape(-1, 3)
            n = len(unique_bodyparts)
            parts.append(pd.DataFrame({
                S.IMAGE: image, S.ASSEMBLY: UNIQUE_ASSEMBLY, S.BODYPART: list(unique_bodyparts),
                S.X: u[:n, 0], S.Y: u[:n, 1], S.LIKELIHOOD: u[:n, 2]}))
    if not parts:
        return pd.DataFrame(columns=ASSEMBLY_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out[S.ASSEMBLY] = out[S.ASSEMBLY].astype(int)
    return out


def individuals_table(images: Sequence[Any], outputs: Sequence[Mapping[str, Any]],
                      bodyparts: Sequence[str], individuals: Sequence[str],
                      unique_bodyparts: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`assemblies_table` with each assembly named (:func:`individual_name`): ``image,
    individual, bodypart, x, y, likelihood``."""
    table = assemblies_table(images, outputs, bodyparts, unique_bodyparts or [])
    if not len(table):
        return pd.DataFrame(columns=INDIVIDUAL_COLUMNS)
    names = {k: individual_name(k, individuals) for k in table[S.ASSEMBLY].unique()}
    table[S.ASSEMBLY] = table[S.ASSEMBLY].map(names)
    return table.rename(columns={S.ASSEMBLY: S.INDIVIDUAL})[INDIVIDUAL_COLUMNS]


def first_assembly(table: pd.DataFrame) -> pd.DataFrame:
    """Single-animal predictions ``image, bodypart, x, y, likelihood``: assembly 0 of
    :func:`assemblies_table`."""
    if not len(table):
        return pd.DataFrame({S.IMAGE: np.repeat([], 0), S.BODYPART: np.array([], object),
                             S.X: np.zeros(0), S.Y: np.zeros(0), S.LIKELIHOOD: np.zeros(0)})
    first = table[table[S.ASSEMBLY] == 0].drop(columns=S.ASSEMBLY)
    return first.reset_index(drop=True)


# ------------------------------------------------------------------------------- predict
def _check_inputs(pytorch_config: Path, snapshot: Path, project_dir: Path,
                  images: list[str]) -> None:
    if not snapshot.is_file():
        raise PoseopsError("snapshot not found (train first, or fix evaluate.snapshot)",
                           file=snapshot)
    if not pytorch_config.is_file():
        raise PoseopsError("pytorch_config.yaml not found", file=pytorch_config)
    missing = [i for i in images if not (project_dir / i).is_file()]
    if missing:
        raise PoseopsError(f"{len(missing)} image(s) missing, e.g. {missing[0]!r}",
                           file=project_dir / missing[0])


def predict(
    pytorch_config: str | Path,
    snapshot: str | Path,
    project_dir: str | Path,
    images: list[str],
    *,
    batch_size: int = 8,
    device: str = "auto",
    chunk: int = 32,
    multi_animal: bool = False,
) -> pd.DataFrame:
    """DeepLabCut inference of ``snapshot`` on ``images`` (DLC relative paths under
    ``project_dir``). Returns the predictions table ``image, bodypart, x, y, likelihood,
    snapshot`` (single animal: the first individual). ``multi_animal``: every assembly, one row
    per (image, assembly, bodypart) with ``assembly`` = its index in the runner's output (an
    unordered animal; -1 = the unique bodyparts), as the runner returns it (score -1: none)."""
    snapshot, pytorch_config = Path(snapshot), Path(pytorch_config)
    _check_inputs(pytorch_config, snapshot, Path(project_dir), images)
    from poseops.core.device import resolve_device

    cfg = read_pytorch_config(pytorch_config)
    bodyparts = list(cfg["metadata"]["bodyparts"])
    if multi_animal and str(cfg.get("method", "bu")).lower() != "bu":
        raise PoseopsError(
            f"evaluating a {cfg.get('method')!r} (top-down) multi-animal model needs a detector "
            "or ground-truth boxes: not supported yet; use a bottom-up net_type (dekr_w18, "
            "resnet_50 with PAF, ...)", file=pytorch_config)
    runner = pose_runner(cfg, snapshot, batch_size=batch_size, device=resolve_device(device))
    unique = list(cfg["metadata"].get("unique_bodyparts") or []) if multi_animal else []

    def flatten(names: Sequence[Any], outs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        table = assemblies_table(names, outs, bodyparts, unique)
        return table if multi_animal else first_assembly(table)

    paths = [str(Path(project_dir) / i) for i in images]
    table = stream_tables(runner, paths, images, flatten, chunk=chunk)
    return table.assign(**{S.SNAPSHOT: snapshot.name})


# ------------------------------------------------------------------------------- video h5
def predictions_from_dlc(df: pd.DataFrame, video: str) -> pd.DataFrame:
    """DLC's analysis frame (index = frame, columns scorer/bodyparts/coords x,y,likelihood) ->
    tidy predictions: video, frame, bodypart, x, y, likelihood, scorer."""
    if df.columns.nlevels == 4:
        return predictions_from_dlc_multianimal(df, video)
    if df.columns.nlevels != 3:
        raise PoseopsError(f"expected DLC predictions with 3 (single-animal) or 4 (multi-animal)"
                           f" column levels for {video}, got {df.columns.nlevels}")
    scorer = str(df.columns.get_level_values(0)[0])
    long = df.droplevel(0, axis=1).stack(level=0, future_stack=True)
    long.index.names = [S.FRAME, S.BODYPART]
    out = long.reset_index()[[S.FRAME, S.BODYPART, S.X, S.Y, S.LIKELIHOOD]]
    out.insert(0, S.VIDEO, video)
    out[S.SCORER] = scorer
    out[S.FRAME] = out[S.FRAME].astype(int)
    return out


def stack_individuals(df: pd.DataFrame, video: str) -> pd.DataFrame:
    """DLC's multi-animal frame (index = frame, columns scorer/individuals/bodyparts/coords,
    untracked or tracked) -> long rows: video, frame, ``_ind`` (the individuals level), bodypart,
    x, y, likelihood, scorer; only the individual x bodypart pairs DLC has as columns (stacking
    makes every pair: unique bodyparts only under ``single``)."""
    scorer = str(df.columns.get_level_values(0)[0])
    long = df.droplevel(0, axis=1).stack(level=[0, 1], future_stack=True)
    long.index.names = [S.FRAME, "_ind", S.BODYPART]
    out = long.reset_index()
    for c in (S.X, S.Y, S.LIKELIHOOD):
        if c not in out.columns:
            raise PoseopsError(f"DLC's multi-animal output for {video} has no {c!r} coordinate")
    pairs = set(zip(df.columns.get_level_values(1), df.columns.get_level_values(2), strict=True))
    out = out[[(i, b) in pairs for i, b in zip(out["_ind"], out[S.BODYPART], strict=True)]]
    out.insert(0, S.VIDEO, video)
    out[S.SCORER] = scorer
    out[S.FRAME] = out[S.FRAME].astype(int)
    return out


def predictions_from_dlc_multianimal(df: pd.DataFrame, video: str) -> pd.DataFrame:
    """DLC's untracked multi-animal analysis frame (``analyze_videos(auto_track=False,
    save_as_df=True)``: columns scorer/individuals/bodyparts/coords, the k-th "individual" is
    the k-th assembly of the frame, not an identity; unique bodyparts under ``single``) ->
    tidy predictions: video, frame, assembly (-1 = unique bodyparts), bodypart, x, y,
    likelihood, scorer (an empty assembly slot keeps DLC's score < 0)."""
    slot = assembly_slots(list(dict.fromkeys(df.columns.get_level_values(1))))
    out = stack_individuals(df, video)
    out = out[out[[S.X, S.Y, S.LIKELIHOOD]].notna().any(axis=1)]  # slots DLC never fills
    out[S.ASSEMBLY] = out.pop("_ind").map(slot).astype(int)
    cols = [S.VIDEO, S.FRAME, S.ASSEMBLY, S.BODYPART, S.X, S.Y, S.LIKELIHOOD, S.SCORER]
    return out[cols].sort_values([S.FRAME, S.ASSEMBLY], kind="stable").reset_index(drop=True)


def predict_with_cohorts(pytorch_config: str | Path, snapshot: str | Path, project_dir: str | Path,
                         images: list[str], held: Sequence[str] = (),
                         source_project: str | Path | None = None, *, batch_size: int = 8,
                         device: str = "auto", multi_animal: bool = False) -> pd.DataFrame:
    """:func:`predict` of ``images`` (in the working project ``project_dir``) and of ``held``,
    the generalisation cohorts' images (split ``cohort:<name>``: never copied into the working
    project), read from ``source_project``, the labeled project. One predictions table."""
    preds = predict(pytorch_config, snapshot, project_dir, images, batch_size=batch_size,
                    device=device, multi_animal=multi_animal)
    if not held:
        return preds
    if source_project is None:
        raise PoseopsError("generalisation-cohort images need the labeled project to read them from")
    log.info("predicting %d generalisation-cohort images from %s", len(held), source_project)
    return pd.concat([preds, predict(pytorch_config, snapshot, source_project, list(held),
                                     batch_size=batch_size, device=device,
                                     multi_animal=multi_animal)], ignore_index=True)
