"""Sample quality of prompt -> image: judge accuracy, Frechet distance, two-sample test, pixel statistics.

    python benchmarks/decoder_quality.py                                  # default checkpoints, default sampler
    python benchmarks/decoder_quality.py --guidance_scales 1 2 3 5        # the accuracy / Frechet frontier
    python benchmarks/decoder_quality.py --sampler ddpm --steps 1000 --per_class 20
    python benchmarks/decoder_quality.py --prior_path checkpoints/prior.pt --decoder_path checkpoints/decoder_image.pt
    python benchmarks/decoder_quality.py --decoder_path checkpoints/decoder_14px.pt --superres_path checkpoints/superres.pt

For each guidance scale, prompt form ("six" and "6") and sampler seed, ``--per_class`` images
per class are generated and judged; the real-vs-real Frechet distance at the
same sample size (a mean over draws of real images, see evaluation.judge.QualityReference) is printed beside
them. A classifier two-sample test (evaluation.two_sample) then asks whether a fresh CNN can tell the same
images from real ones (0.5: it cannot), next to its real-vs-real floor, with the shares of black and saturated pixels.

One set of images is one draw: the Frechet ratio of one model moves by about 0.5 between sampler seeds
(BENCHMARKS.md, sixteenth session). So each (scale, form) row reports the mean over ``--seeds`` (three by
default): accuracies over all the images pooled, the Frechet ratio and the two-sample accuracy as the mean of
the seeds' figures, with each seed's figures kept in the row's ``per_seed``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import common  # noqa: F401
from evaluation.reports import add_device_argument, use_device, write_result
import torch

from dataloading.datasets import load_dataset
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.prior import PRIOR_SAMPLING, Prior
from models.diffusion import SPACINGS
from models.samplers import DEFAULT_GUIDANCE_SCALE, SamplingOptions
from models.superres import Cascade
from models.conditioning import Conditioning
from evaluation.judge import QualityReference, load_or_train_judge
from evaluation.two_sample import classifier_two_sample_test, pixel_statistics, real_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder.pt")
    parser.add_argument("--prior_path", default=None, help="prompt -> prior -> image-conditioned decoder (unCLIP)")
    parser.add_argument("--prior_guidance_scale", type=float, default=PRIOR_SAMPLING.guidance_scale)
    parser.add_argument("--superres_path", default=None, help="the decoder is a cascade's base; this brings its images to full size (Imagen)")
    parser.add_argument("--augmentation_level", type=float, default=0.1, help="super-resolution conditioning augmentation at sampling")
    parser.add_argument("--superres_guidance_scale", type=float, default=1.0)
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--steps", type=int, default=SamplingOptions.steps)
    parser.add_argument("--spacing", default=SamplingOptions.spacing, choices=SPACINGS)
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[DEFAULT_GUIDANCE_SCALE])
    parser.add_argument("--thresholding", default=SamplingOptions.thresholding)
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="the sampler's seeds: each (scale, form) row is the mean "
                        "over one image set per seed (other seeds judge fresh images, e.g. for a model chosen on these figures)")
    parser.add_argument("--forms", nargs="+", default=None, help="prompt forms (default: every name form, e.g. word numeral)")
    parser.add_argument("--name", default=None, help="result file name (default: from sampler and steps)")
    parser.add_argument("--folder", default="outputs/benchmarks", help="where the result file goes")
    parser.add_argument("--two_sample", action=argparse.BooleanOptionalAction, default=True, help="run the classifier two-sample test")
    parser.add_argument("--two_sample_steps", type=int, default=300, help="training steps of each fold's classifier")
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)

    clip = load_clip(args.clip_model_path, device)
    if args.superres_path:
        decoder = Cascade.load(args.decoder_path, args.superres_path, device, clip=clip, augmentation_level=args.augmentation_level,
                               superres_steps=args.steps, superres_guidance_scale=args.superres_guidance_scale)
    else:
        decoder = Decoder.load(args.decoder_path, device, clip=clip)
    prior = Prior.load(args.prior_path, device, clip=clip) if args.prior_path else None
    splits = load_dataset(decoder.config.dataset)
    judge, judge_accuracy = load_or_train_judge(splits, args.judge_path)
    reference = QualityReference(judge, splits, args.per_class)
    print(f"judge held-out accuracy {judge_accuracy:.4f}; real-vs-real Frechet {reference.real['frechet']:.3f} at {reference.real['num_images']} images")
    real, floor_real, real_labels = real_sets(splits, args.per_class)
    real_pixels = pixel_statistics(real)
    floor = None
    if args.two_sample:
        floor = classifier_two_sample_test(floor_real, real, real_labels, real_labels, steps=args.two_sample_steps)
        print(f"two-sample test, real vs real at {len(real)} images each: {floor['accuracy']:.3f} (+- {floor['standard_error']:.3f})")
    print(f"real pixels: {real_pixels['black']:.1%} black, {real_pixels['saturated']:.1%} saturated")
    conditioner = ClipConditioner(clip)
    captions = splits.captions
    forms = args.forms or list(captions.name_forms)
    labels = torch.arange(captions.num_classes).repeat_interleave(args.per_class)
    rows = []
    for scale in args.guidance_scales:
        for form in forms:
            text = conditioner.text([captions.prompts(form)[int(c)][0] for c in labels])  # the same for every seed
            per_seed = []
            for seed in args.seeds:
                start = time.perf_counter()
                cond = text
                if prior is not None:
                    cond = Conditioning(prior.sample(text, replace(PRIOR_SAMPLING, guidance_scale=args.prior_guidance_scale, seed=seed)))
                images = decoder.generate(cond, SamplingOptions(args.sampler, args.steps, scale, args.thresholding, seed=seed, spacing=args.spacing))
                seconds = time.perf_counter() - start
                result = reference.evaluate(images, labels)
                result.update(seed=seed, seconds=round(seconds, 1), frechet_ratio=reference.ratio(result["frechet"]), pixels=pixel_statistics(images))
                if args.two_sample:
                    result["two_sample"] = classifier_two_sample_test(images, real, labels, real_labels, steps=args.two_sample_steps)
                per_seed.append(result)
                two_sample = f"  two-sample {result['two_sample']['accuracy']:.3f}" if args.two_sample else ""
                print(f"guidance {scale:<4g} {form:8s} seed {seed}  accuracy {result['accuracy']:.4f} (worst class {result['min_class_accuracy']:.3f})  "
                      f"Frechet {result['frechet']:.3f} = {result['frechet_ratio']:.2f}x real{two_sample}  "
                      f"pixels {result['pixels']['black']:.1%} black, {result['pixels']['saturated']:.1%} saturated  [{seconds:.0f} s for {len(labels)} images]")
            row = mean_over_seeds(per_seed)
            row.update(guidance_scale=scale, form=form)
            rows.append(row)
            if len(per_seed) > 1:
                two_sample = f"  two-sample {row['two_sample']['accuracy']:.3f}" if args.two_sample else ""
                print(f"guidance {scale:<4g} {form:8s} mean of {len(per_seed)} seeds: accuracy {row['accuracy']:.4f} (worst class {row['min_class_accuracy']:.3f})  "
                      f"Frechet {row['frechet_ratio']:.2f}x real (seeds {min(row['frechet_ratio_per_seed']):.2f}-{max(row['frechet_ratio_per_seed']):.2f}){two_sample}")
    name = args.name or f"decoder_quality_{'prior_' if prior else ''}{'cascade_' if args.superres_path else ''}{args.sampler}_{args.steps}"
    write_result(name, {"prior_path": args.prior_path, "decoder_path": args.decoder_path, "superres_path": args.superres_path, "sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "thresholding": args.thresholding, "per_class": args.per_class, "seeds": args.seeds,
                        "judge_test_accuracy": judge_accuracy, "real_vs_real": reference.real, "two_sample_real_vs_real": floor,
                        "real_pixels": real_pixels, "results": rows}, folder=args.folder)


def mean_over_seeds(per_seed: list[dict]) -> dict:
    """One seed's result per entry -> one row: accuracies over the pooled images (every seed has the same labels),
    the Frechet distance, its ratio and the two-sample accuracy as means over the seeds, pixels as means; each seed's result kept."""
    mean = lambda values: sum(values) / len(values)
    per_class = [mean(accuracies) for accuracies in zip(*(r["per_class_accuracy"] for r in per_seed))]
    row = {"accuracy": mean([r["accuracy"] for r in per_seed]), "min_class_accuracy": min(per_class), "per_class_accuracy": per_class,
           "frechet": mean([r["frechet"] for r in per_seed]), "frechet_ratio": mean([r["frechet_ratio"] for r in per_seed]),
           "frechet_ratio_per_seed": [r["frechet_ratio"] for r in per_seed], "num_images": sum(r["num_images"] for r in per_seed),
           "seconds": round(sum(r["seconds"] for r in per_seed), 1), "seeds": [r["seed"] for r in per_seed],
           "pixels": {"black": mean([r["pixels"]["black"] for r in per_seed]), "saturated": mean([r["pixels"]["saturated"] for r in per_seed]),
                      "mean": mean([r["pixels"]["mean"] for r in per_seed]), "histogram_edges": per_seed[0]["pixels"]["histogram_edges"],
                      "histogram": [mean(shares) for shares in zip(*(r["pixels"]["histogram"] for r in per_seed))]},
           "per_seed": per_seed}
    if "two_sample" in per_seed[0]:
        accuracies = [r["two_sample"]["accuracy"] for r in per_seed]
        row["two_sample"] = {"accuracy": mean(accuracies), "per_seed": accuracies,
                             "standard_error": mean([r["two_sample"]["standard_error"] for r in per_seed]) / len(per_seed) ** 0.5}
    return row


if __name__ == "__main__":
    main()
