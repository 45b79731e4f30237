"""Do generated images obey style words? Adherence, class accuracy and the diversity left over (issue 19).

    python benchmarks/attributes.py --clip_model_path checkpoints/style/clip.pt --decoder_path checkpoints/style/decoder.pt
    python benchmarks/attributes.py ... --prior_path checkpoints/style/prior.pt --image_decoder_path checkpoints/style/decoder_image.pt
    python benchmarks/attributes.py ... --base_path checkpoints/style/decoder_14px.pt --superres_path checkpoints/style/superres.pt

For every pipeline (the text decoder; with --prior_path also prompt -> prior -> image decoder; with --superres_path
also Imagen's cascade, a 14x14 text decoder and super-resolution), digit and attribute:

* **adherence**: ``--per_prompt`` images for the low word and as many for the high word ("a thin six" / "a thick six",
  "a six slanted left" / "a six slanted right"), from the same starting noise, in the trained phrasing and in each
  held-out one. The attribute is measured on the generated pixels (dataloading.attributes): the AUC over pairs that a
  "high" image measures above a "low" one, and the share landing in the requested tercile of real digits of its class.
* **class accuracy** of all those images, read by the judge (the plain prompts' apart).
* **held-out combinations** (thick + slanted left, thin + slanted right, never named together in training): the
  thickness AUC of "a thick six slanted left" against "a thin six slanted left", and the slant AUC of
  "a thick six slanted left" against "a thick six slanted right".
* **diversity left over**: with no attribute named ("six", ``--plain_per_prompt`` images per digit, each digit from its own
  noise), the share of images in each tercile of each attribute against the real held-out digits' (about a third each),
  its largest gap and the standard error of a share; with one attribute named, the same shares of the others.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import common  # noqa: F401
import torch

from dataloading.attributes import measure
from dataloading.datasets import load_dataset
from dataloading.style_captions import STYLE_CAPTION_SETS
from evaluation.attributes import measured_phrasings, pair_auc, spread_against_real, summarise, tercile_shares
from evaluation.judge import load_or_train_judge
from evaluation.reports import add_device_argument, use_device, write_result
from models.conditioning import Conditioning
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.prior import PRIOR_SAMPLING, Prior
from models.samplers import DEFAULT_GUIDANCE_SCALE, SamplingOptions
from models.superres import Cascade
from utils.cli import run_main
from utils.images import to_uint8


class Pipeline:
    """prompts -> uint8 images [N, C, H, W], through a text decoder, prior -> image decoder or cascade, with fixed noise per position."""

    def __init__(self, clip, decoder: Decoder | Cascade, prior: Prior | None, sampling: SamplingOptions,
                 prior_guidance_scale: float = PRIOR_SAMPLING.guidance_scale) -> None:
        self.conditioner, self.decoder, self.prior, self.sampling = ClipConditioner(clip), decoder, prior, sampling
        self.prior_sampling = replace(PRIOR_SAMPLING, guidance_scale=prior_guidance_scale, seed=sampling.seed)

    def __call__(self, prompts: list[str], seed: int | None = None) -> torch.Tensor:
        """``seed``: start from other noise than the adherence pairs' (which share theirs, position by position)."""
        seed = self.sampling.seed if seed is None else seed
        sampling, prior_sampling = replace(self.sampling, seed=seed), replace(self.prior_sampling, seed=seed)
        cond = self.conditioner.text(prompts)
        if self.prior is not None:
            cond = Conditioning(self.prior.sample(cond, prior_sampling))
        return to_uint8(self.decoder.generate(cond, sampling))


def evaluate(pipeline: Pipeline, splits, style, judge, per_prompt: int, plain_per_prompt: int, real: dict[str, list[float]]) -> dict:
    bins, attributes = splits.attribute_bins, style.attributes
    phrasings = measured_phrasings(style)
    correct, judged = 0, 0
    accuracy_by: dict[str, list[float]] = {}  # what the judge reads right, by what the prompt names: "plain", "thickness=0", ...
    adherence: dict = {p: {a.name: {"auc": [], "in_tercile": []} for a in attributes} for p in phrasings}
    plain_terciles, named_leftover = [], {a.name: [] for a in attributes}

    accuracy_by_phrasing: dict[str, dict[int, list[float]]] = {}  # phrasing -> digit -> accuracy of each prompt

    def generated(prompt: str, c: int, phrasing: str = "held-out combination", count: int = per_prompt,
                  seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal correct, judged
        images = pipeline([prompt] * count, seed)
        predicted, _ = judge.predict(images)
        if phrasing != "plain":  # the class accuracy of attribute prompts
            correct, judged = correct + int((predicted == c).sum()), judged + len(images)
        key = ", ".join(f"{name}={t}" for name, t in sorted(style.named_in(prompt).items())) or "plain"
        accuracy_by.setdefault(key, []).append((predicted == c).float().mean().item())
        accuracy_by_phrasing.setdefault(phrasing, {}).setdefault(c, []).append((predicted == c).float().mean().item())
        values = measure(images, attributes)  # [n, A]
        return values, bins.terciles(values, torch.full((count,), c))

    for c in range(style.num_classes):
        # each digit its own noise, so that the spread's plain_per_prompt x 10 images are independent draws
        _, plain_t = generated(style.classes.names[c][0], c, "plain", plain_per_prompt, seed=100 * pipeline.sampling.seed + 1 + c)
        plain_terciles.append(plain_t)
        for phrasing, template in phrasings.items():
            for a, attribute in enumerate(attributes):
                (low, low_t), (high, high_t) = (generated(style.prompt(c, {attribute.name: t}, template), c, phrasing) for t in (0, 2))
                adherence[phrasing][attribute.name]["auc"].append(pair_auc(high[:, a], low[:, a]))
                adherence[phrasing][attribute.name]["in_tercile"].append(((low_t[:, a] == 0).float().mean().item() + (high_t[:, a] == 2).float().mean().item()) / 2)
                if phrasing == "adjective":
                    named_leftover[attribute.name].append(torch.cat([low_t, high_t]))
    plain = torch.cat(plain_terciles)  # [10 n, A]
    result = {
        "adherence": {p: {name: {"auc": summarise(v["auc"]), "in_tercile": sum(v["in_tercile"]) / len(v["in_tercile"])} for name, v in by.items()}
                      for p, by in adherence.items()},
        "no_attribute_named": {a.name: spread_against_real(tercile_shares(plain[:, i]), real[a.name], len(plain)) for i, a in enumerate(attributes)},
        "one_named_others": {name: {other.name: tercile_shares(torch.cat(parts)[:, j]) for j, other in enumerate(attributes) if other.name != name}
                             for name, parts in named_leftover.items()},
    }
    result["held_out_combinations"] = held_out_combinations(generated, style) if style.dataset == "mnist" else {}
    result["class_accuracy"] = correct / judged
    result["class_accuracy_by_named"] = {key: sum(v) / len(v) for key, v in sorted(accuracy_by.items())}
    every_prompt = {key: [a for per_prompt in d.values() for a in per_prompt] for key, d in accuracy_by_phrasing.items()}
    result["class_accuracy_by_phrasing"] = {key: sum(v) / len(v) for key, v in every_prompt.items()}
    result["class_accuracy_by_phrasing_and_digit"] = {key: [sum(d[c]) / len(d[c]) for c in sorted(d)] for key, d in accuracy_by_phrasing.items()}
    return result


def held_out_combinations(generated, style) -> dict:
    """Thickness and slant AUCs of prompts naming the pairs training never names together (MNIST only)."""
    thickness, slant = style.attribute_index("thickness"), style.attribute_index("slant")
    thickness_auc, slant_auc = [], []
    for c in range(style.num_classes):
        thick_left = generated(style.prompt(c, {"thickness": 2, "slant": 0}, "{a_np} {post}"), c)[0]
        thin_left = generated(style.prompt(c, {"thickness": 0, "slant": 0}, "{a_np} {post}"), c)[0]
        thick_right = generated(style.prompt(c, {"thickness": 2, "slant": 2}, "{a_np} {post}"), c)[0]
        thickness_auc.append(pair_auc(thick_left[:, thickness], thin_left[:, thickness]))
        slant_auc.append(pair_auc(thick_right[:, slant], thick_left[:, slant]))
    return {"thickness (thick+left vs thin+left)": summarise(thickness_auc), "slant (thick+right vs thick+left)": summarise(slant_auc)}


def print_report(name: str, result: dict) -> None:
    print(f"{name}: judge class accuracy on attribute prompts {result['class_accuracy']:.3f}; by what the prompt names: "
          + ", ".join(f"{key} {value:.3f}" for key, value in result["class_accuracy_by_named"].items()))
    print("  class accuracy by phrasing: " + ", ".join(f"{key} {value:.3f}" for key, value in result["class_accuracy_by_phrasing"].items()))
    for key, per_digit in result["class_accuracy_by_phrasing_and_digit"].items():
        print(f"    {key:34s} by digit: " + " ".join(f"{a:.2f}" for a in per_digit))
    for phrasing, by in result["adherence"].items():
        print(f"  {phrasing:34s} " + "  ".join(f"{a} AUC {v['auc']['mean']:.3f} (worst digit {v['auc']['min']:.3f}), in tercile {v['in_tercile']:.2f}"
                                               for a, v in by.items()))
    for combination, summary in result["held_out_combinations"].items():
        print(f"  held-out combination, {combination}: AUC {summary['mean']:.3f} (worst digit {summary['min']:.3f})")
    print("  nothing named, tercile shares (largest gap from real, a share's standard error): "
          + "  ".join(f"{a} {' / '.join(f'{s:.2f}' for s in v['shares'])} ({v['largest_gap']:.2f}, {v['standard_error']:.3f})"
                      for a, v in result["no_attribute_named"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", required=True)
    parser.add_argument("--decoder_path", required=True, help="a text decoder trained with --captions style")
    parser.add_argument("--prior_path", default=None)
    parser.add_argument("--image_decoder_path", default=None, help="with --prior_path: the image-conditioned decoder")
    parser.add_argument("--base_path", default=None, help="with --superres_path: the cascade's 14x14 text decoder")
    parser.add_argument("--superres_path", default=None, help="the cascade's super-resolution model (14x14 + text -> 28x28)")
    parser.add_argument("--prior_guidance_scale", type=float, default=PRIOR_SAMPLING.guidance_scale,
                        help="with --prior_path: the prior's classifier-free guidance (1: none, so its embeddings keep the spread of style)")
    parser.add_argument("--augmentation_level", type=float, default=0.1, help="super-resolution conditioning augmentation at sampling")
    parser.add_argument("--judge_path", default=None, help="default: the dataset's judge (evaluation.judge.default_judge_path)")
    parser.add_argument("--per_prompt", type=int, default=20, help="images per prompt (each digit, attribute, word and phrasing)")
    parser.add_argument("--plain_per_prompt", type=int, default=100,
                        help="images per digit with nothing named: the spread of style, whose shares need more images than adherence")
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE)
    parser.add_argument("--seed", type=int, default=1, help="the sampler's seed")
    parser.add_argument("--steps", type=int, default=SamplingOptions.steps)
    parser.add_argument("--guidance_from_t", type=int, default=0, help="guide only at timesteps t >= this (a guidance interval)")
    parser.add_argument("--name", default="attributes")
    parser.add_argument("--folder", default="outputs/benchmarks")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    device = use_device(args.device)
    if args.per_prompt < 2 or args.plain_per_prompt < 2 or bool(args.prior_path) != bool(args.image_decoder_path) or bool(args.base_path) != bool(args.superres_path):
        parser.error("--per_prompt and --plain_per_prompt must be at least 2; --prior_path and --image_decoder_path go together, and so do --base_path and --superres_path")
    if not math.isfinite(args.prior_guidance_scale) or args.prior_guidance_scale < 0:
        parser.error(f"--prior_guidance_scale must be a finite number, 0 or more, got {args.prior_guidance_scale}")
    clip = load_clip(args.clip_model_path, device)
    decoder = Decoder.load(args.decoder_path, device, clip=clip)
    splits = load_dataset(decoder.config.dataset)
    style = STYLE_CAPTION_SETS[splits.name]
    judge, judge_accuracy = load_or_train_judge(splits, args.judge_path)
    sampling = SamplingOptions(steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed, guidance_from_t=args.guidance_from_t)
    pipelines = {"text decoder": Pipeline(clip, decoder, None, sampling)}
    if args.prior_path:
        pipelines["prior -> image decoder"] = Pipeline(clip, Decoder.load(args.image_decoder_path, device, clip=clip), Prior.load(args.prior_path, device, clip=clip), sampling,
                                                            args.prior_guidance_scale)
    if args.superres_path:
        cascade = Cascade.load(args.base_path, args.superres_path, device, clip=clip, augmentation_level=args.augmentation_level, superres_steps=args.steps)
        pipelines["cascade: 14x14 base -> super-resolution"] = Pipeline(clip, cascade, None, sampling)
    real = {a.name: tercile_shares(splits.terciles("test")[:, i]) for i, a in enumerate(style.attributes)}
    print("real held-out digits, tercile shares: " + "  ".join(f"{a} {' / '.join(f'{s:.2f}' for s in shares)}" for a, shares in real.items()))
    results = {}
    for name, pipeline in pipelines.items():
        start = time.perf_counter()
        results[name] = evaluate(pipeline, splits, style, judge, args.per_prompt, args.plain_per_prompt, real)
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print_report(name, results[name])
    write_result(args.name, {"clip_model_path": args.clip_model_path, "decoder_path": args.decoder_path, "prior_path": args.prior_path,
                             "prior_guidance_scale": args.prior_guidance_scale if args.prior_path else None,
                             "image_decoder_path": args.image_decoder_path,
                             "base_path": args.base_path, "superres_path": args.superres_path, "per_prompt": args.per_prompt,
                             "plain_per_prompt": args.plain_per_prompt, "seed": args.seed, "guidance_scale": args.guidance_scale,
                             "steps": args.steps, "guidance_from_t": args.guidance_from_t, "judge_test_accuracy": judge_accuracy, "real_terciles": real, "results": results}, folder=args.folder)


if __name__ == "__main__":
    run_main(main)
