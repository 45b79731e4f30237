"""A conditional UNet for MNIST-sized diffusion, built for a CPU budget.

    x_t [B, C, H, W] (+ low-res condition [B, C, H, W] for super-resolution)
      -> PixelUnshuffle(2): [B, 4C, H/2, W/2]    no convolution ever runs at full resolution
      -> level 0 at H/2 (e.g. 14x14), level 1 at H/4 (7x7) with attention, middle block
      -> mirrored up path with skip connections -> PixelShuffle(2) -> [B, C, H, W]
      (-> optional: a small full-resolution refinement that sees x_t and that output)

Conditioning (``Conditioning``): the timestep's sinusoidal embedding plus a
projected CLIP embedding (text or image: they share one space) drive every
residual block by a FiLM scale and shift; optionally the attention blocks also
cross-attend to the text encoder's per-token states (latent diffusion, Imagen).
For classifier-free guidance (Ho & Salimans, 2022) a boolean ``drop`` swaps
a sample's conditioning for a learned null embedding. The network knows
nothing of noise schedules: it maps (x_t, t, conditioning) to one tensor.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import Conditioning
from models.layers import AttentionBlock, ResidualBlock, group_norm, sinusoidal_embedding


NOISE_LEVEL_TIMESTEPS = 1000  # super-resolution: the augmentation level s in [0, 1] is embedded like a timestep s * 1000


@dataclass
class UNetConfig:
    image_channels: int = 1
    image_size: int = 28
    channels: tuple[int, ...] = (32, 48, 64)  # per level; level 0 runs at image_size / 2 (14x14), then 7x7, 4x4
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = (1,)
    head_dim: int = 32
    condition_dim: int = 64  # CLIP embedding size
    token_dim: int = 0  # text token state size; 0 disables cross-attention
    low_res_channels: int = 0  # >0: super-resolution, the upsampled low-res image is concatenated to x_t
    noise_level_conditioning: bool = False  # super-resolution: embed the augmentation level of the low-res image
    dropout: float = 0.0
    full_res_channels: int = 0  # >0: a residual refinement at full resolution with this many channels after the head

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.attention_levels = tuple(self.attention_levels)


class Block(nn.Module):
    """One step of a level: a residual block, then attention where the level has it."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, config: UNetConfig, attention: bool) -> None:
        super().__init__()
        self.res = ResidualBlock(c_in, c_out, emb_dim, config.dropout)
        self.attention = AttentionBlock(c_out, config.head_dim, config.token_dim) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        h = self.res(h, emb)  # [B, c_out, H, W]
        return h if self.attention is None else self.attention(h, cond)


class DownLevel(nn.Module):
    """Blocks at one resolution, then (except at the bottom) a stride-2 convolution to the next.

    Returns the output and the skips it leaves for the up path: one per block, one after downsampling.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, config: UNetConfig, attention: bool, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(c_in if i == 0 else c_out, c_out, emb_dim, config, attention) for i in range(config.blocks_per_level)])
        self.downsample = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1) if downsample else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            h = block(h, emb, cond)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)  # [B, c, H, W] -> [B, c, ceil(H/2), ceil(W/2)]
            skips.append(h)
        return h, skips


class UpLevel(nn.Module):
    """Blocks at one resolution, each fed a skip from the down path, then (except at the top) upsampling.

    Upsampling is nearest-neighbour to the next skip's size (7 -> 14, or 4 -> 7 for odd sizes); the
    next block's convolution follows, so a separate upsampling convolution is not needed.
    """

    def __init__(self, c_in: int, skip_channels: list[int], c_out: int, emb_dim: int, config: UNetConfig, attention: bool, upsample: bool) -> None:
        super().__init__()
        ins = [c_in] + [c_out] * (len(skip_channels) - 1)
        self.blocks = nn.ModuleList([Block(c + skip, c_out, emb_dim, config, attention) for c, skip in zip(ins, skip_channels)])
        self.upsample = upsample

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Consumes its skips from the end of ``skips``."""
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, cond)  # [B, c + c_skip, H, W] -> [B, c_out, H, W]
        if self.upsample:
            h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
        return h


class Middle(nn.Module):
    """At the lowest resolution: residual block, attention, residual block."""

    def __init__(self, c: int, emb_dim: int, config: UNetConfig) -> None:
        super().__init__()
        self.res1 = ResidualBlock(c, c, emb_dim, config.dropout)
        self.attention = AttentionBlock(c, config.head_dim, config.token_dim)
        self.res2 = ResidualBlock(c, c, emb_dim, config.dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.res2(self.attention(self.res1(h, emb), cond), emb)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        emb_dim = 4 * ch[0]
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.condition_proj = nn.Linear(config.condition_dim, emb_dim)
        self.null_embedding = nn.Parameter(torch.zeros(config.condition_dim))
        if config.noise_level_conditioning:
            self.noise_level_mlp = nn.Sequential(nn.Linear(ch[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        in_channels = 4 * (config.image_channels + config.low_res_channels)
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(in_channels, ch[0], 3, padding=1))

        levels = range(len(ch))
        self.down = nn.ModuleList([DownLevel(ch[max(level - 1, 0)], ch[level], emb_dim, config, level in config.attention_levels, level < len(ch) - 1)
                                   for level in levels])
        # The skips' channels, in the order the down path leaves them (the stem's first): the up path takes them from the end.
        skip_channels = [ch[0]] + [ch[level] for level in levels for _ in range(config.blocks_per_level + (level < len(ch) - 1))]
        self.middle = Middle(ch[-1], emb_dim, config)
        self.up = nn.ModuleList()
        c = ch[-1]
        for level in reversed(levels):
            taken = [skip_channels.pop() for _ in range(config.blocks_per_level + 1)]
            self.up.append(UpLevel(c, taken, ch[level], emb_dim, config, level in config.attention_levels, upsample=level > 0))
            c = ch[level]
        self.head = nn.Sequential(group_norm(c), nn.SiLU(), nn.Conv2d(c, 4 * config.image_channels, 3, padding=1), nn.PixelShuffle(2))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)
        if config.full_res_channels:  # the only convolutions at full resolution: edges drawn where they are seen
            k, out_channels = config.full_res_channels, config.image_channels
            self.refine_in = nn.Conv2d(out_channels + config.image_channels + config.low_res_channels, k, 3, padding=1)
            self.refine_emb = nn.Linear(emb_dim, k)
            self.refine_out = nn.Sequential(nn.SiLU(), nn.Conv2d(k, k, 3, padding=1), nn.SiLU(), nn.Conv2d(k, out_channels, 3, padding=1))
            nn.init.zeros_(self.refine_out[3].weight)
            nn.init.zeros_(self.refine_out[3].bias)
        self.register_load_state_dict_pre_hook(upgrade_flat_state_dict)

    def embed(self, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Timestep + conditioning -> one vector per sample [B, 4*ch0]."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.channels[0]))
        condition = cond.embedding
        if cond.drop is not None:
            condition = torch.where(cond.drop[:, None], self.null_embedding.to(condition.dtype).expand_as(condition), condition)
        # CLIP embeddings are unit vectors (entries ~ 1/sqrt(D)); scaled by sqrt(D) they enter with unit
        # variance per coordinate, as loud as the timestep from the first step, and conditioning is learned sooner.
        emb = emb + self.condition_proj(condition * math.sqrt(self.config.condition_dim))
        if self.config.noise_level_conditioning:
            assert cond.noise_level is not None, "a super-resolution UNet needs the low-res noise level"
            level_as_timestep = cond.noise_level * NOISE_LEVEL_TIMESTEPS
            emb = emb + self.noise_level_mlp(sinusoidal_embedding(level_as_timestep, self.config.channels[0]))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x [B, C, H, W], t [B] (integer or real timesteps) -> prediction [B, C, H, W]."""
        emb = self.embed(t, cond)
        if self.config.low_res_channels:
            assert cond.low_res is not None, "a super-resolution UNet needs the low-res image"
            x = torch.cat([x, cond.low_res.to(x.dtype)], dim=1)
        h = self.stem(x)  # [B, ch0, H/2, W/2]
        skips = [h]
        for level in self.down:
            h, level_skips = level(h, emb, cond)
            skips += level_skips
        h = self.middle(h, emb, cond)
        for level in self.up:
            h = level(h, skips, emb, cond)
        out = self.head(h)  # [B, C, H, W]
        if self.config.full_res_channels:  # out + a correction from (out, x_t) at full resolution, told the timestep
            r = self.refine_in(torch.cat([out, x], dim=1)) + self.refine_emb(emb)[:, :, None, None]  # [B, k, H, W]
            out = out + self.refine_out(r)
        return out


def upgrade_flat_state_dict(module: UNet, state_dict: dict, prefix: str, *args) -> None:
    """Rename, in place, the weights of a UNet saved before its levels were modules (checkpoints up to 2026-11).

    The old UNet kept flat lists: ``down.{i}.0`` / ``.1`` (residual block / attention), ``down.{i}`` (a
    downsampling conv), ``middle.{0,1,2}``, and on the way up one ``nn.Upsample`` entry per level that
    held no weights but took an index. Same modules, same order, so the renamed weights load exactly.
    """
    if not any(re.match(re.escape(prefix) + r"(down|up)\.\d+\.\d+\.", key) for key in state_dict):
        return
    config = module.config
    renames = {f"middle.{i}.": f"middle.{name}." for i, name in enumerate(("res1", "attention", "res2"))}
    old = 0
    for level in range(len(config.channels)):
        for j in range(config.blocks_per_level):
            renames |= {f"down.{old}.0.": f"down.{level}.blocks.{j}.res.", f"down.{old}.1.": f"down.{level}.blocks.{j}.attention."}
            old += 1
        if level < len(config.channels) - 1:
            renames[f"down.{old}."] = f"down.{level}.downsample."
            old += 1
    old = 0
    for k, level in enumerate(reversed(range(len(config.channels)))):
        for j in range(config.blocks_per_level + 1):
            renames |= {f"up.{old}.0.": f"up.{k}.blocks.{j}.res.", f"up.{old}.1.": f"up.{k}.blocks.{j}.attention."}
            old += 1
        old += level > 0  # the weightless upsampling marker
    for key in list(state_dict):
        name = key[len(prefix):]
        match = max((o for o in renames if name.startswith(o)), key=len, default=None)
        if key.startswith(prefix) and match is not None:
            state_dict[prefix + renames[match] + name[len(match):]] = state_dict.pop(key)


def with_overrides(config: UNetConfig, **changes) -> UNetConfig:
    return replace(config, **changes)
