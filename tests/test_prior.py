from dataclasses import replace

import torch

from models.diffusion import NoiseSchedule, ScheduleConfig
from models.prior import PRIOR_SAMPLING, DiffusionPrior, PriorConfig, rerank, sample_image_embeddings
from models.samplers import SamplingOptions
from models.conditioning import Conditioning


def tiny_prior(token_dim: int = 6) -> DiffusionPrior:
    torch.manual_seed(0)
    return DiffusionPrior(PriorConfig(embed_dim=8, token_dim=token_dim, width=16, depth=1, heads=2, max_tokens=10)).eval()


def test_prior_shapes_tokens_and_drop():
    prior = tiny_prior()
    cond = Conditioning(torch.randn(3, 8), torch.randn(3, 5, 6), torch.tensor([[1, 1, 1, 0, 0]] * 3, dtype=torch.bool))
    out = prior(torch.randn(3, 8), torch.tensor([0, 500, 999]), cond)
    assert out.shape == (3, 8)
    other_tokens = Conditioning(cond.embedding, torch.randn(3, 5, 6), cond.token_mask, drop=torch.ones(3, dtype=torch.bool))
    dropped = Conditioning(cond.embedding, cond.tokens, cond.token_mask, drop=torch.ones(3, dtype=torch.bool))
    x, t = torch.randn(3, 8), torch.full((3,), 10)
    assert torch.allclose(prior(x, t, dropped), prior(x, t, other_tokens), atol=1e-6)  # dropped text is not read


def test_prior_ignores_padding_beyond_the_longest_caption():
    """A caption reads the same whatever the batch pads it to (positions do not shift with the padding)."""
    prior = tiny_prior()
    for p in prior.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    tokens, mask = torch.randn(2, 4, 6), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    padded, padded_mask = torch.cat([tokens, torch.randn(2, 3, 6)], dim=1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    x, t, emb = torch.randn(2, 8), torch.tensor([5, 700]), torch.randn(2, 8)
    short = prior(x, t, Conditioning(emb, tokens, mask))
    assert torch.allclose(short, prior(x, t, Conditioning(emb, padded, padded_mask)), atol=1e-5)
    assert not torch.allclose(short, prior(x, t, Conditioning(emb, torch.randn(2, 4, 6), mask)), atol=1e-3)  # the real tokens are read


def test_sampled_embeddings_are_unit_vectors():
    prior = tiny_prior(token_dim=0)
    schedule = NoiseSchedule(ScheduleConfig(prediction="x0", min_snr_gamma=0))
    emb = sample_image_embeddings(prior, schedule, Conditioning(torch.randn(4, 8)), replace(PRIOR_SAMPLING, steps=3), num_candidates=2)
    assert emb.shape == (4, 8) and torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_rerank_keeps_the_candidate_closest_to_the_text():
    text = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    candidates = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    candidates[0, 3], candidates[1, 1] = text[0], text[1]
    chosen = rerank(candidates, text)
    assert torch.equal(chosen[0], text[0]) and torch.equal(chosen[1], text[1])


class OraclePrior(torch.nn.Module):
    """Predicts x0 exactly: each caption's embedding (scaled by sqrt(D)), whatever the noise and timestep."""

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__()
        self.targets = targets  # [B, D] unit vectors
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.targets.repeat(x_t.shape[0] // len(self.targets), 1) * self.targets.shape[1] ** 0.5


def test_prior_sampler_recovers_the_oracle_embedding():
    targets = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    schedule = NoiseSchedule(ScheduleConfig(prediction="x0", min_snr_gamma=0))
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        sampling = SamplingOptions(sampler, steps=10, guidance_scale=1.0, thresholding="none")
        emb = sample_image_embeddings(OraclePrior(targets), schedule, Conditioning(torch.randn(3, 8)), sampling)
        assert torch.allclose(emb, targets, atol=1e-3), sampler
