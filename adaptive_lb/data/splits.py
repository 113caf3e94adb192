"""Pure index arithmetic on label vectors: per-class subsets, the held-out split, long-tail profiles.

All functions take labels ``(N,)`` int64 and a seeded ``torch.Generator``; they return index tensors into
the labels, so the same seed always gives the same split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adaptive_lb.errors import DataError


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Samples per class, ``(C,)`` int64."""
    return torch.bincount(labels, minlength=num_classes)


def per_class_indices(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Indices of each class, shuffled with ``gen`` (one permutation of the whole set, then grouped)."""
    perm = torch.randperm(len(labels), generator=gen)
    shuffled = labels[perm]
    return [perm[shuffled == c] for c in range(num_classes)]


def take_per_class(labels: torch.Tensor, counts: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """A random ``counts[c]`` indices of each class c (all of them when a class has fewer), sorted."""
    groups = per_class_indices(labels, len(counts), gen)
    picked = [g[: int(n)] for g, n in zip(groups, counts)]
    return torch.cat(picked).sort().values


def stratified_heldout(labels: torch.Tensor, num_classes: int, fraction: float, balanced: bool,
                       gen: torch.Generator, class_names: Sequence[str],
                       fix: str = "raise data.subset_per_class or data.heldout_fraction",
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, held-out), stratified by class.

    ``balanced``: every class gives ``round(fraction * min_c n_c)`` held-out samples (an even yardstick for
    per-class TPR); otherwise each class gives ``round(fraction * n_c)``. A class left with no held-out or
    no training sample is an error (ending with ``fix``): its TPR could not be measured or learned.
    """
    counts = class_counts(labels, num_classes)
    if balanced:
        want = torch.full_like(counts, round(fraction * int(counts.min())))
    else:
        want = (counts.double() * fraction).round().long()
    short = [c for c in range(num_classes) if want[c] < 1 or counts[c] - want[c] < 1]
    if short:
        c = min(short, key=lambda k: int(counts[k]))  # the smallest class is the cause in balanced mode
        raise DataError(
            f"class '{class_names[c]}' has {int(counts[c])} training samples, too few for a held-out split "
            f"of {fraction:g}: {fix}")
    groups = per_class_indices(labels, num_classes, gen)
    held = torch.cat([g[: int(n)] for g, n in zip(groups, want)]).sort().values
    train = torch.cat([g[int(n):] for g, n in zip(groups, want)]).sort().values
    return train, held


def long_tail_counts(available: Sequence[int], profile: str, ratio: float,
                     minor_fraction: float = 0.5) -> list[int]:
    """Per-class sample counts of a long-tail profile, as in the CB-loss and LDAM papers.

    ``exp``: n_c = n_max * ratio^(-c / (C-1)); ``step``: the last ``minor_fraction`` of the classes get
    n_max / ratio, the rest n_max. ``n_max`` is the largest available count; a class never gets more than
    it has. ``none`` keeps everything.
    """
    n_max, num = max(available), len(available)
    if profile == "none" or ratio == 1.0:
        return [int(a) for a in available]
    if profile == "exp":
        target = [n_max * ratio ** (-c / max(num - 1, 1)) for c in range(num)]
    elif profile == "step":
        first_minor = num - max(1, round(minor_fraction * num))
        target = [n_max if c < first_minor else n_max / ratio for c in range(num)]
    else:
        raise DataError(f"unknown long-tail profile '{profile}': use none, exp or step")
    return [max(1, min(int(a), math.floor(t + 1e-9))) for a, t in zip(available, target)]
