"""Where does the decoder's Frechet gap come from? A diagnostic, not a fix.

    python benchmarks/background_haze.py                 # checkpoints/decoder.pt, 50 "word" prompts per digit
    python benchmarks/background_haze.py --decoder_path checkpoints/decoder_equal_time.pt

1. Haze. Real MNIST backgrounds are exactly black; generated ones carry a faint
   haze. This counts pixels at exact background and in the haze band, for real
   held-out digits and for generated ones, then judges the generated images as
   drawn and with the haze snapped to black: the change in Frechet distance
   bounds what the haze costs.
2. Noise level. Held-out real digits are noised to timestep t with q(x_t | x_0)
   and denoised by the decoder (prompted with their own digit), as SDEdit does
   (Meng et al. 2022). Small t keeps the digit's shape and redraws only the
   fine detail; the t at which the Frechet ratio grows says which part of the
   reverse process makes the gap.
"""
from __future__ import annotations

import argparse

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
import torch

from dataloading.datasets import load_dataset
from utils.images import to_signed_float
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import DEFAULT_GUIDANCE_SCALE, Denoiser, DPMSolverPP2MStep, SamplingOptions, denoise
from evaluation.judge import QualityReference, load_or_train_judge


def pixel_shares(images: torch.Tensor) -> dict:
    """Shares of pixels at exact background (< -0.99) and in the haze band (-0.99 .. -0.8), in [-1, 1] units."""
    return {"background": (images < -0.99).float().mean().item(), "haze": ((images >= -0.99) & (images < -0.8)).float().mean().item()}


def renoise_and_denoise(decoder: Decoder, cond, images: torch.Tensor, t: int, guidance_scale: float, seed: int = 1) -> torch.Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (DDPM eq. 4), then DPM-Solver++ from t to 0, about one step per 50 timesteps."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    x_t = decoder.schedule.q_sample(decoder.encode(images), torch.full((len(images),), t), noise)
    timesteps = torch.linspace(t, 0, max(3, t // 50 + 2)).round().long().tolist()
    denoiser = Denoiser(decoder.model, decoder.schedule, cond, guidance_scale)
    return decoder.pixel_space.decode(denoise(denoiser, decoder.schedule, x_t, timesteps, DPMSolverPP2MStep()).clamp(-1, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder.pt")
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-0.9, -0.8])
    parser.add_argument("--renoise_timesteps", type=int, nargs="+", default=[20, 60, 150, 300, 500])
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)

    clip = load_clip(args.clip_model_path, device)
    decoder = Decoder.load(args.decoder_path, device, clip=clip)
    splits = load_dataset(decoder.config.dataset)
    judge, _ = load_or_train_judge(splits, args.judge_path)
    reference = QualityReference(judge, splits, args.per_class)
    words = [names[0] for names in splits.captions.names]
    labels = torch.arange(len(words)).repeat_interleave(args.per_class)
    conditioner = ClipConditioner(clip)
    images = decoder.generate(conditioner.text([words[int(c)] for c in labels]), SamplingOptions(guidance_scale=args.guidance_scale, seed=1))
    real, generated = pixel_shares(to_signed_float(splits.test_images)), pixel_shares(images)
    print(f"pixels at background: real {real['background']:.3f}, generated {generated['background']:.3f}; "
          f"in the haze band: real {real['haze']:.3f}, generated {generated['haze']:.3f}")
    rows = []
    for threshold in [None, *args.thresholds]:
        snapped = images if threshold is None else torch.where(images < threshold, torch.full_like(images, -1.0), images)
        result = reference.evaluate(snapped, labels)
        rows.append({"snap_below": threshold, "accuracy": result["accuracy"], "frechet": result["frechet"],
                     "frechet_ratio": reference.ratio(result["frechet"])})
        print(f"snap below {threshold if threshold is not None else 'none':>5}: accuracy {result['accuracy']:.4f}  "
              f"Frechet {result['frechet']:.3f} = {rows[-1]['frechet_ratio']:.2f}x real")

    held_out = torch.cat([(splits.test_labels == c).nonzero().squeeze(1)[: args.per_class] for c in range(len(words))])
    real_images, real_labels = to_signed_float(splits.test_images[held_out]), splits.test_labels[held_out]
    real_cond = conditioner.text([words[int(c)] for c in real_labels])
    renoised = []
    for t in [0, *args.renoise_timesteps]:
        images = real_images if t == 0 else renoise_and_denoise(decoder, real_cond, real_images, t, args.guidance_scale)
        result = reference.evaluate(images, real_labels)
        renoised.append({"timestep": t, "accuracy": result["accuracy"], "frechet_ratio": reference.ratio(result["frechet"]),
                         "pixel_shares": pixel_shares(images)})
        print(f"held-out digits re-noised to t = {t:3d} and denoised: accuracy {result['accuracy']:.4f}  Frechet {renoised[-1]['frechet_ratio']:.2f}x real  "
              f"haze band {renoised[-1]['pixel_shares']['haze']:.3f}")
    write_result("background_haze", {"decoder_path": args.decoder_path, "per_class": args.per_class, "guidance_scale": args.guidance_scale,
                                     "pixel_shares": {"real": real, "generated": generated}, "real_vs_real": reference.real, "results": rows,
                                     "renoised": renoised})


if __name__ == "__main__":
    main()
