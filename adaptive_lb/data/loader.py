"""Batches from a device-resident split: index, augment, cast and normalise on the device, no workers.

Images are normalised per batch (``Normalise``); text (character codes) passes through as it is
(``TokenCodes``), and its augmenter edits the codes themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from adaptive_lb.data.build import Split
from adaptive_lb.data.samplers import epoch_indices, epoch_size
from adaptive_lb.distributed import batch_part

# (x (B, C, H, W) in [0, 1] or text codes (B, L), per-sample magnitudes m (B,) in [0, 1]) -> augmented x
Augmenter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# train.batch_size=auto: a small set still gets enough optimiser steps per epoch for the schedule, the EMA and
# the controller to work with (150 images per class at batch 256 gave 6 steps an epoch and 56 % accuracy)
AUTO_BATCH_STEPS, AUTO_BATCH_MIN, AUTO_BATCH_MAX = 50, 16, 256


def auto_batch_size(epoch_images: int) -> int:
    """``train.batch_size=auto``: ``epoch_images // 50`` (so >= 50 steps per epoch), within [16, 256]."""
    return min(AUTO_BATCH_MAX, max(AUTO_BATCH_MIN, epoch_images // AUTO_BATCH_STEPS))


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

    def augmented(self, augmenter: Augmenter, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """uint8 images augmented at magnitudes ``m`` on the [0, 1] scale, then normalised."""
        return self.from_unit(augmenter(x.float() / 255.0, m))


class TokenCodes:
    """Text: ``(B, L)`` int64 character codes go to the model as they are (same interface as ``Normalise``)."""

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def augmented(self, augmenter: Augmenter, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return augmenter(x, m)


class BatchLoader:
    """Yields ``(x, y)``: x ``(B, C, H, W)`` float, normalised (``text``: ``(B, L)`` int64 codes); y ``(B,)``
    int64; all on ``split``'s device.

    Shuffling uses a caller-given CPU generator, so the trainer can seed each epoch from (seed, epoch)
    and a resumed run sees exactly the batches an uninterrupted one would. ``sampler`` re-samples the
    epoch (``data/samplers.py``). With an ``augmenter``, each sample is augmented at its class's
    ``intensity`` (extra copies of ``oversample_aug`` at least at ``copy_aug``) before normalising.

    ``shard=(rank, world)`` (training under DDP): every rank draws the same order and yields its contiguous part
    of each global batch of ``batch_size`` (``distributed.batch_part``); a last global batch with fewer images
    than ranks is skipped. ``(0, 1)`` is one process: every batch whole.
    """

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, batch_size: int,
                 channels_last: bool = False, augmenter: Augmenter | None = None, sampler: str = "none",
                 num_classes: int = 0, copy_aug: float = 0.0, text: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.split, self.batch_size, self.augmenter = split, batch_size, augmenter
        self.rank, self.world = shard
        self.normalise = TokenCodes() if text else Normalise(mean, std, channels_last, split.x.device)
        self.sampler, self.num_classes = sampler, num_classes
        self.copy_aug = copy_aug if sampler == "oversample_aug" else 0.0
        self.labels = split.y.cpu()  # (N,) the samplers draw on the CPU: copied once, not every epoch
        self.size = epoch_size(self.labels, num_classes, sampler)  # samples per training epoch

    def __len__(self) -> int:
        steps = -(-self.size // self.batch_size)
        return steps - 1 if 0 < self.size % self.batch_size < self.world else steps  # a tail too small to share

    def batches(self, gen: torch.Generator | None = None,
                intensity: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: re-sampled and shuffled when ``gen`` is given, every sample in order otherwise."""
        device = self.split.x.device
        order, copy = None, None  # None: in order, by slicing (evaluation)
        if gen is not None:
            order, copy = (t.to(device) for t in epoch_indices(self.labels, self.num_classes, self.sampler, gen))
        if intensity is None:
            intensity = torch.zeros(max(self.num_classes, 1), device=device)
        # one host sync per epoch; nothing to augment skips the augmenter (and its random draws) entirely
        augment = self.augmenter is not None and (bool(intensity.max() > 0) or (copy is not None and self.copy_aug > 0))
        total = len(self.split) if order is None else len(order)
        for first in range(0, total, self.batch_size):
            start, stop = first, min(first + self.batch_size, total)
            if order is None:
                xb, yb = self.split.x[start:stop], self.split.y[start:stop]
            else:
                if self.world > 1:  # DDP: this rank's part of the global batch
                    if stop - start < self.world:
                        break  # only the last batch can be this small
                    start, stop = batch_part(start, stop, self.rank, self.world)
                idx = order[start:stop]
                xb, yb = self.split.x[idx], self.split.y[idx]
            if not augment:
                yield self.normalise.from_uint8(xb), yb
                continue
            m = intensity[yb]  # (B,)
            if copy is not None and self.copy_aug > 0:
                m = torch.where(copy[start:stop], m.clamp_min(self.copy_aug), m)
            yield self.normalise.augmented(self.augmenter, xb, m), yb
