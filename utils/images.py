"""Pixels: uint8 [0, 255] <-> float [-1, 1], and a user's image file in the model's format."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError


def to_signed_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clipping out-of-range values."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def load_image(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """An image file -> [C, size, size] in [-1, 1]; other sizes are resized (with a warning), colour converted.

    MNIST-style models expect a light figure on a dark background, as in the training data.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size, size):
                warnings.warn(f"image {path} is {image.size[0]}x{image.size[1]}; resized to {size}x{size}")
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {type(err).__name__}") from None
    tensor = to_signed_float(torch.from_numpy(array))
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)
