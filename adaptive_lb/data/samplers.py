"""Per-epoch re-sampling of the training part: which indices an epoch visits, redrawn every epoch.

- ``none``: every sample once, shuffled;
- ``oversample``: every class drawn up to the largest class count: all its samples once, plus the
  shortfall drawn with replacement (imbalanced-learn's RandomOverSampler);
- ``undersample``: every class cut to the smallest class count, a fresh random subset each epoch;
- ``oversample_aug``: as ``oversample``; the extra copies are flagged so the loader augments them.

``epoch_indices`` is pure given the generator: labels ``(N,)`` in, ``(indices (M,), is_copy (M,))`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adaptive_lb.data.splits import class_counts, per_class_indices
from adaptive_lb.errors import DataError

SAMPLERS = ("none", "oversample", "undersample", "oversample_aug")


def check_sampler(labels: torch.Tensor, num_classes: int, kind: str, class_names: Sequence[str]) -> None:
    """Refuse a sampler that would leave a class empty (a class with no training image)."""
    if kind not in SAMPLERS:
        raise DataError(f"unknown sampler '{kind}': use one of {', '.join(SAMPLERS)}")
    if kind == "none":
        return
    counts = class_counts(labels.cpu(), num_classes)
    empty = [class_names[c] for c in range(num_classes) if counts[c] == 0]
    if empty:
        raise DataError(f"data.sampler={kind}: class(es) {', '.join(empty)} have no training image, so the "
                        "re-sampled epoch would have none of them: lower data.imbalance_ratio or use sampler none")


def epoch_size(labels: torch.Tensor, num_classes: int, kind: str) -> int:
    """Number of samples one epoch of ``kind`` visits."""
    if kind == "none":
        return len(labels)
    counts = class_counts(labels.cpu(), num_classes)
    if kind in ("oversample", "oversample_aug"):
        return num_classes * int(counts.max())
    if kind == "undersample":
        return num_classes * int(counts.min())
    raise DataError(f"unknown sampler '{kind}': use one of {', '.join(SAMPLERS)}")


def epoch_indices(labels: torch.Tensor, num_classes: int, kind: str,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled indices into ``labels`` for one epoch, and which of them are extra (over-sampled) copies."""
    labels = labels.cpu()
    if kind == "none":
        order = torch.randperm(len(labels), generator=gen)
        return order, torch.zeros(len(order), dtype=torch.bool)
    counts = class_counts(labels, num_classes)
    groups = per_class_indices(labels, num_classes, gen)  # each class's indices, shuffled
    parts, copies = [], []
    for g in groups:
        if kind == "undersample":
            take = g[: int(counts.min())]
            parts.append(take)
            copies.append(torch.zeros(len(take), dtype=torch.bool))
        else:
            extra = g[torch.randint(len(g), (int(counts.max()) - len(g),), generator=gen)]
            parts += [g, extra]
            copies += [torch.zeros(len(g), dtype=torch.bool), torch.ones(len(extra), dtype=torch.bool)]
    idx, is_copy = torch.cat(parts), torch.cat(copies)
    order = torch.randperm(len(idx), generator=gen)
    return idx[order], is_copy[order]
