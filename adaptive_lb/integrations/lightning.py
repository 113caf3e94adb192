"""``RecallBalancerCallback``: the closed loop in a Lightning ``Trainer``.

The contract with your ``LightningModule``:

- ``training_step`` returns ``balancer.loss(logits, y)`` (the module holds the same balancer as the callback);
- ``validation_step`` returns the held-out logits and labels, as ``{"logits": logits, "y": y}`` or as a tuple
  ``(logits, y)``; the callback observes them (dataloader 0 only: further validation loaders are not read);
- the callback steps the balancer in ``on_validation_epoch_end`` of ``fit`` (never in the sanity check, nor in
  ``Trainer.validate``, which only measures) and logs the
  stats of ``RecallBalancer.step`` (``recall/<class>``, ``weight/``, ``aug/``, ``offset/<class>``,
  ``recall_mean``, ``recall_std``, ``recall_worst``) with ``pl_module.log_dict``;
- the balancer's state is checkpointed with the callback (``state_dict`` / ``load_state_dict``), so
  ``Trainer.fit(ckpt_path=...)`` resumes the controller where it was.

Under DDP every rank observes its shard and ``step`` gathers them (``RecallBalancer``), so all ranks agree.
Needs Lightning (``pip install adaptive_lb[lightning]``), imported only by this module.
"""

from __future__ import annotations

from typing import Any

import torch

from adaptive_lb.balancer import RecallBalancer

try:
    from lightning.pytorch import Callback
except ImportError:
    raise ImportError("adaptive_lb.integrations.lightning needs Lightning: "
                      "pip install adaptive_lb[lightning]") from None


def logits_and_labels(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, C), labels (B,))`` from what ``validation_step`` returned (see the module docstring)."""
    if isinstance(outputs, dict) and "logits" in outputs and "y" in outputs:
        return outputs["logits"], outputs["y"]
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2:
        return outputs[0], outputs[1]
    raise TypeError("RecallBalancerCallback needs validation_step to return {'logits': logits, 'y': y} or "
                    f"(logits, y); it returned {type(outputs).__name__}")


def _fitting(trainer: Any) -> bool:
    """A validation run inside ``fit``, past the sanity check: the one that drives the controller."""
    return not trainer.sanity_checking and trainer.state.fn == "fit"


class RecallBalancerCallback(Callback):
    """Observes validation logits, steps ``balancer`` every validation epoch, logs its stats, checkpoints it."""

    def __init__(self, balancer: RecallBalancer, log: bool = True) -> None:
        self.balancer, self.log = balancer, log

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not _fitting(trainer) or dataloader_idx != 0:
            return
        self.balancer.observe(*logits_and_labels(outputs))

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not _fitting(trainer):
            return
        stats = self.balancer.step()
        if self.log:
            pl_module.log_dict(stats)  # the same numbers on every rank (step gathers), so no sync_dist

    def state_dict(self) -> dict[str, Any]:
        return self.balancer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.balancer.load_state_dict(state_dict)
