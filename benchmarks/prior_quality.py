"""Does the prior close CLIP's modality gap? Generated vs. real image embeddings, text embedding as the baseline.

    python benchmarks/prior_quality.py                       # checkpoints/clip.pt + checkpoints/prior.pt
    python benchmarks/prior_quality.py --num_candidates 1 4  # with and without DALL-E 2's reranking
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result

from dataloading.datasets import load_dataset
from models.pipeline import ClipConditioner, load_clip
from models.prior import PRIOR_SAMPLING, Prior
from evaluation.metrics import prior_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--prior_path", default="checkpoints/prior.pt")
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--num_candidates", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--name", default="prior_quality", help="result file name")
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)
    clip = load_clip(args.clip_model_path, device)
    prior = Prior.load(args.prior_path, device, clip=clip)
    splits = load_dataset(prior.config.dataset)
    conditioner = ClipConditioner(clip)
    rows = []
    for scale in args.guidance_scales:
        for k in args.num_candidates:
            quality = prior_quality(prior, conditioner, splits, args.per_class, replace(PRIOR_SAMPLING, guidance_scale=scale), k)
            for form, q in quality.items():
                print(f"guidance {scale:3.1f} candidates {k}  {form:8s}  cosine to real images: prior {q['generated_cosine_to_real']:.3f}"
                      f" vs text {q['text_cosine_to_real']:.3f} vs real {q['real_cosine_to_real']:.3f}; samples among themselves"
                      f" {q['generated_pairwise_cosine']:.3f}; zero-shot {q['zero_shot_accuracy']:.3f}; nearest class mean {q['nearest_class_mean_accuracy']:.3f}")
                rows.append({"guidance_scale": scale, "num_candidates": k, "form": form,
                             **{key: v for key, v in q.items() if not key.startswith("per_class")}})
    write_result(args.name, {"prior_path": args.prior_path, "per_class": args.per_class, "results": rows})


if __name__ == "__main__":
    main()
