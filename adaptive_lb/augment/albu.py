"""Per-sample augmentation with albumentations on the CPU, in DataLoader worker processes.

The intensities live in a shared-memory tensor that persistent workers read at every sample, so the
controller's update reaches them without restarting the workers. Each sample is seeded from (epoch seed,
index), so results do not depend on the number of workers and a resumed run replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from adaptive_lb.augment.table import LEVELS, op_args
from adaptive_lb.data.build import Split
from adaptive_lb.data.loader import Normalise
from adaptive_lb.data.samplers import epoch_indices, epoch_size


def build_pipeline(ops: Sequence[str], a: float):
    """albumentations ``Compose`` for intensity ``a`` (uint8 HWC images); ``a = 0`` gives an empty pipeline."""
    import albumentations as A

    if a <= 0:
        return A.Compose([])
    p = op_args(a)
    make = {
        "flip": lambda: A.HorizontalFlip(p=p["flip_p"]),
        "affine": lambda: A.Affine(rotate=(-p["rotate_deg"], p["rotate_deg"]),
                                   translate_percent=(-p["shift"], p["shift"]),
                                   scale=(1 - p["scale"], 1 + p["scale"]), fill=0, p=1.0),
        "brightness_contrast": lambda: A.RandomBrightnessContrast(brightness_limit=p["brightness"],
                                                                  contrast_limit=p["contrast"], p=1.0),
        "erasing": lambda: A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(p["erase_side"],) * 2,
                                           hole_width_range=(p["erase_side"],) * 2, fill=0, p=p["erase_p"]),
        "noise": lambda: A.GaussNoise(std_range=(p["noise_std"],) * 2, p=1.0),
    }
    return A.Compose([make[name]() for name in ops])


class IntensityDataset(torch.utils.data.Dataset):
    """Training images augmented at their class's current intensity, read from shared memory.

    Index ``i + N`` is an extra over-sampled copy of image ``i``, augmented at least at ``copy_aug``.
    """

    def __init__(self, split: Split, ops: Sequence[str], num_classes: int, copy_aug: float = 0.0) -> None:
        self.images = split.x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) uint8
        self.labels = split.y.numpy()
        self.ops, self.copy_aug = tuple(ops), copy_aug
        self.intensity = torch.zeros(num_classes, dtype=torch.float64).share_memory_()  # (num_classes,)
        self.seed = torch.zeros(1, dtype=torch.int64).share_memory_()  # epoch's base seed
        self._pipelines: dict[int, object] = {}  # level -> Compose, built lazily in each worker
        # one numpy and one Python generator shared by every transform of every pipeline, reseeded in place
        # per sample: Compose.set_random_seed re-creates generators for each transform (91 vs 38 us/sample)
        self._rng, self._py = np.random.default_rng(0), random.Random(0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.labels)
        y = int(self.labels[i % n])
        a = max(float(self.intensity[y]), self.copy_aug if i >= n else 0.0)
        level = round(a * LEVELS)
        image = self.images[i % n]
        if level:
            if level not in self._pipelines:
                self._pipelines[level] = build_pipeline(self.ops, level / LEVELS)
                self._pipelines[level].set_random_state(self._rng, self._py)
            seed = int(self.seed[0]) * 1_000_003 + i
            self._rng.bit_generator.state = np.random.PCG64(seed).state
            self._py.seed(seed)
            image = self._pipelines[level](image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), y  # (C, H, W) uint8


class _Order(torch.utils.data.Sampler):
    """The epoch's permutation, set by the loader before each pass (the sampler runs in the main process)."""

    def __init__(self, n: int) -> None:
        self.order = list(range(n))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class AlbumentationsLoader:
    """Same interface as ``BatchLoader`` (normalised batches on ``device``), augmenting on CPU workers."""

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, batch_size: int, channels_last: bool,
                 device: torch.device, ops: Sequence[str], num_classes: int, workers: int,
                 sampler: str = "none", copy_aug: float = 0.0) -> None:
        self.dataset = IntensityDataset(split.to("cpu"), ops, num_classes,
                                        copy_aug if sampler == "oversample_aug" else 0.0)
        self.kind, self.num_classes = sampler, num_classes
        self.dataset_labels = split.y.cpu()
        self.sampler = _Order(epoch_size(split.y, num_classes, sampler))
        self.device, self.normalise = device, Normalise(mean, std, channels_last, device)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            persistent_workers=workers > 0, pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return len(self.loader)

    def set_intensity(self, intensity: torch.Tensor) -> None:
        """Write ``(num_classes,)`` intensities where the workers read them (in place, shared memory)."""
        self.dataset.intensity.copy_(intensity.detach().to("cpu", torch.float64))

    def batches(self, gen: torch.Generator | None = None,
                intensity: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One re-sampled, shuffled pass (in order without ``gen``), each class augmented at ``intensity``."""
        n = len(self.dataset)
        self.dataset.seed[0] = int(torch.randint(2**31, (1,), generator=gen)) if gen is not None else 0
        if gen is None:
            self.sampler.order = list(range(n))
        else:
            order, copy = epoch_indices(self.dataset_labels, self.num_classes, self.kind, gen)
            self.sampler.order = (order + n * copy.long()).tolist()  # copies live at index + N
        self.set_intensity(intensity if intensity is not None else torch.zeros(len(self.dataset.intensity)))
        for xb, yb in self.loader:
            yield self.normalise.from_uint8(xb.to(self.device, non_blocking=True)), yb.to(self.device)
