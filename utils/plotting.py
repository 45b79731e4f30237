"""Figures a person looks at: image grids, loss curves, similarity matrices.

Each ``*_figure`` function builds a matplotlib Figure (the notebook displays it);
each ``save_*`` writes one as a PNG and returns its path, which the scripts print.
Figures are made without pyplot, so no display backend is ever chosen or needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from utils.images import to_uint8


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] or uint8 -> one uint8 array [rows*(H+p), nrow*(W+p), C]."""
    images = images if images.dtype == torch.uint8 else to_uint8(images.float().cpu())
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image.transpose(1, 2, 0)
    return grid


def grid_figure(images: torch.Tensor, nrow: int, row_labels: list[str] | None = None, title: str | None = None, scale: float = 0.8) -> Figure:
    """A grid of images, ``nrow`` per row; optional row labels on the left (one per row)."""
    grid = image_grid(images, nrow)
    height, width = grid.shape[:2]
    label_room = max(1.6, 0.07 * max(map(len, row_labels)) + 0.2) if row_labels else 0.0  # inches: ~0.07 per character at size 9
    fig = Figure(figsize=(width / 28 * scale + label_room, height / 28 * scale + (0.5 if title else 0.1)), dpi=100)
    ax = fig.add_axes((label_room / fig.get_figwidth(), 0, 1 - label_room / fig.get_figwidth(), 1 - (0.5 if title else 0.1) / fig.get_figheight()))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if row_labels:
        cell = height / len(row_labels)
        ax.set_yticks([cell * (i + 0.5) for i in range(len(row_labels))], labels=row_labels, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, row_labels: list[str] | None = None, title: str | None = None, scale: float = 0.8) -> Path:
    return save_figure(grid_figure(images, nrow, row_labels, title, scale), path)


def loss_curves_figure(curves: dict[str, list[tuple[int, float]]], title: str, xlabel: str = "training step") -> Figure:
    """Plot named (step, loss) series, smoothed over a window, on a log-scaled loss axis."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    for name, points in curves.items():
        if not points:
            continue
        steps, values = np.array(points, dtype=np.float64).T
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (moving average)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def similarity_matrix_figure(similarity: np.ndarray, row_names: list[str], col_names: list[str], title: str) -> Figure:
    """A heat map of cosine similarities, e.g. prompts x class-mean image embeddings."""
    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(similarity, cmap="viridis")
    ax.set_xticks(range(len(col_names)), labels=col_names, rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)), labels=[f'"{n}"' for n in row_names])
    for i in range(similarity.shape[0]):
        for j in range(similarity.shape[1]):
            ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if similarity[i, j] < similarity.max() * 0.7 else "k")
    ax.set_xlabel("held-out images (mean embedding per class)")
    ax.set_ylabel("text prompt")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig


def prior_quality_figure(quality: dict, step: int) -> Figure:
    """Per class: cosine of generated image embeddings vs. raw text embeddings to real image embeddings."""
    forms = list(quality)
    fig = Figure(figsize=(5 * len(forms), 3.5), dpi=100)
    axes = fig.subplots(1, len(forms), squeeze=False)
    for ax, form in zip(axes[0], forms):
        q = quality[form]
        classes = np.arange(len(q["per_class_generated_cosine"]))
        ax.bar(classes - 0.2, q["per_class_generated_cosine"], 0.4, label=f"prior samples (mean {q['generated_cosine_to_real']:.2f})")
        ax.bar(classes + 0.2, q["per_class_text_cosine"], 0.4, label=f"text embedding (mean {q['text_cosine_to_real']:.2f})")
        if "real_cosine_to_real" in q:
            ax.axhline(q["real_cosine_to_real"], color="k", linestyle="--", linewidth=1, label=f"real images to each other ({q['real_cosine_to_real']:.2f})")
        ax.set_xticks(classes)
        ax.set_xlabel("prompted class")
        ax.set_ylabel("cosine to real image embeddings")
        ax.set_title(f"{form} prompts, step {step}: zero-shot {q['zero_shot_accuracy']:.1%}")
        ax.set_ylim(min(0.0, min(q["per_class_text_cosine"]) - 0.05), 1.0)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_loss_curves(curves: dict[str, list[tuple[int, float]]], path: str | Path, title: str, xlabel: str = "training step") -> Path:
    return save_figure(loss_curves_figure(curves, title, xlabel), path)


def save_similarity_matrix(similarity: np.ndarray, row_names: list[str], col_names: list[str], path: str | Path, title: str) -> Path:
    return save_figure(similarity_matrix_figure(similarity, row_names, col_names, title), path)


def save_prior_quality_plot(quality: dict, path: str | Path, step: int) -> Path:
    return save_figure(prior_quality_figure(quality, step), path)
