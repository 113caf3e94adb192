"""Per-class augmentation: intensity in [0, 1] per class -> op magnitudes (``table``), applied batched on the
training device (``tensor``) or per sample with albumentations in DataLoader workers (``albu``); character
edits of text, batched (``text``)."""

from adaptive_lb.augment.table import AT_FULL, LEVELS, op_args
from adaptive_lb.augment.tensor import TensorAugmenter
from adaptive_lb.augment.text import TEXT_AT_FULL, TextAugmenter

__all__ = ["AT_FULL", "LEVELS", "TEXT_AT_FULL", "TensorAugmenter", "TextAugmenter", "op_args"]
