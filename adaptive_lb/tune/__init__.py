"""``adaptive-lb tune``: Optuna studies of the controller (space, storage, study, final step, runner)."""
