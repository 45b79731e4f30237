"""The DALL-E 2 diffusion prior: text -> CLIP *image* embedding (Ramesh et al. 2022, sec. 2.1).

CLIP's text and image embeddings live in one space but not in one place (the
"modality gap"): the text embedding of "six" is not where images of sixes
land. The prior learns to generate plausible image embeddings for a caption,
which an image-conditioned decoder then turns into pixels.

It is a small Transformer over the sequence

    [text tokens (L, optional), text embedding, timestep, noisy image embedding, learned query]

that reads its prediction off the query's output. DALL-E 2 predicts the clean
embedding (x0); the default here is v-prediction with min-SNR-5 weighting, whose
samples stayed more varied than x0's (BENCHMARKS.md, "unCLIP: the diffusion prior"). Embeddings are unit vectors; the
diffusion runs on them scaled by sqrt(D) so each coordinate has unit variance,
like the noise. Conditioning dropout (text embedding -> learned null, tokens
masked) gives classifier-free guidance. The prior follows the UNet's calling
convention, model(x_t, t, cond), so the same schedule, samplers and guidance
drive it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.diffusion import NoiseSchedule, ScheduleConfig
from models.pipeline import DiffusionBundle
from models.samplers import Denoiser, SamplingOptions, sample
from models.conditioning import Conditioning
from models.layers import sinusoidal_embedding
from utils.errors import require

FIXED_SLOTS = 4  # the sequence's last four positions: text embedding, timestep, noisy image embedding, query
# The prior draws embeddings scaled by sqrt(D), not pixels in [-1, 1]: nothing to threshold.
PRIOR_SAMPLING = SamplingOptions(steps=25, guidance_scale=2.0, thresholding="none")


@dataclass
class PriorConfig:
    embed_dim: int = 64
    token_dim: int = 0  # >0: also attend to the text token states of this size (0: only the pooled text embedding)
    width: int = 128
    depth: int = 4
    heads: int = 4
    max_tokens: int = 48


class DiffusionPrior(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.text_in = nn.Linear(config.embed_dim, w)
        self.null_text = nn.Parameter(torch.zeros(config.embed_dim))
        self.time_in = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.noisy_in = nn.Linear(config.embed_dim, w)
        self.query = nn.Parameter(torch.randn(w) * 0.02)
        if config.token_dim:
            self.tokens_in = nn.Linear(config.token_dim, w)
        self.positions = nn.Parameter(torch.randn(config.max_tokens + FIXED_SLOTS, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, config.heads, 4 * w, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, config.embed_dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """x_t [B, D] noisy scaled image embedding, t [B] -> predicted clean scaled embedding [B, D]."""
        b = x_t.shape[0]
        text = cond.embedding
        drop = cond.drop if cond.drop is not None else torch.zeros(b, dtype=torch.bool, device=x_t.device)
        text = torch.where(drop[:, None], self.null_text.to(text.dtype).expand_as(text), text)
        fixed = torch.stack([self.text_in(text), self.time_in(sinusoidal_embedding(t, self.config.width)),
                             self.noisy_in(x_t), self.query.expand(b, -1)], dim=1)  # [B, FIXED_SLOTS, W]
        fixed = fixed + self.positions[self.config.max_tokens :]  # the fixed slots have positions of their own, after the tokens'
        if self.config.token_dim and cond.tokens is not None:
            # Only as many token slots as the longest caption in the batch: padding costs compute, not accuracy.
            length = max(1, int(cond.token_mask[:, : self.config.max_tokens].sum(1).max()))
            tokens = self.tokens_in(cond.tokens[:, :length]) + self.positions[:length]  # [B, L, W]
            mask = cond.token_mask[:, :length] & ~drop[:, None]
            sequence = torch.cat([tokens, fixed], dim=1)  # [B, L + FIXED_SLOTS, W]
            keep = torch.cat([mask, torch.ones(b, FIXED_SLOTS, dtype=torch.bool, device=x_t.device)], dim=1)
        else:
            sequence, keep = fixed, torch.ones(b, FIXED_SLOTS, dtype=torch.bool, device=x_t.device)
        hidden = self.transformer(sequence, src_key_padding_mask=~keep)  # [B, L + FIXED_SLOTS, W]
        return self.out(hidden[:, -1])  # the query's output: [B, D]


def embedding_scale(embed_dim: int) -> float:
    """Unit-norm embeddings times sqrt(D): unit variance per coordinate, like the noise."""
    return math.sqrt(embed_dim)


@dataclass
class PriorBundleConfig:
    prior: PriorConfig = field(default_factory=PriorConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(prediction="v", min_snr_gamma=5.0))
    clip: dict = field(default_factory=dict)
    dataset: str = "mnist"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorBundleConfig":
        return cls(PriorConfig(**d["prior"]), ScheduleConfig(**d["schedule"]), d["clip"], d["dataset"])


@torch.no_grad()
def sample_image_embeddings(model: nn.Module, schedule: NoiseSchedule, cond: Conditioning, sampling: SamplingOptions = PRIOR_SAMPLING,
                            num_candidates: int = 1) -> torch.Tensor:
    """Text conditioning [B] -> unit-norm CLIP image embeddings [B, D].

    With ``num_candidates`` k > 1, k embeddings are drawn per caption and the one
    most similar to the caption's text embedding is kept (DALL-E 2's reranking).
    """
    require(num_candidates > 0, f"num_candidates must be positive, got {num_candidates}")
    device = next(model.parameters()).device
    b, d = cond.embedding.shape
    index = torch.arange(b).repeat_interleave(num_candidates)
    expanded = cond.select(index).to(device)  # [B*k]
    denoiser = Denoiser(model, schedule, expanded, sampling.guidance_scale, sampling.thresholding, guidance_from_t=sampling.guidance_from_t)
    generator = torch.Generator().manual_seed(sampling.seed)
    scaled = sample(denoiser, schedule, (b * num_candidates, d), sampling, generator, device)
    candidates = F.normalize(scaled.float(), dim=-1).view(b, num_candidates, d)
    return rerank(candidates, cond.embedding.to(device).float())


def rerank(candidates: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """candidates [B, k, D], text [B, D] -> the candidate with the highest cosine similarity to the text [B, D]."""
    scores = torch.einsum("bkd,bd->bk", candidates, F.normalize(text_embedding, dim=-1))
    return candidates[torch.arange(len(candidates)), scores.argmax(dim=1)]


class Prior(DiffusionBundle):
    """The DALL-E 2 prior with its schedule: CLIP text conditioning -> unit-norm CLIP image embeddings."""

    kind = "prior"
    config_class = PriorBundleConfig
    default_guidance_scale = PRIOR_SAMPLING.guidance_scale

    @staticmethod
    def build(config: PriorBundleConfig) -> nn.Module:
        return DiffusionPrior(config.prior)

    def sample(self, cond: Conditioning, sampling: SamplingOptions = PRIOR_SAMPLING, num_candidates: int = 1) -> torch.Tensor:
        return sample_image_embeddings(self.model, self.schedule, cond, sampling, num_candidates)
