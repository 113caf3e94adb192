"""Exponential moving average (EMA) of a model's weights and BatchNorm statistics (timm ``ModelEmaV3`` shape).

After every optimiser step ``t`` (0-based count of updates so far) each floating-point tensor of the model's
state (parameters *and* float buffers such as BatchNorm running means/variances) moves towards the live
model's::

    ema <- decay_t * ema + (1 - decay_t) * live,   decay_t = min(decay, (1 + t) / (10 + t))  (warm-up)

Integer buffers (BatchNorm's ``num_batches_tracked``) are copied. Averaging the BatchNorm statistics matters:
copying them from the live model instead left the EMA swinging almost as much as the raw model (DESIGN.md).
The update is one ``torch._foreach_lerp_`` over all float tensors, on the model's device.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """Decay used for update number ``step`` (0-based): ``min(decay, (1+step)/(10+step))`` with warm-up.

    The warm-up keeps the first updates from being dominated by the random initial weights: update 0 keeps
    10 % of the old average, update 90 keeps 91 %, and ``decay`` caps it (0.995 from step 1,790 on).
    """
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class ModelEma:
    """A frozen copy of ``model`` (``.module``, always in eval mode) averaged by :meth:`update`."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0  # optimiser steps averaged in so far (drives the warm-up)
        self._source: nn.Module | None = None
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = \
            ([], [], [], [])

    def _tensor_pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(ema floats, live floats, ema ints, live ints), in state-dict order; cached per live model."""
        if model is not self._source:
            ema_sd, live_sd = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
            if list(ema_sd) != list(live_sd):
                raise ValueError("ModelEma.update: the model's state keys differ from the averaged copy's")
            floats = [k for k, v in ema_sd.items() if v.is_floating_point()]
            ints = [k for k, v in ema_sd.items() if not v.is_floating_point()]
            self._pairs = ([ema_sd[k].data for k in floats], [live_sd[k].data for k in floats],
                           [ema_sd[k].data for k in ints], [live_sd[k].data for k in ints])
            self._source = model
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Average the live ``model`` in (one optimiser step); returns the decay used."""
        decay = ema_decay_at(self.updates, self.decay, self.warmup)
        ema_f, live_f, ema_i, live_i = self._tensor_pairs(model)
        torch._foreach_lerp_(ema_f, live_f, 1.0 - decay)  # ema += (1 - decay) * (live - ema), all at once
        for e, v in zip(ema_i, live_i, strict=True):
            e.copy_(v)
        self.updates += 1
        return decay

    def state_dict(self) -> dict:
        """The averaged weights and buffers, and the update count (for an exact resume)."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])  # copies in place: cached tensor pairs stay valid
        self.updates = int(state["updates"])
