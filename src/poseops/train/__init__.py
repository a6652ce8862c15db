"""Training: a DeepLabCut 3 (PyTorch engine) model on our split, tracked in one MLflow run.

DLC is given trainIndices = our TRAIN frames and testIndices = our VAL frames, so its per-epoch
evaluation and best-snapshot choice never see the test frames. Every epoch's metrics reach MLflow
live (through the outbox of poseops.tracking: an unreachable server loses nothing); an
interrupted training resumes from its last saved state in the same MLflow run.

Modules, bottom up: ``record`` (run.json, :class:`~poseops.train.record.TrainResult` read back
for later stages), ``project`` (the working DLC project built from labels + split, its
pytorch_config.yaml, PAF graph pruning), ``session`` (DLC's training loop hooked: per-epoch
commit, resume states, dataset fingerprints), ``model`` (the MLflow pyfunc model of a snapshot),
``trainer`` (:func:`~poseops.train.trainer.train_model`: the orchestration). The settings are
:class:`poseops.config.train.TrainParams`; the command (params.yaml, ``-P`` overrides) is
``poseops.commands.train``.
"""

import logging

log = logging.getLogger(__name__)
