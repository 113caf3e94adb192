"""Post-hoc corrections: per-class logit biases ``b (C,)`` added at prediction time, after training.

- ``equalise``: biases fitted on the held-out split to even out its per-class TPR without giving up its
  mean (the cheap baseline the closed loop has to beat: one ERM run, then a fit on cached logits);
- ``logit_adjust``: ``b = -tau * log(prior)`` (Menon et al., ICLR 2021, post-hoc form).

Pure functions of logits and labels; the trainer caches the held-out logits once and calls them.
"""

from __future__ import annotations

import torch

from adaptive_lb.losses import log_prior
from adaptive_lb.metrics import per_class_recall


def equalising_biases(logits: torch.Tensor, labels: torch.Tensor, sweeps: int = 8,
                      spread_weight: float = 1.0) -> torch.Tensor:
    """Centred biases ``(C,)`` maximising ``mean(tpr) - spread_weight * std(tpr)`` of ``argmax(logits + b)``.

    TPR is a step function of ``b``, so there is no gradient: coordinate ascent instead. Each sweep tries,
    for every class in turn, ``GRID`` values of its bias around the current one (all at once, vectorised)
    and keeps the best; the search radius starts at one standard deviation of the logits and halves every
    sweep. A move is taken only if it strictly improves the objective, so the result is never worse on the
    fitting split than no bias, and classes that need no correction keep 0 relative to the rest.
    """
    z = logits.double()
    num = z.shape[1]
    bias = torch.zeros(num, dtype=torch.float64)
    best = float(_objective(per_class_recall(z.argmax(dim=1) == labels, labels, num)[:, None], spread_weight))
    radius = float(z.std()) or 1.0
    for _ in range(sweeps):
        for c in range(num):
            values = bias[c] + torch.linspace(-radius, radius, GRID, dtype=torch.float64)  # (K,)
            scores = _objective(_recall_moving_one(z + bias, labels, c, values - bias[c]), spread_weight)
            k = int(scores.argmax())
            if float(scores[k]) > best + 1e-12:
                best, bias[c] = float(scores[k]), values[k]
        radius /= 2
    return (bias - bias.mean()).float()


GRID = 21  # bias values tried per class and sweep


def _objective(recall: torch.Tensor, spread_weight: float) -> torch.Tensor:
    """``mean - spread_weight * std`` over classes of recall ``(C, K)``, per candidate ``(K,)``."""
    return recall.mean(dim=0) - spread_weight * recall.std(dim=0, unbiased=False)


def _recall_moving_one(zb: torch.Tensor, labels: torch.Tensor, c: int, shifts: torch.Tensor) -> torch.Tensor:
    """Per-class recall ``(C, K)`` of ``argmax`` when class ``c``'s column of ``zb (N, C)`` is shifted by each of
    ``shifts (K,)``. Ties follow ``torch.argmax``: the lowest class index wins, so the fit scores exactly the
    predictions that ``argmax(logits + bias)`` makes afterwards."""
    others = zb.clone()
    others[:, c] = float("-inf")
    top, arg = others.max(dim=1)                                  # (N,) best other class (lowest index on ties)
    zc = zb[:, c:c + 1] + shifts[None, :]                         # (N, K)
    is_c = (zc > top[:, None]) | ((zc == top[:, None]) & (c < arg)[:, None])  # (N, K) prediction becomes c
    pred = torch.where(is_c, torch.full_like(arg, c)[:, None], arg[:, None])  # (N, K)
    return per_class_recall(pred == labels[:, None], labels, zb.shape[1])


def logit_adjust_biases(train_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """``-tau * log(n_c / n)``, ``(C,)``: rare classes get their logits raised."""
    return -tau * log_prior(train_counts)
