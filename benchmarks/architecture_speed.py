"""Where the resolution is spent: training speed of encoder and UNet variants, side by side in one run.

    python benchmarks/architecture_speed.py

Each variant is timed on random data for a few full optimizer steps; only ratios
within one run are meaningful on a shared machine.
"""
from __future__ import annotations

import time

import common  # noqa: F401
from evaluation.reports import write_result
import torch
from torch import nn

from models.image_encoder import ImageEncoder, conv_block
from models.conditioning import Conditioning
from models.unet import UNet, UNetConfig
from utils.training import count_parameters


def images_per_second(model: nn.Module, loss_fn, batch: int, steps: int = 4) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = loss_fn(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


class FullResolutionEncoder(nn.Module):
    """The same widths as ImageEncoder, with the first stage at 28x28 instead of a pixel-unshuffle stem."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(conv_block(1, w, 1), conv_block(w, 2 * w, 2), conv_block(2 * w, 2 * w, 1), conv_block(2 * w, 2 * w, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def main() -> None:
    torch.manual_seed(0)
    results: dict = {"image_encoder_batch_256": {}, "unet_batch_64": {}}
    x = torch.randn(256, 1, 28, 28)
    for name, encoder in [("pixel-unshuffle stem (default)", ImageEncoder(1, 64)), ("first stage at 28x28", FullResolutionEncoder())]:
        speed = images_per_second(encoder, lambda m: m(x).square().mean(), 256)
        results["image_encoder_batch_256"][name] = round(speed, 1)
        print(f"image encoder, {name}: {speed:.0f} images/s")
    b = 64
    x, t = torch.randn(b, 1, 28, 28), torch.randint(0, 1000, (b,))
    cond = Conditioning(torch.randn(b, 64), drop=torch.rand(b) < 0.15)
    for name, config in [("32/48/64 at 14/7/4 px (default)", UNetConfig()),
                         ("64/128 at 14/7 px, 2 blocks", UNetConfig(channels=(64, 128), blocks_per_level=2, attention_levels=(1,)))]:
        unet = UNet(config)
        speed = images_per_second(unet, lambda m: (m(x, t, cond) - x).square().mean(), b)
        results["unet_batch_64"][name] = {"images_per_second": round(speed, 1), "parameters": count_parameters(unet)}
        print(f"UNet {name}: {count_parameters(unet):,} parameters, {speed:.0f} images/s")
    write_result("architecture_speed", results)


if __name__ == "__main__":
    main()
