"""A small CNN image encoder for MNIST-sized images (1 or 3 channels).

Where the resolution is spent decides the speed on a CPU. A pixel-unshuffle
stem folds each 2x2 patch into channels (28x28x1 -> 14x14x4) so no convolution
runs at full resolution; one stage at 14x14 and three at 7x7 follow, then a
global average pool (which makes any even input size work, e.g. 32x32).
``benchmarks/architecture_speed.py`` times it against the same widths run at 28x28
(BENCHMARKS.md, "Where the resolution is spent").
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class ImageEncoder(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),  # [B, 4C, 14, 14]
            conv_block(4 * in_channels, w, 1),  # [B, w, 14, 14]
            conv_block(w, 2 * w, 2),  # [B, 2w, 7, 7]
            conv_block(2 * w, 2 * w, 1),
            conv_block(2 * w, 2 * w, 1),  # [B, 2w, 7, 7]
        )
        self.projection = nn.Linear(2 * w, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images).mean(dim=(2, 3))  # [B, 2w]
        return self.projection(features)  # [B, D]
