"""Scoring a model's predictions against the labels: pure functions over tidy pandas tables.

- :mod:`~poseops.evaluate.common`: shared column names, per-bodypart pcutoff, reference lengths,
  image checks;
- :mod:`~poseops.evaluate.metrics`: the errors table, stratified table, headline, PCK, condition
  bias;
- :mod:`~poseops.evaluate.matching`: multi-animal OKS matching, identity swaps, DLC's mAP / mAR;
- :mod:`~poseops.evaluate.diagnose`: the training diagnosis from loss curves and errors;
- :mod:`~poseops.evaluate.tables`: everything the evaluate stage computes after inference.
"""
