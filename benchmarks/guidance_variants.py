"""Classifier-free guidance and three published variations of it, on the accuracy / Frechet frontier.

    python benchmarks/guidance_variants.py                       # the default decoder, every variant below
    python benchmarks/guidance_variants.py --variants cfg=2 cfg=2,interval=500:999
    python unclip_train.py --clip_model_path checkpoints/clip.pt --channels 16,24,32 --max_minutes 2 \\
        --save_path checkpoints/decoder_weak.pt --output_dir outputs/decoder_weak  # the weak model for autoguidance

A variant is a comma-separated list of settings:

    cfg=W          classifier-free guidance (Ho & Salimans 2022): out = u + W (c - u)
    interval=A:B   guide only at timesteps A <= t <= B, else the conditional output alone
                   (guidance interval, Kynkaanniemi et al. 2024)
    rescale=PHI    scale the guided output's per-image std back to the conditional one's, mixed
                   PHI : 1 - PHI with the plain guided output (Lin et al. 2024, sec. 3.4)
    ag=W           autoguidance (Karras et al. 2024): also push away from a weaker model of the
                   same task, out += (W - 1) (c - c_weak); needs --weak_decoder_path
    apg=ETA        projected guidance (Sadat et al. 2024, APG without momentum): in x0 space, split the
                   guidance update D = x0_c - x0_u into its part parallel to x0_c (which scales the image
                   up: contrast, saturation, ink) and the rest, and keep only ETA of the parallel part:
                   x0 = x0_c + (W - 1) (D_orth + ETA D_par)

This is an experiment bench, not a feature: none of these variants is in the pipeline
(BENCHMARKS.md gives the measured reasons).
"""
from __future__ import annotations

import argparse
import time

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
from utils.cli import run_main
import torch

from dataloading.datasets import load_dataset
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.diffusion import SPACINGS
from models.samplers import Denoiser, SamplingOptions, sample
from utils.images import to_uint8
from evaluation.attributes import attribute_shares
from evaluation.judge import QualityReference, load_or_train_judge
from evaluation.two_sample import classifier_two_sample_test, pixel_statistics, real_sets
from decoder_quality import mean_over_seeds

DEFAULT_VARIANTS = ["cfg=1.5", "cfg=2", "cfg=3", "cfg=2,interval=500:999", "cfg=3,interval=500:999", "cfg=3,interval=0:700",
                    "cfg=2,rescale=0.7", "cfg=1,ag=2", "cfg=1.5,ag=1.5", "cfg=2,ag=1.5"]


def parse_variant(text: str) -> dict:
    settings = {"cfg": 1.0, "interval": (0, 10**9), "rescale": 0.0, "ag": 1.0, "apg": None}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in settings:
            raise SystemExit(f"unknown setting {key!r} in variant {text!r}; use cfg, interval, rescale, ag, apg")
        settings[key] = tuple(int(v) for v in value.split(":")) if key == "interval" else float(value)
    return settings


class GuidanceVariant(Denoiser):
    """A Denoiser whose guided output follows one variant's settings."""

    def __init__(self, decoder: Decoder, cond, settings: dict, weak: Decoder | None) -> None:
        super().__init__(decoder.model, decoder.schedule, cond, settings["cfg"])
        self.settings, self.weak = settings, weak

    @torch.no_grad()
    def model_output(self, x: torch.Tensor, t: int) -> torch.Tensor:
        s, b = self.settings, x.shape[0]
        guiding = s["interval"][0] <= t <= s["interval"][1]
        if self.guided_cond is None or not guiding:
            cond_out = uncond_out = self._forward(x, torch.full((b,), t), self.cond)
        else:
            cond_out, uncond_out = self._forward(torch.cat([x, x]), torch.full((2 * b,), t), self.guided_cond).chunk(2)
        guided = cond_out + (s["cfg"] - 1) * (cond_out - uncond_out) if guiding else cond_out
        if guiding and s["ag"] != 1:
            weak_out = self.weak.model(x, torch.full((b,), t), self.cond).float()
            guided = guided + (s["ag"] - 1) * (cond_out - weak_out)
        if s["rescale"]:
            std = lambda z: z.flatten(1).std(1).view(-1, *([1] * (z.ndim - 1)))  # noqa: E731
            guided = s["rescale"] * guided * std(cond_out) / std(guided) + (1 - s["rescale"]) * guided
        return guided

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, b = self.settings, x.shape[0]
        if s["apg"] is None or self.guided_cond is None or not s["interval"][0] <= t <= s["interval"][1]:
            return super().__call__(x, t)
        t_batch = torch.full((b,), t, dtype=torch.long)
        cond_out, uncond_out = self._forward(torch.cat([x, x]), torch.full((2 * b,), t), self.guided_cond).chunk(2)
        x0_c, _ = self.schedule.split_prediction(cond_out, x, t_batch)  # [B, C, H, W]
        x0_u, _ = self.schedule.split_prediction(uncond_out, x, t_batch)
        update = x0_c - x0_u
        unit = x0_c.flatten(1) / x0_c.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-8)  # [B, CHW]
        parallel = ((update.flatten(1) * unit).sum(1, keepdim=True) * unit).view_as(update)
        x0 = x0_c + (s["cfg"] - 1) * (update - parallel + s["apg"] * parallel)
        return x0, self.schedule.eps_from_x0(x0, x, t_batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder.pt")
    parser.add_argument("--weak_decoder_path", default="checkpoints/decoder_weak.pt", help="the weaker model for ag=W variants")
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--steps", type=int, default=SamplingOptions.steps, help="DPM-Solver++(2M) steps")
    parser.add_argument("--spacing", default=SamplingOptions.spacing, choices=SPACINGS)
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--form", default="word")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="sampler seeds: each row is the mean over one image set per seed "
                        "(decoder_quality.mean_over_seeds)")
    parser.add_argument("--name", default="guidance_variants")
    parser.add_argument("--two_sample", action=argparse.BooleanOptionalAction, default=True, help="run the classifier two-sample test")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = use_device(args.device)

    variants = [(text, parse_variant(text)) for text in args.variants]
    clip = load_clip(args.clip_model_path, device)
    decoder = Decoder.load(args.decoder_path, device, clip=clip)
    weak = None
    if any(settings["ag"] != 1 for _, settings in variants):
        weak = Decoder.load(args.weak_decoder_path, device, clip=clip)
    splits = load_dataset(decoder.config.dataset)
    judge, _ = load_or_train_judge(splits, args.judge_path)
    reference = QualityReference(judge, splits, args.per_class)
    print(f"real-vs-real Frechet {reference.real['frechet']:.3f} at {reference.real['num_images']} images")
    real, _, real_labels = real_sets(splits, args.per_class)
    labels = torch.arange(splits.captions.num_classes).repeat_interleave(args.per_class)
    cond = ClipConditioner(clip).text([splits.captions.prompts(args.form)[int(c)][0] for c in labels])
    shape = (len(labels), *splits.image_shape)
    rows = []
    for text, settings in variants:
        per_seed = []
        for seed in args.seeds:
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(seed)  # the same starting noise for every variant
            drawn = sample(GuidanceVariant(decoder, cond, settings, weak), decoder.schedule, shape, SamplingOptions(steps=args.steps, spacing=args.spacing), generator)
            images = decoder.pixel_space.decode(drawn.clamp(-1, 1))  # as Decoder.generate returns them
            result = reference.evaluate(images, labels)
            result.update(seed=seed, frechet_ratio=reference.ratio(result["frechet"]), seconds=round(time.perf_counter() - start, 1),
                          pixels=pixel_statistics(images), attribute_terciles=attribute_shares(to_uint8(images), labels, splits))
            if args.two_sample:
                result["two_sample"] = classifier_two_sample_test(images, real, labels, real_labels)
            per_seed.append(result)
        row = mean_over_seeds(per_seed)
        row.update(variant=text, attribute_terciles={name: [sum(shares) / len(per_seed) for shares in zip(*(r["attribute_terciles"][name] for r in per_seed))]
                                                     for name in per_seed[0]["attribute_terciles"]})
        rows.append(row)
        two_sample = f"  two-sample {row['two_sample']['accuracy']:.3f}" if args.two_sample else ""
        print(f"{text:28s} accuracy {row['accuracy']:.4f} (worst digit {row['min_class_accuracy']:.3f})  "
              f"Frechet {row['frechet_ratio']:.2f}x real (seeds {' / '.join(f'{r:.2f}' for r in row['frechet_ratio_per_seed'])}){two_sample}  "
              f"mean pixel {row['pixels']['mean']:.4f}  [{row['seconds']:.0f} s]")
        print(" " * 29 + "tercile shares (low / middle / high; real about 1/3 each): " + "  ".join(
            f"{name} {' / '.join(f'{v:.2f}' for v in shares)}" for name, shares in row["attribute_terciles"].items()))
    write_result(args.name, {"decoder_path": args.decoder_path, "weak_decoder_path": args.weak_decoder_path if weak else None,
                             "steps": args.steps, "spacing": args.spacing, "seeds": args.seeds, "per_class": args.per_class, "form": args.form, "real_vs_real": reference.real,
                             "real_pixels": pixel_statistics(real), "results": rows})


if __name__ == "__main__":
    run_main(main)  # a missing or mismatched file: one line, exit code 2
