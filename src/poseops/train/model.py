"""The MLflow pyfunc pose model: a DeepLabCut 3 snapshot logged as an MLflow model that loads
anywhere poseops is installed and predicts tidy tables.

``mlflow.pyfunc.log_model(python_model=DLCPoseModel())`` pickles the model with cloudpickle: the
class is made inside :func:`_pyfunc_class`, so its code travels by value in the pickle, while the
module-level functions it calls (:func:`predict_images`, :func:`_cuda_available`, poseops.dlc)
are pickled by reference: loading needs poseops installed (the model's pip requirements pin it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from poseops.dlc.inference import as_image_list, individuals_table, stream_tables

log = logging.getLogger(__name__)


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class DLCPoseModel(mlflow.pyfunc.PythonModel):
        """A DeepLabCut 3 snapshot as an MLflow pyfunc model.

        predict(images) with images = a list of image paths, a DataFrame with an `image`
        column (paths), one RGB uint8 array (H, W, 3) or a stack (N, H, W, 3). Returns the tidy
        predictions table: one row per (image, bodypart) with columns image (path or index),
        individual, bodypart, x, y, likelihood (pixel coordinates of the input image).
        """

        def load_context(self, context: Any) -> None:
            from poseops.dlc.files import read_pytorch_config

            cfg = read_pytorch_config(Path(context.artifacts["pytorch_config"]))
            self.bodyparts = list(cfg["metadata"]["bodyparts"])
            self.individuals = list(cfg["metadata"].get("individuals") or ["animal"])
            # multi-animal projects: unique bodyparts come out under individual "single"
            self.unique_bodyparts = list(cfg["metadata"].get("unique_bodyparts") or [])
            self._cfg = cfg
            self._snapshot = context.artifacts["snapshot"]
            self._runner = None

        def _get_runner(self) -> Any:
            if self._runner is None:
                from poseops.dlc.inference import pose_runner

                device = os.environ.get("POSEOPS_DEVICE") or (
                    "cuda" if _cuda_available() else "cpu"
                )
                # batches hold images of one size (inference_by_size): mixed sizes are fine
                # PAF assembly one image at a time (bounded memory, same poses)
                self._runner = pose_runner(self._cfg, self._snapshot, batch_size=8,
                                           device=device)
            return self._runner

        def predict(self, context, model_input, params=None):  # noqa: ANN001 (MLflow reads hints)
            return predict_images(self._get_runner(), model_input, self.bodyparts, self.individuals,
                                  self.unique_bodyparts)

    return DLCPoseModel


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def predict_images(
    runner: Any, model_input: Any, bodyparts: list[str], individuals: list[str],
    unique_bodyparts: list[str] | None = None,
) -> Any:
    """Run a DLC inference runner on images; tidy table image, individual, bodypart, x, y,
    likelihood (one row per image x individual x bodypart; a multi-animal model's
    ``unique_bodyparts`` follow under individual ``single``). Streams: each chunk of images is
    flattened to rows before the next one runs (memory flat in the number of images)."""
    images, names = as_image_list(model_input)

    def flatten(chunk_names: Any, outputs: Any) -> Any:
        return individuals_table(chunk_names, outputs, bodyparts, individuals, unique_bodyparts)

    return stream_tables(runner, images, names, flatten)


INPUT_DOC = ("image paths (a list, or a DataFrame column 'image') or RGB uint8 arrays "
             "(H, W, 3) or (N, H, W, 3)")


def model_signature() -> Any:
    """The pyfunc model's signature: the tidy keypoint table (image, individual, bodypart, x, y,
    likelihood) out. The input side is left open (MLflow would enforce one schema, and the model
    takes paths or arrays): :data:`INPUT_DOC` says what goes in (the model's metadata ``input``),
    and the input example shows a path."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = None
    outputs = Schema([ColSpec("string", "image"), ColSpec("string", "individual"),
                      ColSpec("string", "bodypart"), ColSpec("double", "x"),
                      ColSpec("double", "y"), ColSpec("double", "likelihood")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pose_model(pytorch_config: Path, snapshot: Path, name: str = "model",
                   model_id: str | None = None, example_image: str | None = None) -> Any:
    """Log the DLC snapshot as a pyfunc model in the active run; returns MLflow's ModelInfo.
    ``model_id``: finish that (PENDING) logged model instead of making a new one;
    ``example_image``: an image path saved as the input example (MLflow predicts it once)."""
    import mlflow
    import pandas as pd

    import poseops

    cls = _pyfunc_class()
    example = pd.DataFrame({"image": [str(example_image)]}) if example_image else None
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=cls(),
        signature=model_signature(),
        input_example=example,
        metadata={"input": INPUT_DOC},
        artifacts={"pytorch_config": str(pytorch_config), "snapshot": str(snapshot)},
        pip_requirements=[
            "deeplabcut==3.0.2",
            "torch==2.14.1",
            "torchvision==0.29.1",
            f"poseops=={poseops.__version__}",
        ],
        model_id=model_id,
    )
