"""The denoising trajectory as an animation: x_t beside the model's current guess of x0."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.plotting import image_grid


def save_trajectory_gif(trajectory: list[tuple[int, torch.Tensor, torch.Tensor]], path: str | Path, nrow: int = 8,
                        scale: int = 3, max_frames: int = 60) -> Path:
    """One frame per recorded step: [x_t | x0_hat] grids side by side; the last frame lingers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picks = np.unique(np.linspace(0, len(trajectory) - 1, min(max_frames, len(trajectory))).round().astype(int))
    frames = []
    for i in picks:
        _, x_t, x0 = trajectory[i]
        left, right = image_grid(x_t.clamp(-1, 1), nrow), image_grid(x0.clamp(-1, 1), nrow)
        gap = np.full((left.shape[0], 8, left.shape[2]), 128, dtype=np.uint8)
        frame = np.concatenate([left, gap, right], axis=1)
        frame = frame.repeat(scale, 0).repeat(scale, 1)
        frames.append(Image.fromarray(frame.squeeze(-1) if frame.shape[-1] == 1 else frame))
    durations = [80] * (len(frames) - 1) + [1500]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
