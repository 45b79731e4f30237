"""CLIP zero-shot accuracy: train with defaults (or load), evaluate on the held-out split per prompt form.

    python benchmarks/clip_zero_shot.py                                # embedded MNIST, default training
    python benchmarks/clip_zero_shot.py --dataset fashion --epochs 6   # Fashion-MNIST test set (10,000 images)
    python benchmarks/clip_zero_shot.py --load pretrained/clip.safetensors --name shipped   # a trained CLIP

Beside zero-shot accuracy it reports attribute retrieval (evaluation.attributes): the AUC with which "a thick six"
against "a thin six" orders thick and thin held-out sixes, per attribute and phrasing (0.5: the words do nothing),
and the class zero-shot accuracy when every class prompt names an attribute ("this six is wide"), per phrasing.
"""
from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (puts the repo root on sys.path)
from evaluation.reports import add_device_argument, use_device, write_result

from dataloading.datasets import load_dataset
from models.pipeline import load_clip
from training.clip_trainer import ClipTrainingConfig, train_clip
from dataloading.style_captions import STYLE_CAPTION_SETS
from evaluation.attributes import clip_attribute_retrieval, style_prompt_zero_shot
from evaluation.metrics import evaluate_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="default: the trainer's default")
    parser.add_argument("--load", default=None, help="evaluate this checkpoint instead of training")
    parser.add_argument("--captions", default="class", help="train with class or style captions")
    parser.add_argument("--name", default=None, help="result file name (default: clip_zero_shot_<dataset>)")
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)
    splits = load_dataset(args.dataset)
    start = time.perf_counter()
    if args.load:
        clip = load_clip(args.load, device)
        metrics = {"checkpoint": args.load}
    else:
        config = ClipTrainingConfig(dataset=args.dataset, captions=args.captions, save_path=f"checkpoints/bench_clip_{args.dataset}.pt", output_dir=f"outputs/bench_clip_{args.dataset}")
        if args.epochs:
            config.epochs = args.epochs
        clip, metrics = train_clip(config, splits)
        metrics = {k: v for k, v in metrics.items() if k in ("train_seconds", "train_images_per_second", "epochs", "parameters")}
        metrics["wall_seconds_including_evaluation"] = round(time.perf_counter() - start, 1)
    results = evaluate_clip(clip, splits.test_images, splits.test_labels, splits.captions)
    for key, value in results.items():
        print(f"{key:28s} {value:.4f}")
    results["attribute_retrieval"] = clip_attribute_retrieval(clip, splits, STYLE_CAPTION_SETS[splits.name])
    for phrasing, by_attribute in results["attribute_retrieval"].items():
        print(f"attribute retrieval AUC, {phrasing:34s} " + "  ".join(f"{a} {v['mean']:.3f} (worst class {v['min']:.3f})" for a, v in by_attribute.items()))
    results["style_prompt_zero_shot"] = style_prompt_zero_shot(clip, splits, STYLE_CAPTION_SETS[splits.name])
    for phrasing, by_word in results["style_prompt_zero_shot"].items():
        print(f"class zero-shot, prompts naming one attribute, {phrasing:34s} {min(by_word.values()):.3f}-{max(by_word.values()):.3f}")
    write_result(args.name or f"clip_zero_shot_{args.dataset}", {"dataset": args.dataset, "held_out_images": len(splits.test_labels), **metrics, **results})


if __name__ == "__main__":
    main()
