"""The UNet's building blocks: timestep embedding, FiLM residual block, self- and cross-attention."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import Conditioning


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
