"""Bridges to other tools, each importing its package only when used: ``lightning`` (``RecallBalancerCallback``)
and ``tensorboard`` (the ``train.loggers`` callback of the CLI trainer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adaptive_lb.callbacks import Callback


def create_loggers(names: Sequence[str], run_path: Path) -> list[Callback]:
    """The trainer callbacks of ``train.loggers`` for the run dir ``run_path``. Each imports its package here, so a
    missing one is a one-line ``ConfigError`` before anything is written; files appear when the fit starts."""
    from adaptive_lb.integrations.tensorboard import TensorBoardLogger

    factories = {"tensorboard": lambda: TensorBoardLogger(run_path / "tensorboard")}
    return [factories[name]() for name in names]
