"""Batches from a device-resident split: index, augment, cast and normalise on the device, no workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from adaptive_lb.data.build import Split

# (x (B, C, H, W) in [0, 1], y (B,), intensity (num_classes,)) -> augmented x
Augmenter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Normalise:
    """uint8 or [0, 1] images -> ``(x - mean) / std`` per channel, optionally channels_last."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, channels_last: bool, device: torch.device) -> None:
        self.mean, self.std = mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device)
        # x_norm = (x / 255 - mean) / std  ==  x * scale + shift, folded once
        self.scale, self.shift = 1.0 / (255.0 * self.std), -self.mean / self.std
        self.channels_last = channels_last

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return self._layout(x.float().mul_(self.scale).add_(self.shift))

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        return self._layout((x - self.mean) / self.std)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class BatchLoader:
    """Yields ``(x, y)``: x ``(B, C, H, W)`` float, normalised; y ``(B,)`` int64; all on ``split``'s device.

    Shuffling uses a caller-given CPU generator, so the trainer can seed each epoch from (seed, epoch)
    and a resumed run sees exactly the batches an uninterrupted one would. With an ``augmenter`` and a
    non-zero ``intensity``, each batch is augmented per sample at its class's intensity before normalising.
    """

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, batch_size: int,
                 channels_last: bool = False, augmenter: Augmenter | None = None) -> None:
        self.split, self.batch_size, self.augmenter = split, batch_size, augmenter
        self.normalise = Normalise(mean, std, channels_last, split.x.device)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def batches(self, gen: torch.Generator | None = None,
                intensity: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: shuffled when ``gen`` is given, in order otherwise; augmented where ``intensity > 0``."""
        n = len(self.split)
        order = torch.randperm(n, generator=gen).to(self.split.x.device) if gen is not None else None
        # one host sync per epoch; all-zero intensity skips the augmenter (and its random draws) entirely
        augment = self.augmenter is not None and intensity is not None and bool(intensity.max() > 0)
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.split.x[start:start + self.batch_size], self.split.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.split.x[idx], self.split.y[idx]
            if augment:
                yield self.normalise.from_unit(self.augmenter(xb.float() / 255.0, yb, intensity)), yb
            else:
                yield self.normalise.from_uint8(xb), yb
