"""Batched character edits of names: adjacent swaps, drops and insertions at a per-sample rate.

Shapes: x ``(B, L)`` int64 character codes, right-padded with 0; m ``(B,)`` in [0, 1], each sample's class
intensity. Every op edits each character with probability ``m * TEXT_AT_FULL[op]``, so intensity 0 is the
identity and the expected number of edits grows linearly with it. Randomness comes from the global torch RNG
of x's device, which the trainer seeds per epoch (as the image augmenter), so a resumed run replays the same
edits; the number of random draws does not depend on m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TEXT_AT_FULL = {
    "swap": 0.1,    # probability per character of swapping it with the next one (typo), at intensity 1
    "drop": 0.08,   # probability per character of dropping it (never the whole name)
    "insert": 0.08,  # probability per character of inserting before it a copy of a random character of the name
}


def lengths(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` number of non-pad codes per row."""
    return (x != 0).sum(dim=1)


def _hits(x: torch.Tensor, m: torch.Tensor, rate: float) -> torch.Tensor:
    """``(B, L)`` bool: an edit at each character, with probability ``m * rate``; never on padding."""
    return (torch.rand(x.shape, device=x.device) < (m * rate)[:, None]) & (x != 0)


def compact(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Kept codes moved left in their order, the rest zeroed and moved right (stable, batched)."""
    order = torch.argsort((~keep).to(torch.int32), dim=1, stable=True)
    return torch.gather(torch.where(keep, x, torch.zeros_like(x)), 1, order)


def swap(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Swap character j with j + 1; of two overlapping swaps only the first happens."""
    hit = _hits(x, m, TEXT_AT_FULL["swap"])
    hit &= F.pad(x[:, 1:] != 0, (0, 1))  # a swap needs a next character
    hit &= ~F.pad(hit[:, :-1], (1, 0))   # no swap right after another (positions j-1, j would overlap)
    pos = torch.arange(x.shape[1], device=x.device).expand_as(x)
    src = pos + hit.long() - F.pad(hit[:, :-1], (1, 0)).long()  # j <- j+1 and j+1 <- j where hit[j]
    return torch.gather(x, 1, src)


def drop(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Drop characters; a name that would lose all of them keeps its first."""
    keep = (x != 0) & ~_hits(x, m, TEXT_AT_FULL["drop"])
    keep[:, 0] |= ~keep.any(dim=1) & (x[:, 0] != 0)
    return compact(x, keep)


def insert(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Insert before a character a copy of a random character of the same name (its script stays);
    characters pushed past the row's width ``L`` are cut."""
    b, width = x.shape
    hit = _hits(x, m, TEXT_AT_FULL["insert"])
    src = (torch.rand(x.shape, device=x.device) * lengths(x)[:, None]).long().clamp_max(width - 1)
    new = torch.where(hit, torch.gather(x, 1, src), torch.zeros_like(x))
    both = torch.stack([new, x], dim=2).reshape(b, 2 * width)  # new_0, x_0, new_1, x_1, ...
    return compact(both, both != 0)[:, :width]


OPS = {"swap": swap, "drop": drop, "insert": insert}


class TextAugmenter:
    """Applies ``ops`` in order to a batch of codes, sample i at magnitude ``m[i]`` (its class's intensity)."""

    def __init__(self, ops: Sequence[str]) -> None:
        self.ops = [OPS[name] for name in ops]

    def __call__(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x ``(B, L)`` int64 codes, magnitudes ``(B,)`` in [0, 1] -> edited codes ``(B, L)``."""
        m = m.float()
        out = x
        for op in self.ops:
            out = op(out, m)
        return torch.where((m > 0)[:, None], out, x)  # intensity 0: bit-exact identity
