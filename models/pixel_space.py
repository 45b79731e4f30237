"""Where a decoder's diffusion runs: on pixels as they are, or on pixels stretched near black and white.

MNIST is nearly a two-level image. 81 % of its pixels are exactly black (level 0) and
another 6 % sit at 252-254, the pen's full ink; the anti-aliased edges between them
spread thinly over the other levels. A diffusion model on linear pixels learns the
background and the ink to within a few levels (BENCHMARKS.md, "What gives the
pictures away"), so its backgrounds carry a haze of levels 1-3 and its ink smears over
240-255. A picture file shows each of those levels, and a classifier sees them.

The logit space, long used by flow models for pixel densities (RealNVP, Dinh et al.
2017, sec. 4.1), stretches both ends: with p = (x + 1) / 2 in [0, 1],

    y = logit(delta + (1 - 2 delta) p) / logit(1 - delta)        y in [-1, 1]
    p = (sigmoid(y logit(1 - delta)) - delta) / (1 - 2 delta)    its inverse

With delta = 0.01, one grey level next to black or white spans about 9x more of y
than of x, and the mid-greys about 2.3x less. So the same error in y moves the ends
by a fraction of a level and the mid-greys by a little more. The diffusion (training
target, x_t, thresholding) lives in y; images come out through the inverse, as
latent diffusion's images come out through its decoder. It is a bijection of
[-1, 1]: nothing is snapped, every level can be drawn.
"""
from __future__ import annotations

import math

import torch

from utils.errors import require

PIXEL_SPACES = ("linear", "logit")
LOGIT_DELTA = 0.01  # how far from 0 and 1 the logit is taken: smaller stretches the ends more and squeezes the mid-greys harder


class PixelSpace:
    """encode: images [..] in [-1, 1] -> the diffusion's space in [-1, 1]; decode: back."""

    def __init__(self, kind: str = "linear", delta: float = LOGIT_DELTA) -> None:
        require(kind in PIXEL_SPACES, f"unknown pixel space {kind!r}; choose from {', '.join(PIXEL_SPACES)}")
        require(0 < delta < 0.5, f"the logit's delta must lie between 0 and 0.5, got {delta}")
        self.kind, self.delta = kind, delta
        self.scale = math.log((1 - delta) / delta)  # logit(1 - delta): maps the ends to exactly -1 and 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return images
        p = (images.clamp(-1, 1) + 1) / 2
        return (torch.logit(self.delta + (1 - 2 * self.delta) * p) / self.scale).clamp(-1, 1)  # the clamp: float32 rounding at the ends

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return y
        p = (torch.sigmoid(y * self.scale) - self.delta) / (1 - 2 * self.delta)
        return (p * 2 - 1).clamp(-1, 1)
