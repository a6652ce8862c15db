"""Trajectories and behaviour (issue 23): label-free quality of predicted trajectories, behavioural
endpoints, agreement with manual scoring and condition effects. Pure numpy/pandas/scipy over tidy
tables (science floor: imports core, config and dlc only)."""
