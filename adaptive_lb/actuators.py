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
  augmentation intensity is shared by a whole cluster and cannot become a cue that tells its members apart.
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
