"""Does a text decoder learn digits or its 4,500 training images? Two measures, training against held-out images.

    python benchmarks/memorization.py --clip_model_path pretrained/clip.safetensors \\
        --decoder_paths pretrained/decoder.safetensors checkpoints/decoder_restart2/decoder.pt

1. **Denoising loss gap.** The decoder's training loss (``NoiseSchedule.loss``) on the same number of
   training and held-out images, each noised at the same grid of timesteps with the same noise and conditioned on
   its class word ("six"). A decoder that has learned the training images themselves denoises them better than
   digits it never saw: held-out loss over training loss above 1, most at low and middle noise, where the details
   of one image are drawn. The ratio is reported for each third of the timesteps.
2. **Nearest training image.** For samples drawn from the class words, the pixel distance to the nearest training
   image, over the same distance for held-out real digits (Somepalli et al. 2023 and Carlini et al. 2023 look for
   copies this way). About 1: samples lie as far from the training set as new real digits do; well under 1: copies.
   The share of samples nearer to a training image than any held-out digit is (the 5th percentile) is reported too.
"""
from __future__ import annotations

import argparse

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
import torch

from dataloading.datasets import load_dataset
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import SamplingOptions
from utils.cli import run_main
from utils.images import to_signed_float, to_uint8

TIMESTEP_GRID = 30  # evenly spaced timesteps per image for the loss
THIRDS = ("low noise", "middle noise", "high noise")


@torch.no_grad()
def denoising_loss(decoder: Decoder, images: torch.Tensor, cond, seed: int = 0) -> torch.Tensor:
    """[TIMESTEP_GRID] mean loss over the images at each grid timestep, the same noise for the same seed and image count."""
    schedule, generator = decoder.schedule, torch.Generator().manual_seed(seed)
    x0 = decoder.encode(to_signed_float(images).to(decoder.device))  # [N, C, H, W] in the model's space
    grid = torch.linspace(0, schedule.num_steps - 1, TIMESTEP_GRID).round().long()
    losses = []
    for t_value in grid.tolist():
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.full((len(x0),), t_value, dtype=torch.long, device=x0.device)
        output = decoder.model(schedule.q_sample(x0, t, noise), t, cond)
        losses.append(schedule.loss(output, x0, noise, t).mean())
    return torch.stack(losses)


def nearest_distances(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[N] the Euclidean pixel distance (uint8 scaled to 0..1) from each image to its nearest reference image."""
    flat = lambda x: x.flatten(1).float() / 255
    return torch.cdist(flat(images), flat(reference)).min(1).values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="pretrained/clip.safetensors")
    parser.add_argument("--decoder_paths", nargs="+", default=["pretrained/decoder.safetensors"])
    parser.add_argument("--per_class", type=int, default=50, help="training and held-out images per class (the embedded MNIST holds out 50)")
    parser.add_argument("--samples_per_class", type=int, default=50, help="samples per class for the nearest-neighbour measure")
    parser.add_argument("--guidance_scale", type=float, default=None, help="default: each decoder's own (its file's sampling field)")
    parser.add_argument("--name", default="memorization")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.per_class <= 0 or args.samples_per_class <= 0:
        parser.error("--per_class and --samples_per_class must be positive")
    device = use_device(args.device)
    clip = load_clip(args.clip_model_path, device)
    conditioner = ClipConditioner(clip)
    rows = []
    for path in args.decoder_paths:
        decoder = Decoder.load(path, device, clip=clip)
        splits = load_dataset(decoder.config.dataset)
        words = [names[0] for names in splits.captions.names]
        pick = lambda labels: torch.cat([(labels == c).nonzero().squeeze(1)[: args.per_class] for c in range(len(words))])
        train_idx, test_idx = pick(splits.train_labels), pick(splits.test_labels)
        losses = {}
        for split, images, labels in (("train", splits.train_images[train_idx], splits.train_labels[train_idx]),
                                      ("held_out", splits.test_images[test_idx], splits.test_labels[test_idx])):
            losses[split] = denoising_loss(decoder, images, conditioner.text([words[int(c)] for c in labels]))
        ratio = losses["held_out"] / losses["train"]  # [TIMESTEP_GRID]
        by_third = {name: float(part.mean()) for name, part in zip(THIRDS, ratio.chunk(3))}
        scale = decoder.guidance_scale if args.guidance_scale is None else args.guidance_scale
        labels = torch.arange(len(words)).repeat_interleave(args.samples_per_class)
        samples = decoder.generate(conditioner.text([words[int(c)] for c in labels]), SamplingOptions(guidance_scale=scale, seed=1))
        generated = nearest_distances(to_uint8(samples).cpu(), splits.train_images)
        real = nearest_distances(splits.test_images, splits.train_images)
        nearer = float((generated < real.quantile(0.05)).float().mean())
        row = {"decoder_path": path, "guidance_scale": scale, "loss_train": float(losses["train"].mean()), "loss_held_out": float(losses["held_out"].mean()),
               "loss_ratio": float(losses["held_out"].mean() / losses["train"].mean()), "loss_ratio_by_third": by_third,
               "nearest_train_distance_samples": float(generated.median()), "nearest_train_distance_held_out": float(real.median()),
               "nearest_ratio": float(generated.median() / real.median()), "share_nearer_than_held_out_5th_percentile": nearer}
        rows.append(row)
        print(f"{path}: loss held-out / train {row['loss_ratio']:.3f} ({', '.join(f'{k} {v:.3f}' for k, v in by_third.items())}); "
              f"nearest training image: samples {row['nearest_train_distance_samples']:.2f}, held-out digits {row['nearest_train_distance_held_out']:.2f} "
              f"(ratio {row['nearest_ratio']:.2f}); {nearer:.1%} of samples nearer than the held-out 5th percentile")
    write_result(args.name, {"per_class": args.per_class, "samples_per_class": args.samples_per_class, "timestep_grid": TIMESTEP_GRID, "rows": rows})


if __name__ == "__main__":
    run_main(main)  # a missing or mismatched file: one line, exit code 2
