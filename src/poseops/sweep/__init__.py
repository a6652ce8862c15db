"""Hyperparameter sweeps with Optuna, shared across GPU servers, one MLflow run each.

Every worker (one per GPU, on any number of machines) runs the same command against the same study
name and storage; Optuna hands out trials, and each trial trains the real DeepLabCut model with
the train package's ``train_model``. The validation error is reported after every epoch, so the
pruner (successive halving by default; median / percentile / hyperband / patience) stops hopeless
trials early. The test split is never used to choose, and no trial run carries a test error (a
number seen on every trial is a number chosen on): ``poseops sweep --promote`` measures it once,
for the promoted (best) trial, whose working copy the sweep keeps for that (``sweep.log_test``).

MLflow layout: one parent run per study (its id is stored in the study's user attrs, so every
worker's trials nest under it), one nested child run ``trial-<n>`` per trial (created by the
training logger; the sweep adds the trial's state, params and final metrics), and the study
summary (best trial, importances, history and parallel-coordinate figures) on the parent.

Robustness: the study is created exclusively (``create_study`` without ``load_if_exists``), so
exactly one worker makes the MLflow parent; storage set-up is retried (concurrent table creation
races on an empty database). With an RDB storage (SQLite, PostgreSQL) every running trial sends a
heartbeat; a worker that dies mid-trial leaves a stale trial that the next worker marks FAIL, and
``RetryHeartbeatStaleTrialCallback`` re-queues it with the same parameters. A worker with nothing
left to start waits for the running trials (re-running dead workers' ones), then writes the
summary; the last one closes the MLflow parent run.

The objective is the best validation error over a trial's epochs (DLC keeps the snapshot with the
lowest validation error). DLC reports NaN while no prediction matches a label (young models); the
sweep counts such an epoch as the image diagonal, the worst possible error.

Modules, bottom up: ``space`` (search space, fingerprint, the trial inputs), ``study`` (storage,
sampler, pruner, race-free study creation), ``runs`` (MLflow parent and child runs, tags),
``worker`` (the objective and the worker loop), ``results`` (trials table, figures, summary,
the promoted trial's test error), ``launch`` (``--gpus`` and ``--slurm`` launchers). The command
(params.yaml, argv, ``--promote``) is ``poseops.commands.sweep``.
"""

import logging

log = logging.getLogger(__name__)
