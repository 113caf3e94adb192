"""Trainer callbacks: every hook is a no-op unless overridden (Lightning's shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adaptive_lb.trainer import Trainer


class Callback:
    """Override the hooks you need. Hooks run in the order callbacks were given."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch to run (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def on_train_batch_end(self, trainer: Trainer, batch: int, images: int) -> None:
        """After each optimiser step; ``images`` seen so far this epoch. Must not sync the device."""

    def on_train_progress(self, trainer: Trainer, images: int, loss: float) -> None:
        """Every ``train.log_every`` batches, with the epoch's mean training loss so far."""

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        """After the epoch's evaluation and controller update; ``record`` is its metrics.jsonl line."""

    def on_fit_end(self, trainer: Trainer, summary: dict) -> None:
        """After the last epoch; ``summary`` is what summary.json holds."""

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        """When ``fit`` is left by an exception (Ctrl-C included), before it propagates."""
