"""What gives generated digits away? The two-sample test on views that keep only one property.

    python benchmarks/two_sample_tells.py --decoder_path checkpoints/decoder.pt
    python benchmarks/two_sample_tells.py --decoder_path checkpoints/decoder.pt --thresholding static   # x0_hat clipped at every step

The classifier two-sample test (evaluation.two_sample) says *whether* a CNN can tell
generated digits from real ones. This says *by what*: both sets go through the same
view, and the test runs again on the views.

    as drawn                   everything
    binarised at 128 / at 30   the shape alone: which pixels carry ink
    pixels sorted              the grey levels alone: each image's histogram, no shape
    blurred 3x3                the fine texture and the exact levels removed
    levels < 10 set to black   the test without the background haze (a diagnostic edit, not a fix)

Beside them, the shares of the levels where real MNIST piles up: 0 (the background)
and 252-254 (full ink; the scanner's ink rarely reaches 255).
"""
from __future__ import annotations

import argparse

import common  # noqa: F401
import torch
import torch.nn.functional as F

from dataloading.datasets import load_dataset
from evaluation.reports import add_device_argument, use_device, write_result
from evaluation.two_sample import as_uint8, classifier_two_sample_test, level_shares, real_sets
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import DEFAULT_GUIDANCE_SCALE, SamplingOptions

BAND_EDGES = (0, 1, 4, 10, 240, 252, 255, 256)  # grey-level bands: 0 | 1-3 | 4-9 | 10-239 | 240-251 | 252-254 | 255
BAND_NAMES = ("0", "1-3", "4-9", "10-239", "240-251", "252-254", "255")


def binarised(images: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.where(images >= threshold, 255, 0).to(torch.uint8)


def sorted_pixels(images: torch.Tensor) -> torch.Tensor:
    """Each image's pixels in ascending order, laid out in its shape: its histogram, with the shape gone."""
    return images.flatten(1).sort(1).values.view_as(images)


def blurred(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None]) / 16  # [3, 3], sums to 1
    out = F.conv2d(images.float(), kernel.view(1, 1, 3, 3).repeat(images.shape[1], 1, 1, 1), padding=1, groups=images.shape[1])
    return out.round().clamp(0, 255).to(torch.uint8)


VIEWS = {
    "as drawn": lambda x: x,
    "binarised at 128": lambda x: binarised(x, 128),
    "binarised at 30": lambda x: binarised(x, 30),
    "pixels sorted": sorted_pixels,
    "blurred 3x3": blurred,
    "levels < 10 set to black": lambda x: torch.where(x < 10, 0, x).to(torch.uint8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_model_path", default="checkpoints/clip.pt")
    parser.add_argument("--decoder_path", default="checkpoints/decoder.pt")
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--form", default="word", help="prompt form: word (\"six\") or numeral (\"6\")")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE)
    parser.add_argument("--thresholding", default=SamplingOptions.thresholding)
    parser.add_argument("--name", default=None, help="result file name (default: two_sample_tells_<checkpoint name>)")
    add_device_argument(parser)
    args = parser.parse_args()
    device = use_device(args.device)

    clip = load_clip(args.clip_model_path, device)
    decoder = Decoder.load(args.decoder_path, device, clip=clip)
    splits = load_dataset(decoder.config.dataset)
    real, _, labels = real_sets(splits, args.per_class)
    prompts = [splits.captions.prompts(args.form)[int(c)][0] for c in labels]
    sampling = SamplingOptions(steps=args.steps, guidance_scale=args.guidance_scale, thresholding=args.thresholding, seed=1)
    generated = as_uint8(decoder.generate(ClipConditioner(clip).text(prompts), sampling))
    shares = {source: dict(zip(BAND_NAMES, level_shares(images, BAND_EDGES))) for source, images in (("real", real), ("generated", generated))}
    for source, row in shares.items():
        print(f"{source:9s} " + "  ".join(f"{band}: {share:6.2%}" for band, share in row.items()))
    tests = {}
    for view, transform in VIEWS.items():
        tests[view] = classifier_two_sample_test(transform(generated), transform(real), labels, labels)["accuracy"]
        print(f"two-sample accuracy, {view:26s} {tests[view]:.3f}", flush=True)
    name = args.name or f"two_sample_tells_{args.decoder_path.rsplit('/', 1)[-1].removesuffix('.pt')}"
    write_result(name, {"arguments": vars(args), "level_shares": shares, "two_sample_by_view": tests})


if __name__ == "__main__":
    main()
