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
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


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


@dataclass
class Conditioning:
    """Everything the UNet is conditioned on, batched."""

    embedding: torch.Tensor  # [B, D] CLIP embedding (unit norm)
    tokens: torch.Tensor | None = None  # [B, L, T] text token states
    token_mask: torch.Tensor | None = None  # [B, L] True on real tokens
    low_res: torch.Tensor | None = None  # [B, C, H, W] upsampled low-res image (super-resolution)
    noise_level: torch.Tensor | None = None  # [B] augmentation level in [0, 1] of low_res
    drop: torch.Tensor | None = None  # [B] bool: use the null conditioning instead (CFG)

    def repeat_with_null(self) -> "Conditioning":
        """[cond; cond with drop=True] for one batched guided forward pass."""
        def twice(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t, t])
        b = self.embedding.shape[0]
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(self.embedding.device)
        return Conditioning(twice(self.embedding), twice(self.tokens), twice(self.token_mask), twice(self.low_res), twice(self.noise_level), drop)

    def select(self, index: slice | torch.Tensor) -> "Conditioning":
        """The conditioning of a sub-batch (for chunked generation)."""
        return Conditioning(*[None if t is None else t[index] for t in (self.embedding, self.tokens, self.token_mask, self.low_res, self.noise_level, self.drop)])

    def to(self, device: torch.device) -> "Conditioning":
        return Conditioning(*[None if t is None else t.to(device) for t in (self.embedding, self.tokens, self.token_mask, self.low_res, self.noise_level, self.drop)])


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[B] -> [B, dim]: the Transformer's position encoding applied to timesteps (DDPM, sec. 3.3)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning vector as a FiLM scale and shift in between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # [B, c_out, H, W]
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over pixels, then (optionally) cross-attention to text tokens.

    The cross-attention keys always include one learned null token, so a
    sample whose text is dropped (or masked) still has something to attend to.
    """

    def __init__(self, channels: int, head_dim: int, token_dim: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.cross = token_dim > 0
        if self.cross:
            self.cross_norm = group_norm(channels)
            self.to_q = nn.Linear(channels, channels)
            self.to_kv = nn.Linear(token_dim, 2 * channels)
            self.null_token = nn.Parameter(torch.randn(1, 1, token_dim) * 0.02)
            self.cross_out = nn.Linear(channels, channels)
            nn.init.zeros_(self.cross_out.weight)
            nn.init.zeros_(self.cross_out.bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # [B, heads, N, c/heads]

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # each [B, HW, C]
        attended = F.scaled_dot_product_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v))
        x = x + self.out(attended.transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).view(b, c, h, w))
        if not self.cross or cond.tokens is None:
            return x
        tokens = torch.cat([self.null_token.expand(b, -1, -1).to(cond.tokens.dtype), cond.tokens], dim=1)  # [B, 1+L, T]
        mask = cond.token_mask if cond.token_mask is not None else torch.ones(cond.tokens.shape[:2], dtype=torch.bool, device=x.device)
        if cond.drop is not None:
            mask = mask & ~cond.drop[:, None]
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), mask], dim=1)  # the null token is always visible
        q = self.to_q(self.cross_norm(x).flatten(2).transpose(1, 2))  # [B, HW, C]
        k, v = self.to_kv(tokens).chunk(2, dim=-1)  # [B, 1+L, C]
        attended = F.scaled_dot_product_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v), attn_mask=mask[:, None, None, :])
        return x + self.cross_out(attended.transpose(1, 2).reshape(b, h * w, c)).transpose(1, 2).view(b, c, h, w)


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

        def attention(level: int) -> nn.Module:
            return AttentionBlock(ch[level], config.head_dim, config.token_dim) if level in config.attention_levels else nn.Identity()

        self.down = nn.ModuleList()
        skip_channels = [ch[0]]
        c = ch[0]
        for level, c_level in enumerate(ch):
            for _ in range(config.blocks_per_level):
                self.down.append(nn.ModuleList([ResidualBlock(c, c_level, emb_dim, config.dropout), attention(level)]))
                c = c_level
                skip_channels.append(c)
            if level < len(ch) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # downsample
                skip_channels.append(c)
        self.middle = nn.ModuleList([ResidualBlock(c, c, emb_dim, config.dropout), AttentionBlock(c, config.head_dim, config.token_dim),
                                     ResidualBlock(c, c, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch))):
            for _ in range(config.blocks_per_level + 1):
                self.up.append(nn.ModuleList([ResidualBlock(c + skip_channels.pop(), ch[level], emb_dim, config.dropout), attention(level)]))
                c = ch[level]
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2))  # a marker: resized to the next skip below
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
            emb = emb + self.noise_level_mlp(sinusoidal_embedding(cond.noise_level * 1000, self.config.channels[0]))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x [B, C, H, W], t [B] (integer or real timesteps) -> prediction [B, C, H, W]."""
        emb = self.embed(t, cond)
        if self.config.low_res_channels:
            assert cond.low_res is not None, "a super-resolution UNet needs the low-res image"
            x = torch.cat([x, cond.low_res.to(x.dtype)], dim=1)
        h = self.stem(x)  # [B, ch0, H/2, W/2]
        skips = [h]
        for block in self.down:
            if isinstance(block, nn.ModuleList):
                h = block[1](block[0](h, emb), cond) if not isinstance(block[1], nn.Identity) else block[0](h, emb)
            else:
                h = block(h)  # downsample: [B, c, H/2^k, W/2^k] -> [B, c, ceil(half)]
            skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb), cond), emb)
        for block in self.up:
            if isinstance(block, nn.ModuleList):
                h = block[0](torch.cat([h, skips.pop()], dim=1), emb)
                h = h if isinstance(block[1], nn.Identity) else block[1](h, cond)
            else:  # nearest upsample to the next skip's size (7 -> 14, or 4 -> 7 for odd sizes); the
                # next residual block's convolution follows, so a separate upsampling conv is not needed
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")
        out = self.head(h)  # [B, C, H, W]
        if self.config.full_res_channels:  # out + a correction from (out, x_t) at full resolution, told the timestep
            r = self.refine_in(torch.cat([out, x], dim=1)) + self.refine_emb(emb)[:, :, None, None]  # [B, k, H, W]
            out = out + self.refine_out(r)
        return out


def with_overrides(config: UNetConfig, **changes) -> UNetConfig:
    return replace(config, **changes)
