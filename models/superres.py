"""The Imagen cascade's glue: resizing and Gaussian conditioning augmentation.

A cascade (Ho et al. 2021, "Cascaded Diffusion Models"; Saharia et al. 2022,
Imagen sec. 2.5) splits generation in two diffusion models:

    base        prompt -> 14x14 image                 (4x fewer pixels: 4x cheaper per image)
    super-res   prompt + 14x14 image -> 28x28 image   (a UNet that sees x_t next to the upsampled condition)

The super-resolution model is trained on real low-resolution images, but at
sampling time it receives the base model's output, with its own flaws. Gaussian
conditioning augmentation bridges the two: the low-resolution condition is
noised by the forward process to a random level s during training, s is given
to the network, and at sampling time a fixed small s is chosen (Imagen sec. 2.5):

    z_s = sqrt(alpha_bar(s)) z + sqrt(1 - alpha_bar(s)) eps,   s in [0, 1] as a fraction of T
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.diffusion import NoiseSchedule


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size], each output pixel the mean of the input pixels it covers.

    Area averaging is the box antialiasing filter: 28 -> 14 averages 2x2 blocks, so no detail aliases.
    """
    if images.shape[-1] == size:
        return images
    return F.interpolate(images.float(), size=(size, size), mode="area")


def upsample(images: torch.Tensor, size: int, clamp: bool = True) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, size, size] bicubic (the classic baseline), clamped to the data range [-1, 1]."""
    if images.shape[-1] != size:
        images = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
    return images.clamp(-1, 1) if clamp else images


def augment(low_res: torch.Tensor, level: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise each low-res image [B, C, h, w] to its level [B] in [0, 1] with the forward process q(z_s | z)."""
    t = (level * (schedule.num_steps - 1)).round().long()
    noise = torch.randn(low_res.shape, generator=generator).to(low_res.device)
    noised = schedule.q_sample(low_res, t, noise)
    return torch.where(level.view(-1, 1, 1, 1) > 0, noised, low_res)  # level 0: the clean image, exactly


def low_res_condition(low_res: torch.Tensor, level: torch.Tensor, size: int, schedule: NoiseSchedule,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """What the super-resolution UNet sees beside x_t: the augmented low-res image, upsampled [B, C, size, size]."""
    return upsample(augment(low_res, level, schedule, generator), size, clamp=False)  # keep the noise as drawn
