"""Training losses by name. All take a per-class weight vector and reduce per-sample losses by hand.

``create_loss(cfg, train_counts)`` returns ``loss(logits, targets, class_weights) -> scalar``:

- ``ce``: weighted cross-entropy;
- ``focal``: ``(1 - p_t)^gamma * CE`` (Lin et al., 2017); gamma = 0 is CE;
- ``ldam``: CE with the true class's logit lowered by ``m_y ~ n_y^(-1/4)``, the largest margin ``max_m``
  (Cao et al., NeurIPS 2019);
- ``logit_adjusted``: CE on ``logits + tau * log(prior)`` (Menon et al., ICLR 2021); ``balanced_softmax``
  is tau = 1 (Ren et al., NeurIPS 2020).

Every loss multiplies the (adjusted) logits by ``cfg.scale`` first and reduces the weighted per-sample losses
with ``cfg.reduction`` (``REDUCTIONS``). The offsets only shape training: predictions use the raw logits.

``distillation_loss`` is the self-distillation term the trainer adds with ``train.distill_weight`` (teacher: the
EMA model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from adaptive_lb.config import LossConfig

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_mean(per_sample: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """``sum_i(w[y_i] * loss_i) / sum_i(w[y_i])``, what ``F.cross_entropy(weight=w)`` does.

    Invariant to a uniform scaling of the weights; on long-tailed data the step stays that of an unweighted
    batch, while ``mean`` shrinks with the batch's average weight.
    """
    w = class_weights[targets]  # (B,)
    return (w * per_sample).sum() / w.sum()


def plain_mean(per_sample: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """``mean_i(w[y_i] * loss_i)``: with mean-one weights, the step of a balanced run."""
    return (class_weights[targets] * per_sample).mean()


Reduction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
REDUCTIONS: dict[str, Reduction] = {"mean": plain_mean, "weighted_mean": weighted_mean}  # loss.reduction


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
                           reduction: str = "mean") -> torch.Tensor:
    """Class-weighted CE for logits ``(B, C)``, targets ``(B,)``, weights ``(C,)``, reduced by ``reduction``."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return REDUCTIONS[reduction](ce, targets, class_weights)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
               gamma: float, reduction: str = "mean") -> torch.Tensor:
    """``w[y_i] * (1 - p_t)^gamma * CE_i`` reduced by ``reduction``; gamma = 0 gives exactly weighted CE."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,) = -log p_t
    return REDUCTIONS[reduction]((1 - torch.exp(-ce)).clamp_min(0) ** gamma * ce, targets, class_weights)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, ``(B,)``, for logits ``(B, C)``
    (Hinton et al., 2015: the T^2 keeps its gradient's scale that of CE as T changes). No gradient flows into
    ``teacher``."""
    log_p_t = F.log_softmax(teacher.detach().float() / temperature, dim=1)  # (B, C)
    log_p_s = F.log_softmax(student.float() / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(dim=1)


def ldam_margins(counts: torch.Tensor, max_m: float) -> torch.Tensor:
    """``m_c = max_m * (n_min / n_c)^(1/4)``: proportional to ``n_c^(-1/4)``, the rarest class at ``max_m``."""
    m = counts.double().clamp_min(1) ** -0.25
    return (m * (max_m / m.max())).float()


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    """``log(n_c / n)``, ``(C,)``; a class without samples counts as one so the log stays finite."""
    n = counts.double().clamp_min(1)
    return (n / n.sum()).log().float()


def create_loss(cfg: LossConfig, train_counts: torch.Tensor) -> Loss:
    """The loss ``cfg.name`` for training class counts ``(C,)``; constants go to the logits' device lazily."""
    s, r = cfg.scale, cfg.reduction
    if cfg.name == "focal":
        return lambda z, y, w: focal_loss(s * z, y, w, cfg.gamma, r)
    if cfg.name == "ldam":
        margins = ldam_margins(train_counts, cfg.max_m)  # (C,)

        def ldam(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            shift = F.one_hot(y, z.shape[1]) * margins.to(z.device)  # (B, C): m_y on the true class only
            return weighted_cross_entropy(s * (z.float() - shift), y, w, r)
        return ldam
    if cfg.name in ("logit_adjusted", "balanced_softmax"):
        tau = 1.0 if cfg.name == "balanced_softmax" else cfg.tau
        offset = tau * log_prior(train_counts)  # (C,)
        return lambda z, y, w: weighted_cross_entropy(s * (z.float() + offset.to(z.device)), y, w, r)
    return lambda z, y, w: weighted_cross_entropy(s * z, y, w, r)
