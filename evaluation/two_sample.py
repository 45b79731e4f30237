"""Can a picture be told from a real one? A classifier two-sample test and pixel statistics.

The judge's accuracy and Frechet distance ask whether generated digits read as
the right digit, with the right variety. Neither asks whether they look
generated: the judge's features are trained to ignore faint backgrounds and
noise. The classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting
classifier two-sample tests") asks exactly that. A fresh small CNN learns to
label images real (0) or generated (1) on part of both sets, and is scored on
the rest, with k-fold cross-validation so every image is scored once:

    accuracy = 0.5   the classifier cannot tell them apart (what two halves of real data give)
    accuracy = 1.0   every generated image gives itself away

Beside it, ``pixel_statistics`` counts what a person would look at first: the
share of exactly black pixels, of saturated ones, and the histogram of values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.images import to_signed_float, to_uint8

HISTOGRAM_EDGES = (0, 1, 10, 30, 60, 100, 150, 200, 251, 256)  # uint8 bins: exact black, haze, faint, ..., saturated (>250)


def level_views(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> [B, 3C, H, W]: the image, and its grey levels on two log scales, each in [-1, 1].

    log(1 + level) stretches the darkest levels (black against 1/255 lies as far apart as 10/255
    against 60/255), log(1 + 255 - level) the brightest. On the linear scale alone a small CNN
    barely sees a faint haze over the background, or ink that never quite saturates.
    """
    levels = (images + 1) * 127.5  # [0, 255]
    scale = math.log(256)
    return torch.cat([images, torch.log1p(levels) / scale * 2 - 1, torch.log1p(255 - levels) / scale * 2 - 1], dim=1)


class TwoSampleClassifier(nn.Module):
    """A deliberately plain CNN on ``level_views``: [B, C, 28, 28] in [-1, 1] -> one logit per image (generated vs real)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12 * in_channels, 32, 1), nn.ReLU(),  # [B, 32, 14, 14]: thresholds on each pixel's levels
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [B, 32, 7, 7]
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # [B, 64]
            nn.Linear(64, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(level_views(images)).squeeze(1)  # [B]


def stratified_folds(labels: torch.Tensor, folds: int, generator: torch.Generator) -> torch.Tensor:
    """A fold index in [0, folds) per item, dealt round-robin within each label, so every fold has the same mix."""
    fold = torch.empty(len(labels), dtype=torch.long)
    for value in labels.unique():
        idx = (labels == value).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        fold[idx] = torch.arange(len(idx)) % folds
    return fold


def train_and_score(images: torch.Tensor, is_generated: torch.Tensor, train: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """Fit a fresh classifier for ``steps`` batches of 64 on the items where ``train`` is True; [N] correct or not on the others."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TwoSampleClassifier(images.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = images[train], is_generated[train].float()
    batches = iter(())
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:  # a new epoch
            batches = iter(torch.randperm(len(x), generator=generator).split(64))
            batch = next(batches)
        loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(chunk) for chunk in images[~train].split(500)]) > 0
    return predicted == is_generated[~train].bool()


def classifier_two_sample_test(generated: torch.Tensor, real: torch.Tensor, generated_labels: torch.Tensor, real_labels: torch.Tensor,
                               folds: int = 5, steps: int = 300, seed: int = 0) -> dict:
    """Held-out accuracy of a fresh CNN telling ``generated`` from ``real`` images ([N, C, H, W] in [-1, 1] or uint8, both ``as_saved``).

    Both sets should be the same size and class mix (their labels, [N] each, keep every fold's
    mix the same). Returns the accuracy over all images (each scored once, by the fold that
    left it out), its binomial standard error, and the accuracy on each set.
    """
    images = torch.cat([as_saved(real), as_saved(generated)])
    is_generated = torch.cat([torch.zeros(len(real), dtype=torch.bool), torch.ones(len(generated), dtype=torch.bool)])
    strata = torch.cat([real_labels, generated_labels]) * 2 + is_generated.long()  # (class, source) pairs
    fold = stratified_folds(strata, folds, torch.Generator().manual_seed(seed))
    correct = torch.empty(len(images), dtype=torch.bool)
    for k in fold.unique().tolist():  # with fewer images per class and source than folds, some folds stay empty
        correct[fold == k] = train_and_score(images, is_generated, fold != k, steps, seed + k)
    accuracy = correct.float().mean().item()
    return {"accuracy": accuracy, "standard_error": math.sqrt(accuracy * (1 - accuracy) / len(images)),
            "real_accuracy": correct[~is_generated].float().mean().item(), "generated_accuracy": correct[is_generated].float().mean().item(),
            "num_generated": len(generated), "num_real": len(real), "folds": folds, "steps": steps}


def pixel_statistics(images: torch.Tensor) -> dict:
    """Shares of exactly black (0) and saturated (> 250) pixels, and the histogram over ``HISTOGRAM_EDGES``, of uint8 values."""
    values = as_uint8(images).flatten().long()
    return {"black": (values == 0).float().mean().item(), "saturated": (values > 250).float().mean().item(),
            "mean": values.float().mean().item() / 255, "histogram": level_shares(images, HISTOGRAM_EDGES), "histogram_edges": list(HISTOGRAM_EDGES)}


def level_shares(images: torch.Tensor, edges: tuple[int, ...]) -> list[float]:
    """The share of uint8 pixels in each band [edges[i], edges[i + 1]) of grey levels."""
    counts = torch.bincount(as_uint8(images).flatten().long(), minlength=256).float()
    counts /= counts.sum()
    return [counts[lo:hi].sum().item() for lo, hi in zip(edges, edges[1:])]


def as_saved(images: torch.Tensor) -> torch.Tensor:
    """Images as a PNG would hold them: rounded to uint8, then back to [-1, 1].

    Generated pixels are real numbers and real ones are whole levels of 255; without the
    rounding a classifier could tell them apart by values no picture file can hold.
    """
    return to_signed_float(as_uint8(images))


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as they are; [-1, 1] floats rounded to the grey levels a picture file holds."""
    return images if images.dtype == torch.uint8 else to_uint8(images.float())


def real_sets(splits, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two disjoint sets of ``per_class`` real images of every class, uint8, for the test and its floor: (a, b, labels).

    Set a holds the held-out digits first (50 per class in the embedded split), topped up with
    training digits where more are asked for; set b, the real-vs-real floor, the next ones.
    Training digits are real digits too, but the generator has seen them: the test asks whether
    an image looks generated, not whether it was memorised.
    """
    generator = torch.Generator().manual_seed(seed)
    set_a, set_b = [], []
    for c in range(splits.captions.num_classes):
        held_out = splits.test_images[splits.test_labels == c]
        train = splits.train_images[splits.train_labels == c]
        pool = torch.cat([held_out, train[torch.randperm(len(train), generator=generator)]])
        if len(pool) < 2 * per_class:
            raise ValueError(f"class {c} has {len(pool)} real images, fewer than the {2 * per_class} two sets of {per_class} need")
        set_a.append(pool[:per_class])
        set_b.append(pool[per_class : 2 * per_class])
    labels = torch.arange(splits.captions.num_classes).repeat_interleave(per_class)
    return torch.cat(set_a), torch.cat(set_b), labels
