"""Pure update laws for the closed loop's actuators that change what the network learns (controllers.py composes
them). Each takes the control split's measurement (per-class TPR gap, confusion matrix) and returns a target or
an updated state; the controller damps and bounds them.

- **class-DRO weights** (Sagawa et al., ICLR 2020, per class): ``log q_c += eta * (gap_c - deadband)+`` every
  epoch, weights ``C * ((1 - floor) softmax(log q) + floor / C)`` (mean 1, at least ``floor`` each);
- **pairwise margins** for confused pairs: ``delta_ij`` (``(C, C)``, symmetric, zero diagonal) added to the
  logit of class j for samples of class i in the training loss, i.e.
  ``-log e^{z_y} / (e^{z_y} + sum_{j != y} e^{z_j + delta_yj})``: a margin between the two classes that no
  per-class bias can imitate (a bias shifts a class against all others alike);
- **confusion clusters**: classes joined when their symmetric confusion rate passes a threshold, so one
  augmentation intensity is shared by a whole cluster and cannot become a cue that tells its members apart;
- **confused-pair mixup** (SelMix, Ramasubramanian et al., ICLR 2024): images of a class below the mean are
  blended with images of the classes they are confused with, keeping their own label.
"""

from __future__ import annotations

import torch


def confusion_rates(confusion: torch.Tensor) -> torch.Tensor:
    """Symmetric off-diagonal confusion rates ``(C, C)`` float64: ``(r_ij + r_ji) / 2`` with ``r_ij`` the share of
    class i's samples predicted as j; zero diagonal. ``confusion`` is ``cm[true][predicted]`` ``(C, C)``."""
    cm = confusion.double()
    rates = cm / cm.sum(dim=1, keepdim=True).clamp_min(1)
    sym = (rates + rates.t()) / 2
    return sym.fill_diagonal_(0.0)


def dro_step(log_q: torch.Tensor, gap: torch.Tensor, eta: float, deadband: float) -> torch.Tensor:
    """One exponentiated-gradient step on the class distribution ``log q`` ``(C,)``; only classes whose gap (in
    units of ``gap_scale``, > 0 below the mean TPR) exceeds ``deadband`` gain mass. Centred (softmax-invariant)."""
    out = log_q + eta * (gap - deadband).clamp_min(0)
    return out - out.mean()


def dro_weights(log_q: torch.Tensor, floor: float) -> torch.Tensor:
    """Loss weights ``(C,)`` with mean 1 from ``log q``: ``C * ((1 - floor) softmax(log q) + floor / C)``."""
    num = len(log_q)
    return num * ((1 - floor) * torch.softmax(log_q, dim=0) + floor / num)


def pair_margin_target(confusion: torch.Tensor, gain: float, deadband: float, cap: float) -> torch.Tensor:
    """Target pairwise margins ``(C, C)``: ``gain * (rate_ij - deadband)+`` capped at ``cap`` logits, symmetric."""
    return (gain * (confusion_rates(confusion) - deadband).clamp_min(0)).clamp_max(cap)


def confusion_clusters(confusion: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cluster label ``(C,)`` int64 of every class: connected components of the graph joining i and j when their
    symmetric confusion rate is at least ``threshold`` (labels are the smallest class index in the cluster)."""
    linked = confusion_rates(confusion) >= threshold  # (C, C) bool
    label = torch.arange(len(linked))
    while True:  # label propagation: each class takes the smallest label among its neighbours, (C, C) per round
        neighbour = torch.where(linked, label[None, :], len(label)).min(dim=1).values
        new = torch.minimum(label, neighbour)
        new = new[new]  # and its label's label: a chain of C classes takes ~log C rounds instead of C
        if torch.equal(new, label):
            return label
        label = new


def cluster_mean(values: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """Every class gets the mean of ``values`` ``(C,)`` over its cluster (``clusters`` from ``confusion_clusters``)."""
    num = len(values)
    sums = torch.zeros(num, dtype=values.dtype).index_add_(0, clusters, values)
    sizes = torch.zeros(num, dtype=values.dtype).index_add_(0, clusters, torch.ones_like(values))
    return sums[clusters] / sizes[clusters]


def pair_mix_target(gap: torch.Tensor, confusion: torch.Tensor, gain: float, cap: float) -> torch.Tensor:
    """Blend probabilities ``(C, C)`` float64: row i = ``min(cap, gain * gap_i)+`` spread over the classes j that
    class i is mistaken for, in proportion to ``r_ij`` (the share of class i's control images predicted as j).
    ``gap`` ``(C,)`` in gap_scale units (> 0 below the mean); a class with no confusion gets an empty row."""
    cm = confusion.double()
    rates = (cm / cm.sum(dim=1, keepdim=True).clamp_min(1)).fill_diagonal_(0.0)  # (C, C) r_ij, i != j
    share = rates / rates.sum(dim=1, keepdim=True).clamp_min(1e-12)            # (C, C) rows sum to 1 or 0
    return (gain * gap.double()).clamp(0.0, cap)[:, None] * share


def blend_confused_pairs(x: torch.Tensor, targets: torch.Tensor, pair_mix: torch.Tensor, mix_min: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Images ``(B, ...)`` where image b of class i is, with probability ``pair_mix[i, j]``, blended with a random
    image of class j from the same batch: ``lam x_b + (1 - lam) x_partner``, ``lam ~ U[mix_min, 1]``. Images whose
    partner class is absent from the batch stay as they are. Labels are unchanged (the caller keeps ``targets``)."""
    num, batch, dev = pair_mix.shape[0], len(targets), x.device
    rows = pair_mix.to(dev, torch.float32)[targets]                                # (B, C)
    stay = (1 - rows.sum(dim=1, keepdim=True)).clamp_min(0)                         # (B, 1)
    partner_class = torch.multinomial(torch.cat([rows, stay], dim=1), 1, generator=generator)[:, 0]  # (B,); C = none
    match = targets[None, :] == partner_class[:, None]                              # (B, B) candidate partners
    scores = torch.rand(batch, batch, device=dev, generator=generator).masked_fill(~match, -1.0)
    partner = scores.argmax(dim=1)                                                  # (B,) a random matching image
    lam = mix_min + (1 - mix_min) * torch.rand(batch, device=dev, generator=generator)
    lam = torch.where(match.any(dim=1) & (partner_class < num), lam, torch.ones_like(lam))  # (B,)
    lam = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return lam * x + (1 - lam) * x[partner]
