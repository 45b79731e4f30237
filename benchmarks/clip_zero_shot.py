"""CLIP zero-shot accuracy: train with defaults (or load), evaluate on the held-out split per prompt form.

    python benchmarks/clip_zero_shot.py                                # embedded MNIST, default training
    python benchmarks/clip_zero_shot.py --dataset fashion --epochs 6   # Fashion-MNIST test set (10,000 images)
"""
from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (puts the repo root on sys.path)
from evaluation.reports import write_result

from dataloading.datasets import load_dataset
from models.pipeline import load_clip
from training.clip_trainer import ClipTrainingConfig, train_clip
from evaluation.metrics import evaluate_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="default: the trainer's default")
    parser.add_argument("--load", default=None, help="evaluate this checkpoint instead of training")
    args = parser.parse_args()
    splits = load_dataset(args.dataset)
    start = time.perf_counter()
    if args.load:
        clip = load_clip(args.load)
        metrics = {"checkpoint": args.load}
    else:
        config = ClipTrainingConfig(dataset=args.dataset, save_path=f"checkpoints/bench_clip_{args.dataset}.pt", output_dir=f"outputs/bench_clip_{args.dataset}")
        if args.epochs:
            config.epochs = args.epochs
        clip, metrics = train_clip(config, splits)
        metrics = {k: v for k, v in metrics.items() if k in ("train_seconds", "train_images_per_second", "epochs", "parameters")}
        metrics["wall_seconds_including_evaluation"] = round(time.perf_counter() - start, 1)
    results = evaluate_clip(clip, splits.test_images, splits.test_labels, splits.captions)
    for key, value in results.items():
        print(f"{key:28s} {value:.4f}")
    write_result(f"clip_zero_shot_{args.dataset}", {"dataset": args.dataset, "held_out_images": len(splits.test_labels), **metrics, **results})


if __name__ == "__main__":
    main()
