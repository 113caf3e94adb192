"""Intensity -> op arguments: one table read by both backends (as RandAugment's magnitude bins).

Every op scales linearly with the class's intensity ``a`` in [0, 1]; ``a = 0`` is the identity. The values
below are the magnitudes at ``a = 1``; pixel values are on the [0, 1] scale.
"""

from __future__ import annotations

AT_FULL = {
    "flip_p": 0.5,          # probability of a horizontal flip
    "rotate_deg": 15.0,     # rotation drawn from +-rotate_deg * a, degrees
    "shift": 0.125,         # translation drawn from +-shift * a, fraction of the image side
    "scale": 0.2,           # zoom drawn from 1 +- scale * a
    "brightness": 0.3,      # additive brightness drawn from +-brightness * a
    "contrast": 0.3,        # contrast factor drawn from 1 +- contrast * a
    "erase_p": 0.5,         # probability of erasing one square (only when a > 0)
    "erase_side": 0.5,      # side of the erased square, fraction of the image side, times a
    "noise_std": 0.1,       # std of additive Gaussian noise, times a
}

LEVELS = 20  # the albumentations backend builds one pipeline per level: intensity is rounded to 1/LEVELS


def op_args(a: float) -> dict[str, float]:
    """Arguments of every op at scalar intensity ``a`` (0 -> identity); erase_p does not scale."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"augmentation intensity {a} is outside [0, 1]")
    return {k: (v if k == "erase_p" else v * a) for k, v in AT_FULL.items()}
