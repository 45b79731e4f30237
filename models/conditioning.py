"""What a diffusion network is conditioned on, as one batched object.

Every stage takes ``model(x_t, t, cond)``: the UNet decoder, the super-resolution
UNet and the prior read the fields they need and ignore the rest, so the
samplers and classifier-free guidance treat them all alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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

    def to(self, device: torch.device, non_blocking: bool = False) -> "Conditioning":
        """On ``device``; ``non_blocking`` copies from the CPU without waiting for the GPU's queued work (a training step's
        copy would otherwise stall the host until the previous step has finished on the device)."""
        return Conditioning(*[None if t is None else t.to(device, non_blocking=non_blocking)
                              for t in (self.embedding, self.tokens, self.token_mask, self.low_res, self.noise_level, self.drop)])
