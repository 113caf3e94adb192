"""Controllers: per-epoch held-out TPR in, per-class actuator settings out.

A controller is pure (tensors in, action out) and never holds the trainer, like timm's schedulers; the
trainer applies the action. ``static`` (fixed weights; all ones = ERM) is the only one so far; the closed
loop adds its controllers to ``CONTROLLERS``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from adaptive_lb.config import ControllerConfig
from adaptive_lb.errors import ConfigError


class ControlAction(NamedTuple):
    """What the trainer applies for the next epoch."""

    class_weights: torch.Tensor  # (C,) finite, > 0, mean 1
    aug_intensity: torch.Tensor  # (C,) in [0, 1]; 0 = no augmentation
    logit_margin: torch.Tensor   # (C,) added to training logits; 0 when unused


class Controller(Protocol):
    """Per-epoch update from held-out TPR ``(C,)`` and held-out class counts ``(C,)``."""

    def initial(self) -> ControlAction: ...
    def update(self, epoch: int, tpr: torch.Tensor, counts: torch.Tensor) -> ControlAction: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def neutral_action(num_classes: int) -> ControlAction:
    """Unit weights, no augmentation, no margins: plain ERM."""
    return ControlAction(torch.ones(num_classes), torch.zeros(num_classes), torch.zeros(num_classes))


class StaticController:
    """Fixed per-class weights (normalised to mean 1), whatever the TPR; all ones is ERM."""

    def __init__(self, num_classes: int, weights: tuple[float, ...] = ()) -> None:
        if weights and len(weights) != num_classes:
            raise ConfigError(f"controller.weights has {len(weights)} entries but the data has {num_classes} "
                              "classes: give one weight per class or [] for all ones")
        w = torch.tensor(weights, dtype=torch.float32) if weights else torch.ones(num_classes)
        self.action = neutral_action(num_classes)._replace(class_weights=w / w.mean())

    def initial(self) -> ControlAction:
        return self.action

    def update(self, epoch: int, tpr: torch.Tensor, counts: torch.Tensor) -> ControlAction:
        return self.action

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


CONTROLLERS = {"static": lambda cfg, num_classes: StaticController(num_classes, cfg.weights)}


def create_controller(cfg: ControllerConfig, num_classes: int) -> Controller:
    """Build controller ``cfg.name`` for ``num_classes`` classes."""
    if cfg.name not in CONTROLLERS:
        raise ConfigError(f"controller.name: unknown controller '{cfg.name}'; use one of {', '.join(CONTROLLERS)}")
    return CONTROLLERS[cfg.name](cfg, num_classes)
