"""The noise schedule and training objective of a Gaussian diffusion model.

Notation (DDPM, Ho et al. 2020; code name -> symbol):

    betas            beta_t          variance added at step t
    alphas_cumprod   alpha_bar_t     prod_{s<=t} (1 - beta_s); signal kept after t steps
    signal, noise    sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)
    snr              alpha_bar_t / (1 - alpha_bar_t)

The schedule owns q(x_t | x_0), the training target (epsilon, x0 or v) and the
conversions between a network output and (x0, epsilon); samplers and the UNet
know nothing else about it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.errors import require

PREDICTIONS = ("eps", "x0", "v")
SCHEDULES = ("cosine", "linear")
TIMESTEP_DENSITIES = ("uniform", "laplace")
SPACINGS = ("linear", "quadratic")  # how a sampler picks its timesteps (NoiseSchedule.spaced_timesteps)
# The pixel stages' density over log-SNR: centred toward low noise, where the grey levels are drawn, with 30 % uniform (BENCHMARKS.md,
# "Levers on top of the logit space" and "EMA length"). Hang et al. 2024 centre theirs at 0 with scale 0.5 and 10 % uniform.
LAPLACE_MEAN, LAPLACE_SCALE, UNIFORM_SHARE = 2.0, 1.5, 0.3


@dataclass
class ScheduleConfig:
    kind: str = "cosine"
    num_steps: int = 1000
    prediction: str = "v"
    min_snr_gamma: float = 5.0  # 0 disables min-SNR weighting

    def __post_init__(self) -> None:
        require(self.kind in SCHEDULES, f"unknown noise schedule {self.kind!r}; choose from {', '.join(SCHEDULES)}")
        require(self.prediction in PREDICTIONS, f"unknown prediction target {self.prediction!r}; choose from {', '.join(PREDICTIONS)}")
        require(self.num_steps >= 2, f"a schedule needs at least 2 steps, got {self.num_steps}")
        require(self.min_snr_gamma >= 0, f"min_snr_gamma must be 0 (off) or positive, got {self.min_snr_gamma}")


def linear_betas(num_steps: int) -> torch.Tensor:
    """DDPM's schedule: beta rises linearly from 1e-4 to 0.02 (scaled for other step counts)."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM (Nichol & Dhariwal 2021, eq. 17): alpha_bar_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=0.999)


def gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped [B, 1, 1, ...] to broadcast against a [B, ...] tensor of ``ndim`` dims; ``values`` on t's device."""
    return values[t].float().view(-1, *([1] * (ndim - 1)))


class NoiseSchedule:
    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.num_steps = config.num_steps
        self.prediction = config.prediction
        self.betas = (cosine_betas if config.kind == "cosine" else linear_betas)(config.num_steps)  # float64 [T]
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)  # [T], strictly decreasing
        self.snr = self.alphas_cumprod / (1 - self.alphas_cumprod)
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def table(self, name: str, device: torch.device) -> torch.Tensor:
        """The float64 table ``name`` (alphas_cumprod or snr) on ``device``, copied there once, not in every loss."""
        if device.type == "cpu":
            return getattr(self, name)
        tables = self._on_device.setdefault(device, {})
        if name not in tables:
            tables[name] = getattr(self, name).to(device)
        return tables[name]

    def signal_and_noise(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), broadcastable."""
        alpha_bar = gather(self.table("alphas_cumprod", t.device), t, ndim)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)   (DDPM eq. 4)."""
        signal, sigma = self.signal_and_noise(t, x0.ndim)
        return signal * x0 + sigma * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: epsilon, x0, or v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        signal, sigma = self.signal_and_noise(t, x0.ndim)
        return signal * noise - sigma * x0

    def split_prediction(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> (x0_hat, eps_hat), using x_t = sqrt(a) x0 + sqrt(1-a) eps."""
        output = output.float()
        signal, sigma = self.signal_and_noise(t, x_t.ndim)
        if self.prediction == "eps":
            eps = output
            return (x_t - sigma * eps) / signal, eps
        if self.prediction == "x0":
            x0 = output
            return x0, (x_t - signal * x0) / sigma
        x0 = signal * x_t - sigma * output  # v-prediction
        return x0, sigma * x_t + signal * output

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        signal, sigma = self.signal_and_noise(t, x_t.ndim)
        return (x_t - signal * x0) / sigma

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weighting (Hang et al. 2023): caps the weight of easy, low-noise steps.

        Expressed for each target so that the effective x0-space weight is min(SNR, gamma), using
        x0 - x0_hat = (eps_hat - eps) / sqrt(SNR)  and  x0 - x0_hat = sigma_t (v_hat - v), sigma_t^2 = 1 / (1 + SNR).
        """
        snr = self.table("snr", t.device)[t].float()
        gamma = self.config.min_snr_gamma
        if gamma <= 0:
            return torch.ones_like(snr)
        clipped = snr.clamp(max=gamma)
        # ||x0 err||^2 = ||eps err||^2 / SNR = ||v err||^2 / (SNR + 1), so each target's weight is min(SNR, gamma) times that factor
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]

    def loss(self, output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weighted mean squared error [B] (DDPM's L_simple when unweighted)."""
        target = self.training_target(x0, noise, t)
        mse = F.mse_loss(output.float(), target, reduction="none").flatten(1).mean(1)
        return mse * self.loss_weights(t)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None, density: str = "uniform",
                         uniform_share: float = UNIFORM_SHARE, laplace_mean: float = LAPLACE_MEAN, laplace_scale: float = LAPLACE_SCALE) -> torch.Tensor:
        """Training timesteps [B]: uniform over 0..T-1 (DDPM), or by a Laplace density over log-SNR.

        "laplace" (Hang et al. 2024, "Improved noise schedule for diffusion training"): log(SNR) ~ Laplace(mean, scale),
        which spends the steps where the SNR is near exp(mean), mapped to the timestep whose log-SNR is nearest;
        a share ``uniform_share`` of the batch stays uniform, so both ends keep being trained.
        """
        device = generator.device if generator is not None else torch.device("cpu")  # drawn where the generator lives
        uniform = torch.randint(0, self.num_steps, (batch_size,), generator=generator, device=device)
        if density == "uniform":
            return uniform
        u = torch.rand(batch_size, generator=generator, device=device) - 0.5  # inverse CDF of the Laplace density
        log_snr = laplace_mean - laplace_scale * u.sign() * torch.log1p(-2 * u.abs())
        ascending = -self.table("snr", device).log().float()  # -log SNR rises with t
        t = torch.searchsorted(ascending, -log_snr.float()).clamp(max=self.num_steps - 1)
        keep_uniform = torch.rand(batch_size, generator=generator, device=device) < uniform_share
        return torch.where(keep_uniform, uniform, t)

    def spaced_timesteps(self, steps: int, spacing: str = "linear") -> list[int]:
        """``steps`` distinct timesteps from T-1 down to 0 (all of them when steps == T).

        "linear": evenly spaced in t. "quadratic": t_i = (T-1) u_i^2 for u evenly spaced from 1 to 0
        (DDIM, Song et al. 2021, appendix D.2), so the steps crowd towards t = 0, where the grey levels
        are drawn: at 20 steps the last ones are t = 44, 25, 11, 3, 0 instead of 158, 105, 53, 0.
        """
        require(1 <= steps <= self.num_steps, f"sampling steps must be between 1 and the schedule's {self.num_steps}, got {steps}")
        require(spacing in SPACINGS, f"unknown timestep spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
        if spacing == "linear":
            return torch.linspace(self.num_steps - 1, 0, steps).round().long().tolist()  # distinct already, since steps <= T
        u = torch.linspace(1, 0, steps, dtype=torch.float64)
        timesteps = ((self.num_steps - 1) * u**2).round().long().tolist()
        for i in range(steps - 2, -1, -1):  # rounding may repeat a small t: keep them strictly decreasing
            timesteps[i] = max(timesteps[i], timesteps[i + 1] + 1)
        return timesteps

    def alpha_bar(self, t: int) -> float:
        """alpha_bar at an integer timestep; t = -1 means the clean image (alpha_bar = 1)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])
