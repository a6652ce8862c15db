"""Issue 21: evaluate's memory does not grow with the number of frames (images read one batch at
a time, no read-ahead, the heap's freed pages returned before each batch), DLC's PAF assembly
runs one image at a time (same poses), and the PAF pruning after training runs on a capped
number of frames. A tiny maDLC project with a random-weight resnet_50 (DLC's PAF head), built by
benchmarks/evaluate_memory.py."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
W, H = 160, 120


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import evaluate_memory
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return evaluate_memory


@pytest.fixture(scope="module")
def ma_model(tmp_path_factory):
    """(project dir, pytorch_config.yaml, snapshot) of a 16-frame maDLC project: 12 DLC train
    frames, 4 DLC "test" frames (our validation frames)."""
    root = tmp_path_factory.mktemp("mem") / "project"
    cfg, snapshot = _bench().make_project(root, W, H, net="resnet_50", heatmap_bias=0.0, n=16)
    return root, cfg, snapshot


def _traced_predict(root: Path, cfg: Path, snapshot: Path, images: list[str],
                    batch_size: int = 8) -> tuple[int, int]:
    """(peak, retained) bytes traced by tracemalloc over one ``predict`` call, the returned table
    still held."""
    from poseops.dlc.inference import predict

    gc.collect()
    tracemalloc.start()
    try:
        table = predict(cfg, snapshot, root, images, batch_size=batch_size, device="cpu",
                        multi_animal=True)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert set(table["image"]) == set(images)
    return peak, retained


def _silent_snapshot(snapshot: Path) -> Path:
    """The snapshot with its bodypart heatmaps pushed far below DLC's peak threshold: no peak,
    no PAF assembly, so what predict itself keeps per frame is all that can grow."""
    import torch

    out = snapshot.with_name("snapshot-silent.pt")
    if not out.exists():
        state = torch.load(snapshot, map_location="cpu", weights_only=False)
        keys = [k for k in state["model"] if k.startswith("heads.bodypart.heatmap_head.")
                and k.endswith(".bias")]
        state["model"][sorted(keys)[-1]] -= 40.0
        torch.save(state, out)
    return out


def test_evaluate_peak_memory_does_not_grow_with_frames(ma_model):
    """predict (what `poseops evaluate` runs) on 20 and on 80 frames: the working memory above
    the returned table (tracemalloc peak minus what is still held) stays within 0.5 MB. Keeping
    every image's runner outputs and per-image tables until the end grows it by ~1.2 MB here
    (~20 kB a frame, whatever the rest of the peak)."""
    root, cfg, snapshot = ma_model
    snapshot = _silent_snapshot(snapshot)
    images = _bench().add_frames(root, 80, W, H)
    _traced_predict(root, cfg, snapshot, images[:8])  # warm-up: lazy imports, caches
    peak20, kept20 = _traced_predict(root, cfg, snapshot, images[:20])
    peak80, kept80 = _traced_predict(root, cfg, snapshot, images)
    assert kept80 > kept20  # the table itself grows (4x the rows)
    work20, work80 = peak20 - kept20, peak80 - kept80
    assert work80 - work20 < 0.5e6, (work20, work80)


def test_paf_assembly_memory_does_not_grow_with_batch_size(ma_model):
    """A barely trained PAF model (peaks everywhere) on 8 frames: predict's working memory at
    batch 8 stays within 25 % of batch 1's. DLC's predictor pairs the peaks of the whole batch
    at once (~6x here; ~20 GB for 8 frames at 1280x720, the OOM of issue 21)."""
    root, cfg, snapshot = ma_model
    images = _bench().add_frames(root, 8, W, H)
    _traced_predict(root, cfg, snapshot, images[:2], batch_size=1)  # warm-up
    peak1, kept1 = _traced_predict(root, cfg, snapshot, images, batch_size=1)
    peak8, kept8 = _traced_predict(root, cfg, snapshot, images, batch_size=8)
    assert peak8 - kept8 < 1.25 * (peak1 - kept1), (peak1 - kept1, peak8 - kept8)


def test_paf_assembly_per_image_gives_dlc_batched_poses(ma_model):
    """The runner evaluate uses (PAF assembly one image at a time) returns exactly the poses of
    DLC's own runner, which assembles the whole batch at once."""
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner

    from poseops.dlc.files import read_pytorch_config
    from poseops.dlc.inference import pose_runner

    root, cfg, snapshot = ma_model
    images = [str(root / i) for i in _bench().add_frames(root, 6, W, H)]
    model_cfg = read_pytorch_config(cfg)
    dlc = get_pose_inference_runner(model_config=model_cfg, snapshot_path=str(snapshot),
                                    batch_size=4, device="cpu")
    ours = pose_runner(model_cfg, snapshot, batch_size=4, device="cpu")
    want = [o["bodyparts"] for o in dlc.inference(images)]
    got = [o["bodyparts"] for o in ours.inference(images)]
    assert (np.asarray(want)[..., 2] > 0).any()  # some animal assembled: a real comparison
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _count_forwards(monkeypatch) -> list[int]:
    """Patch DLC's PoseModel.forward to record the batch size of every forward pass."""
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    calls: list[int] = []
    forward = PoseModel.forward

    def counting(self, x, *args, **kwargs):
        calls.append(int(x.shape[0]))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(PoseModel, "forward", counting)
    return calls


def test_paf_pruning_uses_at_most_the_cap_of_frames(ma_model, monkeypatch):
    """train.paf_prune_frames = 3 on 12 train + 4 validation frames: DLC's benchmark_paf_graphs
    runs the network on at most 3 train and 3 validation frames (6 images); it still writes the
    kept edges to pytorch_config.yaml."""
    import yaml

    from poseops.train.project import prune_paf_graph

    root, cfg, snapshot = ma_model
    before = cfg.read_text()
    calls = _count_forwards(monkeypatch)
    ds = SimpleNamespace(multianimal=True, config_path=root / "config.yaml")
    try:
        edges = prune_paf_graph(ds, snapshot, max_frames=3)
        written = yaml.safe_load(cfg.read_text())["model"]["heads"]["bodypart"]["predictor"]
        capped = list(calls)
        calls.clear()
        cfg.write_text(before)  # the full graph again (DLC skips an already pruned graph)
        prune_paf_graph(ds, snapshot, max_frames=0)  # 0: no cap, DLC's own pruning
    finally:
        cfg.write_text(before)
    assert 0 < sum(capped) <= 6, capped
    assert edges and written["edges_to_keep"] == edges
    assert sum(calls) == 16, calls  # uncapped: every train and validation frame


def test_images_are_read_one_batch_at_a_time(ma_model, monkeypatch):
    """predict on 40 frames at batch 8: when the network starts a batch, no image past that
    batch has been read yet, so the images held in memory are one batch, whatever the number
    of frames. DLC's default runner reads ahead in a thread (a queue of 4 stacked batches: up
    to ~5 batches of whole float32 frames, 88 MB each at 8 x 1280x720; the growth of issue 21's
    benchmark, 2962 MB at 8 frames -> 3256 MB at 16)."""
    import time

    from deeplabcut.pose_estimation_pytorch.data.preprocessor import ComposePreprocessor
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    from poseops.dlc.inference import predict

    root, cfg, snapshot = ma_model
    images = _bench().add_frames(root, 40, W, H)
    read, seen = [0], []  # images preprocessed; (read, predicted incl. this batch) per forward
    preprocess, forward = ComposePreprocessor.__call__, PoseModel.forward

    def counting_preprocess(self, image, context):
        read[0] += 1
        return preprocess(self, image, context)

    def slow_forward(self, x, *args, **kwargs):
        time.sleep(0.05)  # a forward pass that takes longer than reading an image (as on a GPU)
        seen.append((read[0], (seen[-1][1] if seen else 0) + int(x.shape[0])))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(ComposePreprocessor, "__call__", counting_preprocess)
    monkeypatch.setattr(PoseModel, "forward", slow_forward)
    table = predict(cfg, snapshot, root, images, batch_size=8, device="cpu", multi_animal=True)
    assert set(table["image"]) == set(images) and read[0] == 40
    assert [n for _, n in seen] == [8, 16, 24, 32, 40]
    ahead = [r - n for r, n in seen]
    assert max(ahead) <= 0, seen


def _resident_mb() -> float:
    """This process's resident memory (Linux: /proc/self/statm), MB."""
    import resource

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_a_batch_frees_is_returned_before_the_next_batch(ma_model, monkeypatch):
    """The heap pages a batch's forward pass frees are not resident when the next batch starts.

    On 1280x720 frames (benchmarks/evaluate_memory.py) glibc serves the second and later forward
    passes' activations from its heap, and ~200 MB of them, freed but held between live chunks,
    stayed resident: each batch's peak started that much higher (2924 MB at 8 frames, 3147 MB
    at 16). Here the first batch's forward pass leaves more of the same: 400 MB of 64 kB
    buffers freed between small live ones (so glibc can neither merge them into the top of the
    heap nor trim them by itself); resident memory when the second batch starts is within
    40 MB of the first's."""
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    from poseops.dlc.inference import predict

    root, cfg, snapshot = ma_model
    images = _bench().add_frames(root, 24, W, H)
    forward, at_start, pinned = PoseModel.forward, [], []

    def leaky_forward(self, x, *args, **kwargs):
        at_start.append(_resident_mb())
        out = forward(self, x, *args, **kwargs)
        if len(at_start) == 1:  # the first batch's freed activations, held between live bytes
            freed = []
            for _ in range(6400):
                freed.append(b"\x01" * 65536)
                pinned.append(b"\x02" * 1024)
            del freed
        return out

    monkeypatch.setattr(PoseModel, "forward", leaky_forward)
    predict(cfg, snapshot, root, images, batch_size=8, device="cpu", multi_animal=True)
    assert len(at_start) == 3 and len(pinned) == 6400
    assert max(at_start[1:]) - at_start[0] < 40, at_start
