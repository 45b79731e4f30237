"""Samplers: from noise to images, calling only a denoiser and the schedule.

``Denoiser`` wraps the network with classifier-free guidance and thresholding
and answers one question: given x_t at timestep t, what are x0_hat and
eps_hat? ``sample`` then walks a descending list of timesteps t -> s and lets
the chosen sampler's step turn (x_t, x0_hat, eps_hat) into x_s:

    ddpm        ancestral sampling, DDPM Algorithm 2 (Ho et al. 2020), in its
                posterior form (eq. 6-7) so it also runs on a respaced subset
    ddim        DDIM (Song et al. 2021, eq. 12); eta = 0 deterministic, eta = 1 ~ DDPM
    dpmpp_2m    DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second order
                multistep in log-SNR time, good samples in 10-25 steps

Notation: a_t = alpha_bar_t, alpha_t = sqrt(a_t), sigma_t = sqrt(1 - a_t),
lambda_t = log(alpha_t / sigma_t). "s" is the next (less noisy) timestep; after
the last one comes s = -1, the clean image (a_s = 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from models.diffusion import SPACINGS, NoiseSchedule
from models.conditioning import Conditioning
from utils.errors import require

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")
THRESHOLDING = ("none", "static", "dynamic")
DEFAULT_GUIDANCE_SCALE = 2.0  # the decoders' default, chosen on the accuracy / Frechet frontier in BENCHMARKS.md ("Sample quality ...")
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (t, x_t, x0_hat)


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw samples from any diffusion stage: decoder, prior, super-resolution or cascade."""

    sampler: str = "dpmpp_2m"
    steps: int = 20  # DDPM's original: all 1000
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE  # 1: no guidance, 0: unconditional
    # "none": x0_hat as predicted. Clipping it to [-1, 1] at every step ("static") lifts the background: errors below black are cut,
    # those above are kept, so the trajectory drifts up (BENCHMARKS.md, "What gives the pictures away"). Images are clipped once, at the end.
    thresholding: str = "none"
    eta: float = 0.0  # DDIM's noise (0: deterministic)
    seed: int = 0  # same seed, same samples
    spacing: str = "linear"  # "quadratic" crowds the steps towards t = 0 (NoiseSchedule.spaced_timesteps)
    # Guide only at timesteps t >= this, and use the conditional output alone below it: a guidance interval
    # (Kynkaanniemi et al. 2024). The class is chosen at high noise, the strokes' ink at middle noise (BENCHMARKS.md).
    guidance_from_t: int = 0

    def __post_init__(self) -> None:
        require(self.sampler in SAMPLERS, f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        require(self.spacing in SPACINGS, f"unknown timestep spacing {self.spacing!r}; choose from {', '.join(SPACINGS)}")
        require(self.thresholding in THRESHOLDING, f"unknown thresholding {self.thresholding!r}; choose from {', '.join(THRESHOLDING)}")
        require(self.steps > 0, f"sampling steps must be positive, got {self.steps}")
        require(math.isfinite(self.guidance_scale) and self.guidance_scale >= 0, f"guidance scale must be a finite number, 0 or more; got {self.guidance_scale}")
        require(math.isfinite(self.eta) and self.eta >= 0, f"eta must be a finite number, 0 or more; got {self.eta}")
        require(0 <= self.guidance_from_t < 1000, f"guidance_from_t must be a timestep from 0 to 999, got {self.guidance_from_t}")


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3).

    s = the percentile of |x0| per sample, at least 1; clip x0 to [-s, s] and
    divide by s, so saturated pixels are pushed inwards instead of clipped hard.
    """
    s = torch.quantile(x0.flatten(1).abs(), percentile, dim=1).clamp(min=1.0).view(-1, *([1] * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s


class Denoiser:
    """(x_t, t) -> (x0_hat, eps_hat) with classifier-free guidance and thresholding.

    Guidance (Ho & Salimans 2022): out = out_uncond + w (out_cond - out_uncond),
    both passes in one batched forward. With w = 1, or at t < ``guidance_from_t``
    (a guidance interval, Kynkaanniemi et al. 2024), only the conditional pass runs.
    The guided output is linear in the network's output, so guiding v, eps or x0
    gives the same x0_hat.
    """

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule, cond: Conditioning, guidance_scale: float = 1.0,
                 thresholding: str = "none", autocast: Callable | None = None, guidance_from_t: int = 0) -> None:
        assert thresholding in THRESHOLDING, thresholding
        self.model, self.schedule, self.guidance_scale, self.thresholding = model, schedule, guidance_scale, thresholding
        self.guidance_from_t = guidance_from_t
        self.cond = cond
        self.guided_cond = cond.repeat_with_null() if guidance_scale != 1.0 else None
        self.autocast = autocast

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, t: int) -> torch.Tensor:
        b = x.shape[0]
        if self.guided_cond is None or t < self.guidance_from_t:
            return self._forward(x, torch.full((b,), t, device=x.device), self.cond)
        out = self._forward(torch.cat([x, x]), torch.full((2 * b,), t, device=x.device), self.guided_cond)
        cond_out, uncond_out = out.chunk(2)
        return uncond_out + self.guidance_scale * (cond_out - uncond_out)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.autocast is None:
            return self.model(x, t, cond).float()
        with self.autocast():
            return self.model(x, t, cond).float()

    def __call__(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0, eps = self.schedule.split_prediction(self.model_output(x, t), x, t_batch)
        if self.thresholding == "none":
            return x0, eps
        x0 = x0.clamp(-1, 1) if self.thresholding == "static" else dynamic_threshold(x0)
        return x0, self.schedule.eps_from_x0(x0, x, t_batch)  # keep eps consistent with the thresholded x0


def gaussian_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z ~ N(0, I) shaped like x, drawn on the CPU (the same numbers on every device) and moved to x's."""
    return torch.randn(x.shape, generator=generator, device="cpu").to(x.device)


class DDPMStep:
    """Ancestral sampling: x_s ~ q(x_s | x_t, x0_hat), the posterior of DDPM eq. 6-7.

    On the full 1000 steps this is Algorithm 2 line for line (beta_t' = beta_t);
    on a subset, beta_t' = 1 - a_t / a_s is the respaced step's variance.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(self, x: torch.Tensor, a_t: float, a_s: float, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        beta = 1 - a_t / a_s
        mean = (math.sqrt(a_s) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_s) / (1 - a_t)) * x  # eq. 7, mu_tilde
        if a_s == 1.0:
            return mean  # the last step adds no noise
        variance = (1 - a_s) / (1 - a_t) * beta  # eq. 7, beta_tilde
        return mean + math.sqrt(variance) * gaussian_like(x, self.generator)


class DDIMStep:
    """x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - sigma^2) eps_hat + sigma z   (DDIM eq. 12),
    sigma = eta sqrt((1 - a_s)/(1 - a_t)) sqrt(1 - a_t/a_s)                 (DDIM eq. 16)."""

    def __init__(self, eta: float = 0.0, generator: torch.Generator | None = None) -> None:
        self.eta, self.generator = eta, generator

    def __call__(self, x: torch.Tensor, a_t: float, a_s: float, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        sigma = self.eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        return x + sigma * gaussian_like(x, self.generator) if sigma > 0 else x


class DPMSolverPP2MStep:
    """DPM-Solver++(2M), the data-prediction multistep solver (Lu et al. 2022, Algorithm 2).

        h_i = lambda_s - lambda_t
        D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i   (first step: D_0 = x0_0)
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h_i) - 1) D_i
    It remembers the previous step's x0_hat and h. The last step lands on the
    clean image (sigma_s = 0, h infinite), where the update reduces to x = x0_hat.
    """

    def __init__(self) -> None:
        self.previous_x0: torch.Tensor | None = None
        self.previous_h: float | None = None

    @staticmethod
    def log_snr(a: float) -> float:  # lambda = log(alpha / sigma)
        return 0.5 * math.log(a / (1 - a))

    def __call__(self, x: torch.Tensor, a_t: float, a_s: float, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if a_s == 1.0:
            return x0
        h = self.log_snr(a_s) - self.log_snr(a_t)
        if self.previous_x0 is None:
            d = x0
        else:
            r = self.previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self.previous_x0
        self.previous_x0, self.previous_h = x0, h
        return math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d


def sampler_step(options: SamplingOptions, generator: torch.Generator | None) -> Callable:
    """A fresh step function (x_t, a_t, a_s, x0_hat, eps_hat) -> x_s for the named sampler."""
    if options.sampler == "ddpm":
        return DDPMStep(generator)
    if options.sampler == "ddim":
        return DDIMStep(options.eta, generator)
    return DPMSolverPP2MStep()


def denoise(denoiser: Callable, schedule: NoiseSchedule, x: torch.Tensor, timesteps: list[int], step: Callable,
            callback: StepCallback | None = None) -> torch.Tensor:
    """The loop every sampler shares: from x at timesteps[0] down through ``timesteps`` to the clean image."""
    for t, s in zip(timesteps, timesteps[1:] + [-1]):
        x0, eps = denoiser(x, t)
        if callback:
            callback(t, x, x0)
        x = step(x, schedule.alpha_bar(t), schedule.alpha_bar(s), x0, eps)
    return x


def sample(denoiser: Callable, schedule: NoiseSchedule, shape: tuple[int, ...], options: SamplingOptions = SamplingOptions(),
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           callback: StepCallback | None = None, shared_noise: bool = False) -> torch.Tensor:
    """Draw x_T ~ N(0, I) and denoise it over ``options.steps`` spaced timesteps: [*shape] on ``device``.

    With ``shared_noise`` every sample starts from the same x_T (for smooth interpolations).
    """
    noise_shape = (1, *shape[1:]) if shared_noise else shape
    x = torch.randn(noise_shape, generator=generator, device="cpu").expand(shape).contiguous().to(device)
    return denoise(denoiser, schedule, x, schedule.spaced_timesteps(options.steps, options.spacing), sampler_step(options, generator), callback)
