"""What a diffusion run records of its loss: per step, on the low-noise steps alone, and summed per tenth of the timesteps."""
from __future__ import annotations

import numpy as np
import torch

LOW_NOISE_STEPS = 100  # the loss on t < 100 is tracked on its own: it keeps falling after the total flattens
LOSS_BUCKETS = 10  # the loss is also summed per tenth of the timestep range


def new_loss_history() -> dict:
    """An empty history: [(step, loss)] overall and for t < LOW_NOISE_STEPS, and [sum, count] per bucket of timesteps."""
    return {"loss": [], "loss_low_noise": [], "loss_by_bucket": np.zeros((LOSS_BUCKETS, 2)).tolist()}


def record_loss(history: dict, step: int, per_sample: torch.Tensor, t: torch.Tensor, num_steps: int) -> None:
    """Loss per step, on low-noise steps, and summed per bucket of the timestep range."""
    history["loss"].append((step, per_sample.mean().item()))
    low = t < LOW_NOISE_STEPS
    if low.any():
        history["loss_low_noise"].append((step, per_sample[low].mean().item()))
    buckets = (t * LOSS_BUCKETS // num_steps).tolist()  # t in [0, T) -> bucket in [0, LOSS_BUCKETS)
    for b, value in zip(buckets, per_sample.tolist()):
        history["loss_by_bucket"][b][0] += value
        history["loss_by_bucket"][b][1] += 1
