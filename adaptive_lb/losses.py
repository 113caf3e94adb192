"""Training losses. All take a per-class weight vector and reduce per-sample losses by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """``mean_i(w[y_i] * CE_i)`` for logits ``(B, C)``, targets ``(B,)``, weights ``(C,)`` with mean 1.

    Not ``F.cross_entropy(weight=w)``: that divides by the batch's sum of ``w[y]``, which cancels any
    uniform scaling of the weights and drifts with the batch's class make-up.
    """
    per_sample = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,)
    return (class_weights[targets] * per_sample).mean()
