"""Optimisers and per-step learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from adaptive_lb.config import OptimConfig


def create_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov, L2) or AdamW (decoupled decay) over all parameters."""
    if cfg.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999),
                             weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based): linear warm-up, then cosine or flat."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def create_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, epochs: int,
                     steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per batch; its ``state_dict`` goes into every checkpoint."""
    total = epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
                                                   cycle_momentum=cfg.name == "sgd" and cfg.momentum > 0)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule))
