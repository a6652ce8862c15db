"""MLflow tracking: nothing a training logs is lost while the tracking server is away.

    runs     tracking URI, experiments, metric names, registry description and test errors
    outbox   the journal every MLflow operation of a run goes through, and its sender
    sync     `poseops sync`'s library side: send buffered journals, keep unsent ones aside
    hooks    DeepLabCut's logger hook (per-epoch metrics into a training session)
    system   MLflow system metrics (CPU, memory, GPU) of a run
"""
