"""Batches from a device-resident split: index, cast and normalise on the device, no worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from adaptive_lb.data.build import Split


class BatchLoader:
    """Yields ``(x, y)``: x ``(B, C, H, W)`` float, normalised; y ``(B,)`` int64; all on ``split``'s device.

    Shuffling uses a caller-given CPU generator, so the trainer can seed each epoch from (seed, epoch)
    and a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, batch_size: int,
                 channels_last: bool = False) -> None:
        self.split, self.batch_size, self.channels_last = split, batch_size, channels_last
        # x_norm = (x / 255 - mean) / std  ==  x * scale + shift, folded once
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(split.x.device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(split.x.device)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def batches(self, gen: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: shuffled when ``gen`` is given, in order otherwise."""
        n = len(self.split)
        order = torch.randperm(n, generator=gen).to(self.split.x.device) if gen is not None else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.split.x[start:start + self.batch_size], self.split.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.split.x[idx], self.split.y[idx]
            xb = xb.float().mul_(self.scale).add_(self.shift)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
