"""Imagen's cascade measured: super-resolution against bicubic, and the cascade against the single decoder.

    python benchmarks/superres.py        # checkpoints/decoder_14px.pt + superres.pt, against checkpoints/decoder.pt
    python benchmarks/superres.py --augmentation_levels 0 0.1 0.3 --per_class 20

1. Held-out images: each test image is downsampled to the base size, then brought
   back by bicubic upsampling or by the super-resolution model (conditioned on the
   class word, or on the CLIP embedding of the bicubic image for an image-conditioned
   model, never on the real image). PSNR and SSIM to the real image, judge accuracy.
2. Generated images: the base decoder draws ``--per_class`` images per digit from
   word prompts; they are upscaled by bicubic and by super-resolution at each
   sampling augmentation level, and judged (accuracy, Frechet distance) beside the
   single full-size decoder given the same prompts.
3. A figure: base output, its bicubic upsampling, the cascade, and the single decoder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
import torch
import torch.nn.functional as F

from dataloading.datasets import load_dataset
from utils.images import to_signed_float
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import DEFAULT_GUIDANCE_SCALE, SamplingOptions
from models.superres import Cascade, downsample, upsample
from models.conditioning import Conditioning
from evaluation.judge import QualityReference, load_or_train_judge
from evaluation.metrics import psnr, ssim
from utils.plotting import save_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--base_path", default="checkpoints/decoder_14px.pt")
    parser.add_argument("--superres_path", default="checkpoints/superres.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder.pt", help="the single full-size decoder to compare with ('' to skip)")
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--augmentation_levels", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--per_class", type=int, default=50, help="generated images per digit")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps of every stage")
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE, help="of the base and of the single decoder")
    parser.add_argument("--superres_guidance_scale", type=float, default=1.0)
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)

    clip = load_clip(args.clip_model_path, device)
    cascade = Cascade.load(args.base_path, args.superres_path, device, clip=clip, superres_steps=args.steps, superres_guidance_scale=args.superres_guidance_scale)
    base, superres = cascade.base, cascade.superres
    splits = load_dataset(superres.config.dataset)
    judge, judge_accuracy = load_or_train_judge(splits, args.judge_path)
    reference = QualityReference(judge, splits, args.per_class)
    conditioner, captions = ClipConditioner(clip), splits.captions
    words = [names[0] for names in captions.names]
    low_size, size = superres.config.low_res_size, superres.config.unet.image_size

    def upscale(low: torch.Tensor, cond: Conditioning, level: float) -> torch.Tensor:
        return superres.upscale(low, cond, level, SamplingOptions(steps=args.steps, guidance_scale=args.superres_guidance_scale, seed=1))

    # 1. Held-out real images: super-resolution against bicubic.
    real = to_signed_float(splits.test_images)
    labels = splits.test_labels
    low = downsample(real, low_size)
    bicubic = upsample(low, size)
    cond = conditioner.image(bicubic) if superres.config.condition == "image" else conditioner.text([words[int(c)] for c in labels])
    held_out = []

    def score(name: str, images: torch.Tensor, level: float | None, seconds: float = 0.0) -> dict:
        row = {"method": name, "augmentation_level": level, "psnr": psnr(images, real).mean().item(), "ssim": ssim(images, real).mean().item(),
               "judge_accuracy": reference.evaluate(images, labels)["accuracy"], "seconds": round(seconds, 1)}
        print(f"held-out {name:>20s}: PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  judge accuracy {row['judge_accuracy']:.4f}")
        return row

    held_out.append(score("real 28x28", real, None))
    held_out.append(score("bicubic", bicubic, None))
    held_out.append(score("nearest", F.interpolate(low, size=size, mode="nearest"), None))
    for level in args.augmentation_levels:
        start = time.perf_counter()
        images = upscale(low, cond, level)
        held_out.append(score(f"super-res (aug {level:g})", images, level, time.perf_counter() - start))

    # 2. Generated images: the cascade at each augmentation level, bicubic, and the single decoder.
    gen_labels = torch.arange(captions.num_classes).repeat_interleave(args.per_class)
    gen_cond = conditioner.text([words[int(c)] for c in gen_labels])
    if base.config.condition == "image":
        raise SystemExit("error: the generated-image comparison needs a text-conditioned base (image-conditioned bases take a prior)")
    generated = []

    def judge_generated(name: str, images: torch.Tensor, seconds: float, level: float | None = None) -> dict:
        row = reference.evaluate(images, gen_labels)
        row.update(method=name, augmentation_level=level, frechet_ratio=reference.ratio(row["frechet"]), seconds=round(seconds, 1))
        print(f"generated {name:>22s}: accuracy {row['accuracy']:.4f} (worst digit {row['min_class_accuracy']:.3f})  "
              f"Frechet {row['frechet']:.3f} = {row['frechet_ratio']:.2f}x real  [{seconds:.0f} s]")
        generated.append(row)
        return row

    start = time.perf_counter()
    sampling = SamplingOptions(steps=args.steps, guidance_scale=args.guidance_scale, seed=1)
    base_images = base.generate(gen_cond, sampling)
    base_seconds = time.perf_counter() - start
    judge_generated("base + bicubic", upsample(base_images, size), base_seconds)
    cascade_images = {}
    for level in args.augmentation_levels:
        start = time.perf_counter()
        cascade_images[level] = upscale(base_images, gen_cond, level)
        judge_generated(f"cascade (aug {level:g})", cascade_images[level], base_seconds + time.perf_counter() - start, level)
    single = None
    if args.decoder_path:
        decoder = Decoder.load(args.decoder_path, device, clip=clip)
        start = time.perf_counter()
        single = decoder.generate(gen_cond, sampling)
        judge_generated(f"single {size}x{size} decoder", single, time.perf_counter() - start)
    print(f"real-vs-real Frechet {reference.real['frechet']:.3f} at {reference.real['num_images']} images; judge held-out accuracy {judge_accuracy:.4f}")

    # 3. Side by side: one image per digit.
    first = torch.arange(captions.num_classes) * args.per_class
    shown_level = 0.1 if 0.1 in cascade_images else args.augmentation_levels[0]
    rows = [F.interpolate(base_images[first], size=size, mode="nearest"), upsample(base_images[first], size), cascade_images[shown_level][first]]
    row_labels = [f"base {low_size}x{low_size}", "bicubic", f"cascade (aug {shown_level:g})"]
    if single is not None:
        rows.append(single[first])
        row_labels.append(f"single {size}x{size}")
    figure = save_grid(torch.cat(rows), Path("outputs/benchmarks/cascade_side_by_side.png"), nrow=captions.num_classes, row_labels=row_labels,
                       title="the same prompts through the 14x14 base, bicubic upsampling and super-resolution")
    print(f"wrote {figure}")
    training = {name: training_summary(path) for name, path in (("base", args.base_path), ("superres", args.superres_path), ("single_decoder", args.decoder_path)) if path}
    write_result("superres", {"base_path": args.base_path, "superres_path": args.superres_path, "decoder_path": args.decoder_path,
                              "steps": args.steps, "guidance_scale": args.guidance_scale, "superres_guidance_scale": args.superres_guidance_scale,
                              "per_class": args.per_class, "real_vs_real": reference.real, "training": training,
                              "held_out": held_out, "generated": generated, "figure": str(figure)})


def training_summary(path: str) -> dict:
    """Training time and steps from the metrics file beside a checkpoint (empty when it is missing)."""
    metrics_path = Path(path).with_suffix(".json")
    if not metrics_path.exists():
        return {}
    metrics = json.loads(metrics_path.read_text())
    return {"train_seconds": metrics.get("train_seconds"), "steps": metrics.get("steps"), "train_samples_per_second": metrics.get("train_samples_per_second")}


if __name__ == "__main__":
    main()
