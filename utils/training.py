"""Small helpers every trainer shares: device, seeding, autocast, EMA, timing."""
from __future__ import annotations

import copy
import random
import time
from contextlib import nullcontext
from typing import ContextManager

import numpy as np
import torch
from torch import nn

from utils.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for, but no CUDA GPU is available (use cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision a CUDA device computes in: bf16 where it has it (Ampere and later), else fp16
    (whose narrow range needs a gradient scaler); None on the CPU, which stays in fp32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> ContextManager:
    """Mixed precision on CUDA (the tensor cores' fast path); full precision on the CPU."""
    dtype = autocast_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def gradient_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (Micikevicius et al. 2018: small gradients would underflow to zero); a no-op
    for bf16, which has fp32's range, and for the CPU."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)


def configure_backends(device: torch.device) -> None:
    """On CUDA: TF32 matmuls and convolutions (fp32 range, 10-bit mantissa, on the tensor cores) and cuDNN's
    autotuner, which picks the fastest convolution kernels for the fixed shapes of a training run."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def adamw(params, device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step on CUDA (instead of a few per parameter tensor)."""
    return torch.optim.AdamW(params, fused=device.type == "cuda", **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class EMA:
    """Exponential moving average of a model's weights, used for sampling.

    theta_ema <- d * theta_ema + (1 - d) * theta, with the decay warmed up as
    min(decay, (1 + n) / (10 + n)) so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        ema_params, params = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - d)  # every tensor in a few kernels, not one Python call each
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.model.load_state_dict(state["model"])


class Throughput:
    """Images per second over a training run, excluding evaluation pauses."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self, images: int) -> None:
        assert self._start is not None
        self.seconds += time.perf_counter() - self._start
        self.images += images
        self._start = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0
