"""Pure weight functions: per-class statistics in, per-class loss weights out.

TPR-driven targets ``W(tpr)`` for the controllers take held-out TPR ``(C,)`` and an exponent (not yet
normalised); count-based weights take training class counts ``(C,)`` and come out with mean 1.
"""

from __future__ import annotations

import torch

from adaptive_lb.errors import DataError

TPR_FLOOR = 1e-3  # TPR (or 1 - TPR) is floored here so that a class at 0 or 1 gets a finite weight


def power_ratio(tpr: torch.Tensor, p: float) -> torch.Tensor:
    """``(1 - (s - avg)/s)^p = (avg/s)^p``: classes below the mean TPR get weights above 1."""
    return (tpr.mean().clamp_min(TPR_FLOOR) / tpr.clamp_min(TPR_FLOOR)) ** p


def cdb(tpr: torch.Tensor, tau: float) -> torch.Tensor:
    """``(1 - s)^tau``, the class-wise difficulty-balanced weight (Sinha et al., ACCV 2020)."""
    return (1 - tpr).clamp_min(TPR_FLOOR) ** tau


def exp_gap(tpr: torch.Tensor, k: float) -> torch.Tensor:
    """``exp(k * (avg - s) / avg)``: exponential in the relative shortfall from the mean TPR."""
    avg = tpr.mean().clamp_min(TPR_FLOOR)
    return torch.exp(k * (avg - tpr) / avg)


TPR_WEIGHTS = {"power_ratio": power_ratio, "cdb": cdb, "exp_gap": exp_gap}


def inverse_freq(counts: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """``n / (C * n_c)`` (sklearn's "balanced", the Keras class_weight recipe), scaled to mean 1."""
    return normalise_mean_one(1.0 / _positive(counts))


def inverse_sqrt(counts: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """``1 / sqrt(n_c)``, scaled to mean 1: a milder inverse frequency."""
    return normalise_mean_one(_positive(counts).rsqrt())


def effective_number(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """``(1 - beta) / (1 - beta^n_c)`` (Cui et al., CVPR 2019, class-balanced loss), scaled to mean 1.

    ``beta = 0`` gives all ones; ``beta -> 1`` tends to inverse frequency.
    """
    n = _positive(counts)
    if beta == 0.0:
        return torch.ones_like(n)
    return normalise_mean_one((1.0 - beta) / -torch.expm1(n * torch.log(torch.tensor(beta, dtype=n.dtype))))


def _positive(counts: torch.Tensor) -> torch.Tensor:
    """Counts as float64, checked: a class with no training sample has no finite count weight."""
    n = counts.double()
    if not bool((n > 0).all()):
        raise DataError(f"count-based class weights need every class in the training data, got counts "
                        f"{counts.tolist()}: check data.long_tail and data.subset_per_class")
    return n


COUNT_WEIGHTS = {"inverse_freq": inverse_freq, "inverse_sqrt": inverse_sqrt, "effective_number": effective_number}


def normalise_mean_one(w: torch.Tensor) -> torch.Tensor:
    """Scale positive weights to mean 1."""
    return w / w.mean()


def bounded_mean_one(w: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """``clamp(c * w, w_min, w_max)`` with the scale ``c`` that makes the mean exactly 1.

    Plain clip-then-renormalise can leave a weight outside the bounds; here ``c`` is found by bisection
    (the mean is non-decreasing in ``c``), so both constraints hold and the order of ``w`` is kept.
    Needs positive ``w`` and ``w_min <= 1 <= w_max``.
    """
    w64 = w.double() / w.double().max()  # max 1, so log c lies in [log w_min, 710]
    lo, hi = -30.0, 700.0  # log c
    for _ in range(100):
        mid = (lo + hi) / 2
        if float((w64 * torch.exp(torch.tensor(mid, dtype=torch.float64))).clamp(w_min, w_max).mean()) < 1.0:
            lo = mid
        else:
            hi = mid
    out = (w64 * torch.exp(torch.tensor(hi, dtype=torch.float64))).clamp(w_min, w_max)
    return normalise_mean_one(out).to(w.dtype)
