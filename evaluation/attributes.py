"""Do words about style pick the right pictures? Pairwise AUCs for CLIP and, later, for generated images.

The measure throughout is the AUC over pairs (Hanley & McNeil 1982): for two groups of scores, the probability that
a random member of the "high" group scores above a random member of the "low" group (ties count a half).
0.5 means the words do nothing, 1 that they always order the pair right.

For CLIP (``clip_attribute_retrieval``): take the held-out images of one class in the low and the high tercile of
an attribute, score each image by how much more it resembles the high prompt than the low one
(cos(image, "a thick six") - cos(image, "a thin six")), and ask whether the thick sixes score higher.
"""
from __future__ import annotations

import torch

from dataloading.attributes import DATASET_ATTRIBUTES, measure
from evaluation.metrics import zero_shot_accuracy
from models.clip import encode_images

# The phrasings measured: two that training uses ("a thick six", "a six slanted left") and the held-out ones.
TRAINED_PHRASINGS = {"adjective": "{a_np}", "predicate": "{a_np} {post}"}


def measured_phrasings(style) -> dict[str, str]:
    """{phrasing name: template}: the trained phrasings and every held-out template of ``style`` (a StyleCaptions)."""
    return {**TRAINED_PHRASINGS, **{f"held_out: {t}": t for t in style.held_out_templates}}


def pair_auc(high: torch.Tensor, low: torch.Tensor) -> float:
    """P(a score from ``high`` [H] exceeds one from ``low`` [L]), ties a half; nan when either is empty."""
    if len(high) == 0 or len(low) == 0:
        return float("nan")
    difference = high[:, None] - low[None, :]  # [H, L]
    return ((difference > 0).float() + 0.5 * (difference == 0).float()).mean().item()


def tercile_shares(terciles: torch.Tensor) -> list[float]:
    """[N] tercile indices -> the share in each of the three."""
    return (torch.bincount(terciles, minlength=3).float() / max(1, len(terciles))).tolist()


def spread_against_real(shares: list[float], real: list[float], num_images: int) -> dict:
    """Tercile shares of a generated set against the real ones: the largest gap (a fraction: 0.1 is 10 points) and the
    binomial standard error of a share of about a third at ``num_images``, sqrt(p (1 - p) / n), to tell a gap from noise."""
    gap = max(abs(g - r) for g, r in zip(shares, real))
    return {"shares": shares, "largest_gap": gap, "standard_error": (1 / 3 * 2 / 3 / max(1, num_images)) ** 0.5}


def attribute_shares(images: torch.Tensor, labels: torch.Tensor, splits) -> dict[str, list[float]]:
    """uint8 images [N, C, H, W] of classes ``labels`` [N] -> {attribute: shares in its low / middle / high tercile of real
    images of the same class}. Real held-out images give about a third each; naming nothing should too."""
    attributes = DATASET_ATTRIBUTES[splits.name]
    terciles = splits.attribute_bins.terciles(measure(images, attributes), labels)  # [N, A]
    return {a.name: tercile_shares(terciles[:, i]) for i, a in enumerate(attributes)}


def summarise(per_class: list[float]) -> dict:
    """Per-class AUCs -> their mean, minimum and the list (nan classes, with too few images, left out of mean and min)."""
    valid = [a for a in per_class if a == a]
    return {"mean": sum(valid) / len(valid) if valid else float("nan"), "min": min(valid) if valid else float("nan"),
            "per_class": [round(a, 4) for a in per_class]}


@torch.no_grad()
def clip_attribute_retrieval(clip, splits, style) -> dict:
    """{phrasing: {attribute: summary}}: can the high word's prompt tell held-out images of the high tercile from the low?

    ``splits`` an ImageSplits (its training split's terciles bin the held-out images), ``style`` its StyleCaptions.
    Phrasings: ``measured_phrasings(style)``.
    """
    was_training = clip.training
    clip.eval()
    image_embeddings = encode_images(clip, splits.test_images)  # [N, D], unit length
    terciles, labels = splits.terciles("test"), splits.test_labels  # [N, A], [N]
    results: dict = {}
    for phrasing, template in measured_phrasings(style).items():
        results[phrasing] = {}
        for a, attribute in enumerate(style.attributes):
            per_class = []
            for c in range(style.num_classes):
                prompts = [style.prompt(c, {attribute.name: tercile}, template) for tercile in (0, 2)]  # low word, high word
                low_text, high_text = clip.encode_text(prompts).float().cpu()  # [D] each
                score = image_embeddings @ (high_text - low_text)  # [N]: leaning toward the high word
                in_class = labels == c
                per_class.append(pair_auc(score[in_class & (terciles[:, a] == 2)], score[in_class & (terciles[:, a] == 0)]))
            results[phrasing][attribute.name] = summarise(per_class)
    clip.train(was_training)
    return results


@torch.no_grad()
def style_prompt_zero_shot(clip, splits, style) -> dict:
    """{phrasing: {"width=2": accuracy, ...}}: CLIP's class zero-shot accuracy on the held-out images when every class
    prompt names one attribute word in that phrasing ("this six is wide" against "this seven is wide", ...)."""
    was_training = clip.training
    clip.eval()
    image_embeddings = encode_images(clip, splits.test_images)  # [N, D]
    results: dict = {}
    for phrasing, template in measured_phrasings(style).items():
        results[phrasing] = {}
        for attribute in style.attributes:
            for tercile in (t for t in range(3) if attribute.words(t)):
                prompts = [style.prompt(c, {attribute.name: tercile}, template) for c in range(style.num_classes)]
                text = clip.encode_text(prompts).float().cpu()[None]  # [1, C, D]
                results[phrasing][f"{attribute.name}={tercile}"] = zero_shot_accuracy(image_embeddings, splits.test_labels, text)
    clip.train(was_training)
    return results
