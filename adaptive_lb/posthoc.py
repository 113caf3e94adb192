"""Post-hoc corrections: per-class logit biases ``b (C,)`` added at prediction time, after training.

- ``equalise``: biases fitted on the held-out split so that its per-class TPR is as even as possible
  (the cheap baseline the closed loop has to beat: one ERM run, then a fit on cached logits);
- ``logit_adjust``: ``b = -tau * log(prior)`` (Menon et al., ICLR 2021, post-hoc form).

Pure functions of logits and labels; the trainer caches the held-out logits once and calls them.
"""

from __future__ import annotations

import torch

from adaptive_lb.losses import log_prior

STEP_SPAN = 0.01  # the equalise step decays geometrically to this share of its start over the iterations


def per_class_recall(logits: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """TPR ``(C,)`` of ``argmax(logits + bias)``; logits ``(N, C)``, labels ``(N,)``, every class present."""
    num = logits.shape[1]
    hit = (logits + bias).argmax(dim=1) == labels  # (N,)
    return torch.bincount(labels, weights=hit.double(), minlength=num) / torch.bincount(labels, minlength=num)


def equalising_biases(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 400,
                      spread_weight: float = 1.0) -> torch.Tensor:
    """Centred biases ``(C,)`` that even out the per-class TPR of ``argmax(logits + b)``.

    TPR is a step function of ``b``, so there is no gradient: each iteration raises the bias of classes
    below the mean TPR and lowers it above, ``b += step * (mean(tpr) - tpr)``, with a step that starts
    at 4 logit standard deviations and decays geometrically to 1 % of that. Of all iterates the one with
    the highest ``mean(tpr) - spread_weight * std(tpr)`` is kept (pure std minimisation would happily
    even every class out at a low TPR), so the result is never worse on the fitting split than no bias.
    """
    logits = logits.double()
    bias = torch.zeros(logits.shape[1], dtype=torch.float64)
    step0 = 4.0 * float(logits.std()) or 1.0
    best_key, best = None, bias.clone()
    for k in range(iterations):
        tpr = per_class_recall(logits, labels, bias)
        key = round(spread_weight * float(tpr.std(unbiased=False)) - float(tpr.mean()), 12)
        if best_key is None or key < best_key:
            best_key, best = key, bias.clone()
        bias = bias + step0 * STEP_SPAN ** (k / max(iterations - 1, 1)) * (tpr.mean() - tpr)
        bias = bias - bias.mean()
    return best.float()


def logit_adjust_biases(train_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """``-tau * log(n_c / n)``, ``(C,)``: rare classes get their logits raised."""
    return -tau * log_prior(train_counts)
