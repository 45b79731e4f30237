"""Batched random affine augmentation (rotation, scale, shift) for [-1, 1] images.

One ``grid_sample`` call per batch: cheap on the CPU, and it teaches the image
encoder that a digit moved by two pixels is the same digit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 10.0,
                  max_scale: float = 0.1, max_shift_pixels: float = 2.0) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> the same shape, each image randomly rotated, scaled and shifted."""
    b, _, h, w = images.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(max_degrees))
    scale = 1 + uniform(max_scale)
    shift_x, shift_y = uniform(2 * max_shift_pixels / w), uniform(2 * max_shift_pixels / h)  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    # Shift to [0, 2] so the zero padding outside the image becomes the background value -1.
    return F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
