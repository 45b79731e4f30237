"""The three diffusion stages, as the training loop sees them.

Every stage is a diffusion model trained by the same loop; a ``Stage`` only says
what x0 and the conditioning c are, and how to preview what it has learned:

    decoder   x0 = image (or its 14x14 version,    c = CLIP text embedding of the caption
              the base of a cascade)                   (+ token states), or CLIP image embedding
    superres  x0 = 28x28 image;                    c = as the decoder's + the augmented 14x14 image
    prior     x0 = sqrt(D) * CLIP image embedding; c = CLIP text embedding (+ token states)

CLIP is frozen, so captions and images are encoded once (``ConditioningCache``).
"""
from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from dataloading.augment import random_affine
from dataloading.datasets import ImageSplits
from evaluation.metrics import prior_quality
from models.clip import encode_images
from models.conditioning import Conditioning
from models.diffusion import ScheduleConfig
from models.pipeline import ClipConditioner, Decoder, DecoderConfig, DiffusionBundle, clip_fingerprint
from models.prior import Prior, PriorBundleConfig, PriorConfig, embedding_scale
from models.samplers import SamplingOptions
from models.superres import SUPERRES_SAMPLING, SuperResolution, downsample, low_res_condition, upsample
from models.unet import UNetConfig
from training.unclip_configs import (DecoderTrainingConfig, DiffusionTrainingConfig, PriorTrainingConfig, SuperResolutionTrainingConfig,
                                     UNetStageConfig)
from utils.errors import require
from utils.images import to_signed_float
from utils.plotting import save_grid, save_prior_quality_plot
from utils.training import count_parameters

TIMESTEPS = 1000  # every stage trains on a 1000-step schedule, as DDPM did
PREVIEW_SAMPLING = SamplingOptions(steps=20, seed=0)  # the decoders' default guidance


class Stage(Protocol):
    """What the training loop needs to know of a stage."""

    kind: str  # the checkpoint kind: "decoder", "superres" or "prior"
    bundle: DiffusionBundle  # the network and its schedule; bundle.config is stored in the checkpoint
    description: str  # one line for the log

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        """A training batch of images [B, C, H, W] in [-1, 1] -> (x0, its conditioning)."""

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        """Draw what the EMA weights make now; returns the picture's path."""

    def summary(self) -> dict:
        """What the metrics file says about the stage."""


class ConditioningCache:
    """CLIP is frozen, so each caption and image is encoded once, not every step.

    The class captions (~160) are encoded up front; style captions (dataloading.style_captions) are too many to
    list (about 19,000), so each is encoded the first time a batch draws it and kept. Token states [L, T] per caption
    are kept only for a stage that cross-attends to them (``keep_tokens``): for every style caption they would take ~0.5 GB.
    """

    def __init__(self, conditioner: ClipConditioner, splits: ImageSplits, keep_tokens: bool) -> None:
        self.conditioner, self.keep_tokens = conditioner, keep_tokens
        self.index: dict[str, int] = {}
        self.rows: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []  # per caption: (embedding [D], tokens [L, T], mask [L])
        self.encode(splits.captions.all_train_captions())
        self.clip, self.train_images = conditioner.clip, splits.train_images

    def encode(self, captions: list[str]) -> None:
        """Encode the captions not seen before."""
        new = sorted({c for c in captions if c not in self.index})
        if not new:
            return
        cond = self.conditioner.text(new)
        for i, caption in enumerate(new):
            self.index[caption] = len(self.rows)
            tokens = (cond.tokens[i].cpu(), cond.token_mask[i].cpu()) if self.keep_tokens else (None, None)
            self.rows.append((cond.embedding[i].cpu(), *tokens))

    @cached_property
    def image_embeddings(self) -> torch.Tensor:
        """[N, D], row i = training image i; encoded on first use (a text-conditioned decoder never asks)."""
        return encode_images(self.clip, self.train_images)

    def text(self, texts: list[str], use_tokens: bool) -> Conditioning:
        self.encode(texts)
        rows = [self.rows[self.index[t]] for t in texts]
        embeddings = torch.stack([r[0] for r in rows])  # [B, D]
        if not use_tokens:
            return Conditioning(embeddings)
        if not self.keep_tokens:
            raise ValueError("this cache was built without token states")
        length = max(len(r[1]) for r in rows)  # captions were encoded in groups padded to their own longest
        tokens = torch.stack([torch.nn.functional.pad(r[1], (0, 0, 0, length - len(r[1]))) for r in rows])  # [B, L, T]
        mask = torch.stack([torch.nn.functional.pad(r[2].int(), (0, length - len(r[2]))) for r in rows]).bool()  # [B, L]
        return Conditioning(embeddings, tokens, mask)


def schedule_config(config: DiffusionTrainingConfig) -> ScheduleConfig:
    return ScheduleConfig(config.schedule, TIMESTEPS, config.prediction, config.min_snr_gamma)


def held_out_examples(splits: ImageSplits) -> torch.Tensor:
    """The first held-out image of every class, [K, C, H, W] in [-1, 1]: what previews show."""
    first_of_class = [int((splits.test_labels == c).nonzero()[0]) for c in range(splits.captions.num_classes)]
    return to_signed_float(splits.test_images[first_of_class])


class UNetStage:
    """What the decoder and super-resolution stages share: a UNet conditioned on cached CLIP embeddings."""

    kind: str
    bundle_class: type[Decoder]

    def __init__(self, config: UNetStageConfig, conditioner: ClipConditioner, splits: ImageSplits, size: int, low_res_size: int = 0) -> None:
        clip = conditioner.clip
        image_channels = splits.image_shape[0]
        self.condition, self.use_tokens = config.condition, config.cross_attention and config.condition == "text"
        self.size, self.low_res_size = size, low_res_size
        model_config = DecoderConfig(
            unet=UNetConfig(image_channels=image_channels, image_size=size, channels=config.channel_tuple(), blocks_per_level=config.blocks_per_level,
                            full_res_channels=config.full_res_channels, dropout=config.dropout, condition_dim=clip.config.embed_dim,
                            token_dim=clip.text_encoder.token_dim if self.use_tokens else 0,
                            low_res_channels=image_channels if low_res_size else 0, noise_level_conditioning=bool(low_res_size)),
            schedule=schedule_config(config), condition=config.condition, clip=clip_fingerprint(clip), dataset=splits.name, low_res_size=low_res_size,
            pixel_space=config.pixel_space, logit_delta=config.logit_delta,
        )
        self.bundle = self.bundle_class(model_config)
        self.cache = ConditioningCache(conditioner, splits, keep_tokens=self.use_tokens)
        self.splits, self.conditioner = splits, conditioner

    def describe(self, what: str) -> str:
        return (f"{what}: {count_parameters(self.bundle.model):,} parameters, conditioned on CLIP {self.condition} embeddings"
                + (" + token cross-attention" if self.use_tokens else ""))

    def cached_condition(self, texts: list[str], indices: torch.Tensor) -> Conditioning:
        if self.condition == "image":
            return Conditioning(self.cache.image_embeddings[indices])
        return self.cache.text(texts, self.use_tokens)

    def preview_condition(self, real: torch.Tensor) -> Conditioning:
        """For held-out images [K, ...] of every class: their CLIP image embeddings, or each class's name."""
        if self.condition == "image":
            return self.conditioner.image(real)
        return self.conditioner.text([names[0] for names in self.splits.captions.names])

    def summary(self) -> dict:
        return {"condition": self.condition, "cross_attention": self.use_tokens, "image_size": self.size, "low_res_size": self.low_res_size}


class DecoderStage(UNetStage):
    """CLIP embedding (text or image) -> image; with ``resolution`` 14 the base of a cascade."""

    kind = "decoder"
    bundle_class = Decoder

    def __init__(self, config: DecoderTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        super().__init__(config, conditioner, splits, size=config.resolution or splits.image_shape[1])
        self.embedding_noise, self.embedding_augmentation = config.embedding_noise, config.embedding_augmentation
        self.description = self.describe(f"decoder UNet at {self.size}x{self.size}")

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        if self.embedding_augmentation:  # the target stays the original image: nearby views must decode to it
            cond = self.conditioner.image(random_affine(images, generator)).to("cpu")
        else:
            cond = self.cached_condition(texts, indices)
        if self.embedding_noise:  # e' = normalize(e + s * z / sqrt(D)): a random direction of norm ~s around each embedding
            noise = torch.randn(cond.embedding.shape, generator=generator) * self.embedding_noise / math.sqrt(cond.embedding.shape[-1])
            cond.embedding = torch.nn.functional.normalize(cond.embedding + noise, dim=-1)
        return self.bundle.encode(downsample(images, self.size)), cond

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        """Text: every class under every name form. Image: held-out images and their decoded CLIP embeddings."""
        decoder = Decoder(self.bundle.config, ema_model)
        captions = self.splits.captions
        if self.condition == "text":
            prompts = [names[k] for k in range(len(captions.name_forms)) for names in captions.names]  # "zero" .. "nine", "0" .. "9"
            images = decoder.generate(self.conditioner.text(prompts), PREVIEW_SAMPLING)
            title = f"EMA samples at step {step}: rows {', '.join(captions.name_forms)} names"
        else:
            real = held_out_examples(self.splits)
            decoded = decoder.generate(self.preview_condition(real), PREVIEW_SAMPLING)
            images, title = torch.cat([downsample(real, self.size), decoded]), f"step {step}: held-out images (top) decoded from their CLIP image embeddings"
        ema_model.eval()
        return save_grid(images, path, nrow=captions.num_classes, title=title)


class SuperResolutionStage(UNetStage):
    """CLIP embedding + a low-res image -> the full-size image; the condition noised as in Imagen."""

    kind = "superres"
    bundle_class = SuperResolution

    def __init__(self, config: SuperResolutionTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        native = splits.image_shape[1]
        require(config.low_res_size < native, f"--low_res_size must be smaller than the images ({native}x{native}), got {config.low_res_size}")
        super().__init__(config, conditioner, splits, size=native, low_res_size=config.low_res_size)
        self.max_augmentation_level = config.max_augmentation_level
        self.description = self.describe(f"super-resolution UNet {self.low_res_size}x{self.low_res_size} -> {native}x{native}")

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        cond = self.cached_condition(texts, indices)
        # Imagen: the low-res condition noised to a random level, which the UNet is told
        level = torch.rand(len(images), generator=generator) * self.max_augmentation_level
        cond.low_res = low_res_condition(downsample(images, self.low_res_size), level, self.size, self.bundle.schedule, generator)
        cond.noise_level = level
        return self.bundle.encode(images), cond

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        """Held-out images, their bicubic upsampling from low resolution, and the model's."""
        real = held_out_examples(self.splits)
        low = downsample(real, self.low_res_size)
        upscaled = SuperResolution(self.bundle.config, ema_model).upscale(low, self.preview_condition(real), 0.1, SUPERRES_SAMPLING)
        images = torch.cat([real, upsample(low, self.size), upscaled])
        title = f"step {step}: held-out images (top), bicubic from {self.low_res_size}x{self.low_res_size} (middle), super-resolution (bottom)"
        ema_model.eval()
        return save_grid(images, path, nrow=self.splits.captions.num_classes, title=title)


class PriorStage:
    """CLIP text -> CLIP image embedding: the prior on (x0 = sqrt(D) * image embedding, c = text embedding (+ tokens))."""

    kind = "prior"

    def __init__(self, config: PriorTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        clip = conditioner.clip
        model_config = PriorBundleConfig(
            prior=PriorConfig(embed_dim=clip.config.embed_dim, token_dim=clip.text_encoder.token_dim if config.prior_tokens else 0, width=config.prior_width,
                              depth=config.prior_depth, heads=max(1, config.prior_width // 32), max_tokens=clip.tokenizer.max_length),
            schedule=schedule_config(config), clip=clip_fingerprint(clip), dataset=splits.name,
        )
        self.use_tokens = config.prior_tokens
        self.bundle = Prior(model_config)
        self.cache = ConditioningCache(conditioner, splits, keep_tokens=self.use_tokens)
        self.scale = embedding_scale(clip.config.embed_dim)
        self.splits, self.conditioner = splits, conditioner
        self.description = (f"diffusion prior: {count_parameters(self.bundle.model):,} parameters, text embedding{' + tokens' if self.use_tokens else ''}"
                            " -> CLIP image embedding")
        self.quality: dict = {}

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        return self.cache.image_embeddings[indices] * self.scale, self.cache.text(texts, use_tokens=self.use_tokens)

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        self.quality = prior_quality(Prior(self.bundle.config, ema_model), self.conditioner, self.splits, per_class=20)
        ema_model.eval()
        return save_prior_quality_plot(self.quality, path, step)

    def summary(self) -> dict:
        return {"prior_quality": self.quality}


STAGES = {"decoder": DecoderStage, "superres": SuperResolutionStage, "prior": PriorStage}


def build_stage(config: DiffusionTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> Stage:
    return STAGES[config.stage](config, conditioner, splits)
