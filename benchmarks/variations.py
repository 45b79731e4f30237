"""Image variations (unCLIP): do decoded CLIP image embeddings keep the class while the style varies?

    python benchmarks/variations.py                        # checkpoints/clip.pt + decoder_image.pt
    python benchmarks/variations.py --per_class 5 --variations 4 --guidance_scales 1 3

For ``--per_class`` held-out test images of each class, the CLIP image embedding
is decoded ``--variations`` times. Reported:

* class agreement: the share of variations the judge reads as the source's class;
* diversity: the mean pairwise distance, in the judge's feature space, between
  variations of one source, divided by the same between distinct real held-out
  images of that class (1: as varied as real handwriting of that digit, 0: copies);
* closeness: the mean pixel RMSE from each variation to its source.
"""
from __future__ import annotations

import argparse

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
import torch

from dataloading.datasets import load_dataset
from utils.images import to_signed_float
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import SamplingOptions
from models.conditioning import Conditioning
from evaluation.judge import load_or_train_judge
from utils.plotting import save_grid


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over distinct pairs of rows of [K, F]."""
    distances = torch.cdist(features, features)
    k = len(features)
    return (distances.sum() / (k * (k - 1))).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder_image.pt")
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--per_class", type=int, default=10, help="held-out source images per class")
    parser.add_argument("--variations", type=int, default=8, help="variations per source image")
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--steps", type=int, default=20)
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)

    clip = load_clip(args.clip_model_path, device)
    decoder = Decoder.load(args.decoder_path, device, clip=clip)
    if decoder.config.condition != "image":
        raise SystemExit(f"error: {args.decoder_path} is not an image-conditioned decoder (train one with --condition image)")
    splits = load_dataset(decoder.config.dataset)
    judge, judge_accuracy = load_or_train_judge(splits, args.judge_path)
    num_classes = splits.captions.num_classes
    generator = torch.Generator().manual_seed(0)
    sources, labels = [], []
    for c in range(num_classes):
        idx = (splits.test_labels == c).nonzero().squeeze(1)
        sources.append(idx[torch.randperm(len(idx), generator=generator)[: args.per_class]])
        labels += [c] * args.per_class
    sources, labels = torch.cat(sources), torch.tensor(labels)
    real = to_signed_float(splits.test_images[sources])  # [S, C, H, W]
    embeddings = ClipConditioner(clip).image(real).embedding  # [S, D]
    _, real_class_features = judge.predict(to_signed_float(splits.test_images))
    real_spread = {c: mean_pairwise_distance(real_class_features[splits.test_labels == c]) for c in range(num_classes)}

    rows = []
    for scale in args.guidance_scales:
        cond = Conditioning(embeddings.repeat_interleave(args.variations, dim=0))
        images = decoder.generate(cond, SamplingOptions(steps=args.steps, guidance_scale=scale, seed=1))  # [S * V, C, H, W]
        predictions, features = judge.predict(images)
        agreement = (predictions == labels.repeat_interleave(args.variations)).float()
        features = features.view(len(sources), args.variations, -1)
        diversity = [mean_pairwise_distance(f) / real_spread[int(c)] for f, c in zip(features, labels)]
        rmse = (images.view(len(sources), args.variations, -1) - real.flatten(1)[:, None]).pow(2).mean(-1).sqrt()
        row = {"guidance_scale": scale, "class_agreement": agreement.mean().item(),
               "min_class_agreement": min(agreement.view(num_classes, -1)[c].mean().item() for c in range(num_classes)),
               "diversity_vs_real": sum(diversity) / len(diversity), "pixel_rmse_to_source": rmse.mean().item()}
        rows.append(row)
        print(f"guidance {scale:3.1f}: class agreement {row['class_agreement']:.4f} (worst digit {row['min_class_agreement']:.3f}); "
              f"diversity {row['diversity_vs_real']:.3f} of real same-class spread; pixel RMSE to source {row['pixel_rmse_to_source']:.3f}")
        if scale == args.guidance_scales[-1]:
            shown = torch.arange(num_classes) * args.per_class  # one source per class: the source, then its variations
            grid = torch.cat([torch.cat([real[i : i + 1], images[i * args.variations : (i + 1) * args.variations]]) for i in shown.tolist()])
            figure = save_grid(grid, "outputs/benchmarks/variations.png", nrow=args.variations + 1,
                               title=f"held-out image (left) and {args.variations} variations decoded from its CLIP embedding (guidance {scale:g})")
            print(f"wrote {figure}")
    write_result("variations", {"decoder_path": args.decoder_path, "per_class": args.per_class, "variations": args.variations, "steps": args.steps,
                                "judge_test_accuracy": judge_accuracy, "results": rows})


if __name__ == "__main__":
    main()
