"""Per-class augmentation: intensity in [0, 1] per class -> op magnitudes (``table``), applied batched on the
training device (``tensor``) or per sample with albumentations in DataLoader workers (``albu``)."""

from adaptive_lb.augment.table import AT_FULL, LEVELS, op_args
from adaptive_lb.augment.tensor import TensorAugmenter

__all__ = ["AT_FULL", "LEVELS", "TensorAugmenter", "op_args"]
