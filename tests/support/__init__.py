"""Helpers shared by several test modules (test files never import each other).

pytest puts ``tests/`` on ``sys.path`` (rootdir conftest, ``prepend`` import mode), so tests import
``support.<module>``; subprocesses that need these modules (the sweep workers' ``--train-fn
support.sweep_doubles:sleepy_train``) get ``tests/`` on their ``PYTHONPATH``.

- ``e2e``: clean-clone copies of this repository, shell calls, openfield project variants.
- ``refine``: a git + DVC repository holding the demo, the ground-truth "annotator".
- ``train``: tiny CPU training params, MLflow-history checks, a training killed mid-run.
- ``shared_model``: the session's learned small-demo model (``small_demo_model``) and its copies.
- ``sweep_doubles``: the labelled TEST DOUBLE of ``train_model`` for the sweep orchestration tests.
- ``sweep``: sweep workspaces and Optuna/MLflow look-ups for the distributed sweep tests.
- ``pg``: a throw-away PostgreSQL server (the ``postgres_url`` fixture lives in conftest).
- ``tables``: synthetic single-animal labels / predictions / split tables.
- ``multianimal``: synthetic multi-animal labels / predictions tables.
- ``curves``: synthetic learning curves of each diagnosis kind.
- ``params``: small params.yaml writers for CLI stage tests.
"""
