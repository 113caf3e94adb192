"""Batched augmentation on the training device: each sample's magnitude comes from its class.

Randomness comes from the global torch RNG of the images' device, which the trainer seeds per epoch, so a
resumed run replays the same augmentations. Shapes: x ``(B, C, H, W)`` float in [0, 1], m ``(B,)`` in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from adaptive_lb.augment.table import AT_FULL


def _uniform(b: int, k: int, device: torch.device) -> torch.Tensor:
    """``(B, k)`` draws from U(-1, 1)."""
    return torch.rand(b, k, device=device) * 2 - 1


def flip(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    hit = torch.rand(len(x), device=x.device) < AT_FULL["flip_p"] * m
    return torch.where(hit.view(-1, 1, 1, 1), x.flip(-1), x)


def affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    u = _uniform(len(x), 4, x.device)
    angle = u[:, 0] * m * math.radians(AT_FULL["rotate_deg"])
    zoom = 1 + u[:, 1] * m * AT_FULL["scale"]
    shift = u[:, 2:] * m[:, None] * (2 * AT_FULL["shift"])  # (B, 2), affine_grid's [-1, 1] coordinates
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def brightness_contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    u = _uniform(len(x), 2, x.device)
    factor = (1 + u[:, 0] * m * AT_FULL["contrast"]).view(-1, 1, 1, 1)
    offset = (u[:, 1] * m * AT_FULL["brightness"]).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean + offset).clamp(0, 1)


def erasing(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    u = torch.rand(b, 3, device=x.device)
    side = (m * AT_FULL["erase_side"] * min(h, w)).round() * (u[:, 0] < AT_FULL["erase_p"])  # (B,) pixels, 0 = none
    top = (u[:, 1] * (h - side + 1)).floor()
    left = (u[:, 2] * (w - side + 1)).floor()
    rows = torch.arange(h, device=x.device).view(1, -1)
    cols = torch.arange(w, device=x.device).view(1, -1)
    in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])     # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])  # (B, W)
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)


def noise(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x + torch.randn_like(x) * (m * AT_FULL["noise_std"]).view(-1, 1, 1, 1)).clamp(0, 1)


OPS = {"flip": flip, "affine": affine, "brightness_contrast": brightness_contrast, "erasing": erasing,
       "noise": noise}


class TensorAugmenter:
    """Applies ``ops`` in order to a batch, sample i at magnitude ``m[i]`` (its class's intensity)."""

    def __init__(self, ops: Sequence[str]) -> None:
        self.ops = [OPS[name] for name in ops]

    def __call__(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x ``(B, C, H, W)`` in [0, 1], magnitudes ``(B,)`` in [0, 1] -> augmented x."""
        m = m.to(x.dtype)
        out = x
        for op in self.ops:
            out = op(out, m)
        return torch.where((m > 0).view(-1, 1, 1, 1), out, x)  # intensity 0: bit-exact identity
