import math

import pytest
import torch

from models.diffusion import NoiseSchedule, ScheduleConfig
from models.samplers import Denoiser, SamplingOptions, dynamic_threshold, sample
from models.conditioning import Conditioning
from models.unet import UNet, UNetConfig
from utils.errors import UserError
from utils.training import EMA


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_alpha_bar_decreases_from_one_to_zero(kind):
    s = NoiseSchedule(ScheduleConfig(kind=kind))
    a = s.alphas_cumprod
    assert torch.all(a[1:] < a[:-1]) and 0.99 < a[0] < 1 and a[-1] < 0.01
    assert torch.allclose(a, torch.cumprod(1 - s.betas, 0))


def test_q_sample_matches_closed_form_moments():
    s = NoiseSchedule(ScheduleConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    for t in (0, 250, 600, 999):
        tt = torch.full((20000,), t)
        x_t = s.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        a = s.alphas_cumprod[t].item()
        assert abs(x_t.mean().item() - math.sqrt(a) * 0.7) < 0.02
        assert abs(x_t.var().item() - (1 - a)) < 0.03


def test_q_sample_equals_iterating_the_forward_process():
    """q(x_t|x_0) in closed form has the variance of t single steps x_t = sqrt(1-b) x_{t-1} + sqrt(b) eps."""
    s = NoiseSchedule(ScheduleConfig(kind="linear", num_steps=50))
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(40000)
    for beta in s.betas.float():
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g)
    assert abs(x.var().item() - (1 - s.alphas_cumprod[-1].item())) < 0.02


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_target_and_split_prediction_are_inverse(prediction):
    s = NoiseSchedule(ScheduleConfig(prediction=prediction))
    x0, noise = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    # Not t = 999: there sqrt(alpha_bar) ~ 0.006, and recovering x0 from an eps-prediction
    # amplifies float32 rounding by 1/0.006 (the weakness v-prediction was made to fix).
    t = torch.tensor([0, 10, 100, 500, 900, 980])
    x_t = s.q_sample(x0, t, noise)
    x0_hat, eps_hat = s.split_prediction(s.training_target(x0, noise, t), x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps_hat, noise, atol=1e-3)


def test_min_snr_weight_caps_low_noise_steps():
    s = NoiseSchedule(ScheduleConfig(prediction="eps", min_snr_gamma=5.0))
    w = s.loss_weights(torch.tensor([0, 999]))
    assert w[0] < 0.01 and w[1] == pytest.approx(1.0)


class OracleModel(torch.nn.Module):
    """The exact denoiser of a two-point distribution {-1, +1}^D (equal weights), in the schedule's output form."""

    def __init__(self, schedule: NoiseSchedule, points: torch.Tensor) -> None:
        super().__init__()
        self.schedule, self.points = schedule, points  # [K, C, H, W]

    def forward(self, x_t, t, cond):
        signal, sigma = self.schedule.signal_and_noise(t, x_t.ndim)
        # log N(x_t; signal * p, sigma^2) per point -> posterior weights -> E[x0 | x_t]
        dist = ((x_t[:, None] - signal[:, None] * self.points[None]) ** 2).flatten(2).sum(-1)  # [B, K]
        weights = torch.softmax(-dist / (2 * sigma.flatten()[:, None] ** 2), dim=1)
        x0 = torch.einsum("bk,kchw->bchw", weights, self.points)
        eps = (x_t - signal * x0) / sigma
        return self.schedule.training_target(x0, eps, t)


@pytest.mark.parametrize("sampler,steps,spacing", [("ddpm", 1000, "linear"), ("ddpm", 50, "linear"), ("ddim", 50, "linear"), ("dpmpp_2m", 20, "linear"),
                                                    ("ddim", 50, "quadratic"), ("dpmpp_2m", 20, "quadratic")])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_samplers_recover_the_data_with_an_oracle(sampler, steps, spacing, prediction):
    schedule = NoiseSchedule(ScheduleConfig(prediction=prediction))
    points = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0)])
    denoiser = Denoiser(OracleModel(schedule, points), schedule, Conditioning(torch.zeros(200, 1)), thresholding="none")
    x = sample(denoiser, schedule, (200, 1, 2, 2), SamplingOptions(sampler, steps, spacing=spacing), torch.Generator().manual_seed(0))
    distance = torch.minimum((x - points[0]).abs().amax((1, 2, 3)), (x - points[1]).abs().amax((1, 2, 3)))
    assert distance.max() < 0.05  # every sample lands on a data point
    share_positive = (x.mean((1, 2, 3)) > 0).float().mean().item()
    assert 0.3 < share_positive < 0.7  # and both modes are drawn


def tiny_unet(**overrides) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=(8, 16), condition_dim=4, **overrides)).eval()


def test_guidance_scale_one_is_the_conditional_output():
    schedule = NoiseSchedule(ScheduleConfig())
    model = tiny_unet()
    torch.nn.init.normal_(model.head[2].weight)  # leave the zero-init so outputs depend on the conditioning
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    cond = Conditioning(torch.randn(3, 4))
    x = torch.randn(3, 1, 28, 28)
    conditional = model(x, torch.full((3,), 500), cond)
    assert torch.allclose(Denoiser(model, schedule, cond, 1.0).model_output(x, 500), conditional, atol=1e-5)
    guided = Denoiser(model, schedule, cond, 3.0).model_output(x, 500)
    unconditional = model(x, torch.full((3,), 500), Conditioning(cond.embedding, drop=torch.ones(3, dtype=torch.bool)))
    assert torch.allclose(guided, unconditional + 3 * (conditional - unconditional), atol=1e-4)
    interval = Denoiser(model, schedule, cond, 3.0, guidance_from_t=600)  # a guidance interval: t = 500 lies below it
    assert torch.allclose(interval.model_output(x, 500), conditional, atol=1e-5)
    assert torch.allclose(interval.model_output(x, 700), Denoiser(model, schedule, cond, 3.0).model_output(x, 700), atol=1e-5)
    with pytest.raises(UserError, match="guidance_from_t"):
        SamplingOptions(guidance_from_t=1000)


def test_dynamic_thresholding_bounds_and_keeps_in_range_images():
    x = torch.linspace(-3, 3, 100).view(1, 1, 10, 10)
    y = dynamic_threshold(x)
    assert y.abs().max() <= 1 and y.abs().max() > 0.9
    inside = torch.linspace(-0.9, 0.9, 100).view(1, 1, 10, 10)
    assert torch.equal(dynamic_threshold(inside), inside)


def test_ema_update_moves_towards_the_model():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.model.weight, before + 1.0, atol=1e-3)
    ema2 = EMA(model, decay=0.9)
    ema2.load_state_dict(ema.state_dict())
    assert torch.equal(ema2.model.weight, ema.model.weight) and ema2.num_updates == 200


def test_seeded_sampling_is_reproducible():
    schedule = NoiseSchedule(ScheduleConfig())
    model = tiny_unet()
    cond = Conditioning(torch.randn(2, 4))
    run = lambda seed: sample(Denoiser(model, schedule, cond, 2.0), schedule, (2, 1, 28, 28), SamplingOptions("ddim", 5, eta=1.0),
                              torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_laplace_timestep_density_centres_where_asked_and_keeps_the_ends():
    schedule = NoiseSchedule(ScheduleConfig())
    hang = dict(uniform_share=0.1, laplace_mean=0.0, laplace_scale=0.5)  # Hang et al. 2024's density
    t = schedule.sample_timesteps(50_000, torch.Generator().manual_seed(0), "laplace", **hang)
    snr_one = int(schedule.snr.log().abs().argmin())  # log SNR = 0
    assert abs(t.float().median().item() - snr_one) < 15
    assert 0.005 < (t < 100).float().mean() < 0.05 and 0.005 < (t >= 900).float().mean() < 0.05  # the 10 % uniform share
    assert ((t > 350) & (t < 650)).float().mean() > 0.7  # against 0.3 for uniform
    wider = schedule.sample_timesteps(50_000, torch.Generator().manual_seed(0), "laplace", uniform_share=0.5, laplace_mean=0.0, laplace_scale=1.0)
    assert 0.045 < (wider < 100).float().mean() < 0.07  # 0.5 x 0.1 uniform + 0.5 x P(log SNR > 3.5) = 0.05 + 0.007
    assert ((wider > 350) & (wider < 650)).float().mean() < ((t > 350) & (t < 650)).float().mean()
    low_noise = schedule.sample_timesteps(50_000, torch.Generator().manual_seed(0), "laplace", uniform_share=0, laplace_mean=3.0, laplace_scale=0.5)
    assert abs(schedule.snr.log()[low_noise].median().item() - 3.0) < 0.1  # centred where asked, toward low noise
    assert torch.equal(schedule.sample_timesteps(8, torch.Generator().manual_seed(1)),
                       torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(1)))  # uniform: DDPM's


@pytest.mark.parametrize("steps", [1, 2, 20, 50, 999, 1000])
def test_spaced_timesteps_run_from_the_last_step_to_zero(steps):
    schedule = NoiseSchedule(ScheduleConfig())
    for spacing in ("linear", "quadratic"):
        timesteps = schedule.spaced_timesteps(steps, spacing)
        assert len(timesteps) == steps and timesteps[0] == 999 and all(a > b for a, b in zip(timesteps, timesteps[1:]))
        assert timesteps[-1] == (0 if steps > 1 else 999)
    assert schedule.spaced_timesteps(20, "quadratic")[-5:] == [44, 25, 11, 3, 0]  # crowded toward t = 0
    assert schedule.spaced_timesteps(20)[-4:] == [158, 105, 53, 0]
    for n in (15, 29, 57):  # linear: the float32 linspace of before, step for step (float64 would round some steps the other way)
        assert schedule.spaced_timesteps(n) == torch.linspace(999, 0, n).round().long().tolist()
    with pytest.raises(UserError, match="spacing"):
        schedule.spaced_timesteps(20, "cubic")
    with pytest.raises(UserError, match="spacing"):
        SamplingOptions(spacing="cubic")


def test_the_default_density_leans_toward_low_noise():
    """The pixel stages' Laplace(2, 1.5) with 30 % uniform: 42 % of the batch above log-SNR 2, where uniform t puts 22 % (BENCHMARKS.md)."""
    schedule = NoiseSchedule(ScheduleConfig())
    log_snr = schedule.snr.log()
    default = log_snr[schedule.sample_timesteps(50_000, torch.Generator().manual_seed(0), "laplace")]
    uniform = log_snr[schedule.sample_timesteps(50_000, torch.Generator().manual_seed(0))]
    assert 0.39 < (default > 2).float().mean() < 0.45 and 0.19 < (uniform > 2).float().mean() < 0.25
    assert 0.06 < (default < -2).float().mean() < 0.12  # the high-noise end still trained
