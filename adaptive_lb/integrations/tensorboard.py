"""TensorBoard logging of a CLI run (``train.loggers: [tensorboard]``), into ``<run>/tensorboard/``.

Every epoch (step = epoch number): per class ``heldout_tpr/<class>`` (the control split the controller reads),
``select_tpr/`` and ``test_tpr/`` (when evaluated that epoch), the action applied that epoch (``weight/``,
``aug/``, ``offset/<class>``), and per split ``<split>/accuracy``, ``balanced_accuracy``, ``tpr_std``,
``worst_tpr``, plus ``train/loss`` and ``train/lr``. Open with ``tensorboard --logdir runs/``.
Needs the ``tensorboard`` package (``pip install adaptive_lb[tensorboard]``); it is imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_lb.balancer import per_class_stats
from adaptive_lb.callbacks import Callback
from adaptive_lb.errors import ConfigError

SPLITS = ("heldout", "select", "test")
HEADLINE = ("accuracy", "balanced_accuracy", "tpr_std", "worst_tpr")


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; a one-line ``ConfigError`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.loggers=[tensorboard] needs TensorBoard: pip install adaptive_lb[tensorboard] "
                          "(or drop tensorboard from train.loggers)") from None
    return SummaryWriter


def epoch_scalars(record: dict, class_names: Sequence[str]) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record, by tag (see the module docstring)."""
    blocks = {split: record[split] for split in SPLITS if record.get(split)}  # test: None when not evaluated
    out = per_class_stats(class_names, **{f"{split}_tpr": b["tpr"] for split, b in blocks.items()},
                          weight=record["class_weights"], aug=record["aug_intensity"], offset=record["logit_margin"])
    out.update({f"{split}/{key}": float(b[key]) for split, b in blocks.items() for key in HEADLINE})
    out.update({"train/loss": float(record["train_loss"]), "train/lr": float(record["lr"])})
    return out


class TensorBoardLogger(Callback):
    """Writes ``epoch_scalars`` of every epoch's record to ``log_dir`` (one event file per fit; flushed per epoch)."""

    def __init__(self, log_dir: Path) -> None:
        self.writer_class, self.log_dir = summary_writer(), Path(log_dir)
        self.writer: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        # after --resume, steps past the checkpoint's epoch (an epoch cut off by the interruption) are dropped
        self.writer = self.writer_class(str(self.log_dir), purge_step=trainer.epoch + 1 if trainer.epoch else None)

    def on_epoch_end(self, trainer: Any, record: dict) -> None:
        for key, value in epoch_scalars(record, trainer.data.class_names).items():
            self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        self._close()

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
