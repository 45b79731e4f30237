"""The Imagen cascade: a super-resolution decoder, its conditioning augmentation, and the two stages together.

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

from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from models.clip import TinyCLIP
from models.diffusion import NoiseSchedule
from models.pipeline import Decoder
from models.samplers import SamplingOptions, StepCallback
from models.conditioning import Conditioning
from utils.errors import require

SUPERRES_SAMPLING = SamplingOptions(steps=20, guidance_scale=1.0)  # the low-res image says most of what to draw: no guidance


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


class SuperResolution(Decoder):
    """The cascade's second stage: CLIP conditioning + a low-res image -> a full-size image (Imagen)."""

    kind = "superres"
    default_guidance_scale = SUPERRES_SAMPLING.guidance_scale

    def upscale(self, low_res: torch.Tensor, cond: Conditioning, augmentation_level: float = 0.1,
                sampling: SamplingOptions = SUPERRES_SAMPLING, **generate_options) -> torch.Tensor:
        """low_res [N, C, h, w] in [-1, 1] (one per row of cond) -> [N, C, H, W].

        The condition is noised to the fixed ``augmentation_level`` (seeded, so same seed, same images).
        """
        require(0 <= augmentation_level <= 1, f"augmentation_level must be in [0, 1], got {augmentation_level}")
        require(low_res.shape[-1] == self.config.low_res_size,
                f"this super-resolution model upscales {self.config.low_res_size}x{self.config.low_res_size} images, got {low_res.shape[-1]}x{low_res.shape[-2]}")
        generator = torch.Generator().manual_seed(sampling.seed + 1)
        level = torch.full((low_res.shape[0],), float(augmentation_level))
        condition = low_res_condition(low_res.cpu(), level, self.config.unet.image_size, self.schedule, generator)
        full = Conditioning(cond.embedding, cond.tokens, cond.token_mask, low_res=condition, noise_level=level)
        return self.generate(full, sampling, **generate_options)


class Cascade:
    """Imagen's cascade, used like a Decoder: a base decoder at low resolution, then super-resolution.

    ``generate`` runs the base with the given sampling options, then the
    super-resolution model with the same sampler and seed but its own step
    count, guidance scale and augmentation level.
    """

    def __init__(self, base: Decoder, superres: SuperResolution, augmentation_level: float = 0.1, superres_steps: int = SUPERRES_SAMPLING.steps,
                 superres_guidance_scale: float = SUPERRES_SAMPLING.guidance_scale) -> None:
        self.base, self.superres = base, superres
        self.augmentation_level, self.superres_steps, self.superres_guidance_scale = augmentation_level, superres_steps, superres_guidance_scale
        self.config = superres.config  # what comes out: full-size images

    @classmethod
    def load(cls, base_path: str, superres_path: str, device: torch.device | str = "cpu", clip: TinyCLIP | None = None, **options) -> "Cascade":
        """Both stages from their checkpoints, checked against the CLIP (when given) and against each other."""
        base, superres = Decoder.load(base_path, device, clip), SuperResolution.load(superres_path, device, clip)
        low, size = superres.config.low_res_size, base.config.unet.image_size
        require(size == low, f"{superres_path} upscales {low}x{low} images but the base decoder {base_path} makes {size}x{size} ones"
                             f" (train a base decoder at resolution {low})")
        require(base.config.condition == superres.config.condition, f"{base_path} is conditioned on CLIP {base.config.condition} embeddings, "
                                                                    f"{superres_path} on {superres.config.condition} embeddings")
        return cls(base, superres, **options)

    @property
    def guidance_scale(self) -> float:
        """The base decoder's own guidance scale (models.pipeline.recommended_guidance)."""
        return self.base.guidance_scale

    def generate(self, cond: Conditioning, sampling: SamplingOptions = SamplingOptions(), chunk_size: int = 256,
                 callback: StepCallback | None = None, progress: Callable | None = None, shared_noise: bool = False) -> torch.Tensor:
        """[N, C, H, W] full-size images; ``callback`` and ``progress`` see the base stage."""
        low = self.base.generate(cond, sampling, chunk_size, callback, progress, shared_noise)
        superres_sampling = replace(sampling, steps=self.superres_steps, guidance_scale=self.superres_guidance_scale)
        return self.superres.upscale(low, cond, self.augmentation_level, superres_sampling, chunk_size=chunk_size, shared_noise=shared_noise)
