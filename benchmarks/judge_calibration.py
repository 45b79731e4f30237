"""What does a Frechet ratio mean? The judge's distances for known changes to real digits.

    python benchmarks/judge_calibration.py          # both judge recipes (trains and caches each on first use)

Held-out real digits (50 per class, never trained on) are changed in known ways
and measured like a generated set: judge accuracy and Frechet distance ÷ the
real-vs-real one at the same size. Two kinds of change:

* nuisances a reader does not see or ignores (a background lifted by 1/255 of
  full scale, faint noise, lower contrast, a one-pixel shift, thicker strokes, a faint halo): a good judge
  keeps these near 1x;
* real defects (blur, lost detail, collapsed diversity, a missing digit): a
  good judge must still rank these far from real.

Recipe 1 (affine augmentation only) and recipe 2 (plus photometric
augmentation; ``evaluation/judge.py``) are measured side by side. With
``--two_sample`` each changed set also meets the classifier two-sample test
(``evaluation/two_sample.py``) against as many real training digits of the same
classes: how strong a change must be before a fresh CNN can tell it.
"""
from __future__ import annotations

import argparse
import common  # noqa: F401
from evaluation.reports import write_result
import torch
import torch.nn.functional as F

from dataloading.datasets import load_dataset
from utils.images import to_signed_float
from models.superres import downsample, upsample
from evaluation.judge import JUDGE_RECIPE, QualityReference, load_or_train_judge
from evaluation.two_sample import classifier_two_sample_test

PER_CLASS = 50  # the held-out split has 50 digits per class


def lift_background(images: torch.Tensor, levels: float) -> torch.Tensor:
    """Background pixels raised by ``levels`` / 255 of full scale ([-1, 1] spans 255 levels)."""
    return torch.where(images < -0.99, images + 2 * levels / 255, images)


def collapse(images: torch.Tensor, labels: torch.Tensor, distinct: int) -> torch.Tensor:
    """Each class keeps only its first ``distinct`` images, repeated to the same count."""
    out = images.clone()
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        out[idx] = images[idx[:distinct]].repeat(len(idx) // distinct + 1, 1, 1, 1)[: len(idx)]
    return out


def halo(images: torch.Tensor, strength: float) -> torch.Tensor:
    """A faint glow one pixel around the strokes: ``strength`` x the brightest neighbour, where that is brighter."""
    brightness = (images + 1) / 2
    return 2 * torch.maximum(brightness, strength * F.max_pool2d(brightness, 3, 1, 1)) - 1


def changes(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, str, torch.Tensor]]:
    """(kind, name, changed images) for every change, made once and judged by each recipe."""
    generator = torch.Generator().manual_seed(0)

    def noisy(std: float) -> torch.Tensor:
        return (images + std * torch.randn(images.shape, generator=generator)).clamp(-1, 1)

    sevens, ones = (labels == 7).nonzero().squeeze(1), (labels == 1).nonzero().squeeze(1)
    no_sevens = images.clone()
    no_sevens[sevens] = images[ones]  # every 7 replaced by a 1: one mode missing, another doubled
    return [
        ("nuisance", "unchanged", images),
        ("nuisance", "background +1/255", lift_background(images, 1)),
        ("nuisance", "background +2/255", lift_background(images, 2)),
        ("nuisance", "background +6/255", lift_background(images, 6)),
        ("nuisance", "noise std 0.02", noisy(0.02)),
        ("nuisance", "noise std 0.05", noisy(0.05)),
        ("nuisance", "contrast 0.9", -1 + (images + 1) * 0.9),
        ("nuisance", "shift 1 pixel", torch.roll(images, 1, dims=-1)),
        ("nuisance", "thicker strokes (gamma 0.6)", 2 * ((images + 1) / 2) ** 0.6 - 1),
        ("nuisance", "halo 10 % one pixel out", halo(images, 0.1)),
        ("nuisance", "halo 20 % one pixel out", halo(images, 0.2)),
        ("defect", "blur 3x3", F.avg_pool2d(images, 3, 1, 1, count_include_pad=False)),
        ("defect", "via 14x14 (bicubic)", upsample(downsample(images, 14), images.shape[-1]).clamp(-1, 1)),
        ("defect", "5 distinct per digit", collapse(images, labels, 5)),
        ("defect", "every 7 drawn as a 1", no_sevens),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--judge_paths", nargs=2, default=["checkpoints/judge_recipe1.pt", "checkpoints/judge.pt"],
                        help="where recipe 1 and recipe 2 judges are cached")
    parser.add_argument("--two_sample", action="store_true", help="also run the classifier two-sample test on every changed set")
    parser.add_argument("--two_sample_steps", type=int, default=300)
    args = parser.parse_args()

    splits = load_dataset(args.dataset)
    labels = splits.test_labels
    order = torch.cat([(labels == c).nonzero().squeeze(1)[:PER_CLASS] for c in range(splits.captions.num_classes)])
    images, labels = to_signed_float(splits.test_images[order]), labels[order]
    changed_sets = changes(images, labels)
    rows = {name: {"kind": kind} for kind, name, _ in changed_sets}
    for recipe, path in zip((1, JUDGE_RECIPE), args.judge_paths):
        judge, accuracy = load_or_train_judge(splits, path, recipe=recipe)
        reference = QualityReference(judge, splits, PER_CLASS)
        print(f"recipe {recipe}: held-out accuracy {accuracy:.4f}, real-vs-real Frechet {reference.real['frechet']:.3f}")
        for kind, name, changed in changed_sets:
            result = reference.evaluate(changed, labels)
            ratio = reference.ratio(result["frechet"])
            rows[name][f"recipe{recipe}"] = {"accuracy": result["accuracy"], "min_class_accuracy": result["min_class_accuracy"], "frechet_ratio": ratio}
            print(f"  {kind:8s} {name:28s} accuracy {result['accuracy']:.3f} (worst digit {result['min_class_accuracy']:.2f})  Frechet {ratio:8.2f}x real")
    if args.two_sample:
        generator = torch.Generator().manual_seed(0)
        real = torch.cat([splits.train_images[splits.train_labels == c][torch.randperm(int((splits.train_labels == c).sum()), generator=generator)[:PER_CLASS]]
                          for c in range(splits.captions.num_classes)])
        real_labels = torch.arange(splits.captions.num_classes).repeat_interleave(PER_CLASS)
        for kind, name, changed in changed_sets:
            rows[name]["two_sample"] = classifier_two_sample_test(changed, real, labels, real_labels, steps=args.two_sample_steps)["accuracy"]
            print(f"  {kind:8s} {name:28s} two-sample accuracy {rows[name]['two_sample']:.3f}")
    write_result("judge_calibration" + ("_two_sample" if args.two_sample else ""), {"per_class": PER_CLASS, "rows": rows})


if __name__ == "__main__":
    main()
