"""Prompt in, images out: CLIP embedding -> diffusion decoder -> pixels.

    python generate_images.py --prompt six --num_samples 64                        # text-conditioned decoder
    python generate_images.py --prompt zero 1 "a handwritten two" --num_samples 8 --npz out.npz --gif out.gif
    python generate_images.py --prompt six --pipeline prior                        # unCLIP: prompt -> prior -> image decoder
    python generate_images.py --image my_digit.png --num_samples 16                # variations of an image
    python generate_images.py --interpolate three eight --pipeline prior --num_samples 10
    python generate_images.py --prompt six --pipeline cascade                      # Imagen: 14x14 base -> super-resolution

Every stage's weights default to ``checkpoints/<stage>.pt`` when you trained that stage there, and
otherwise to the shipped ``pretrained/<stage>.safetensors`` (utils.checkpoints.default_weights); the
paths used are printed. ``--clip_model_path``, ``--decoder_path``, ``--prior_path`` and ``--superres_path`` choose others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.conditioning import Conditioning
from models.diffusion import SPACINGS
from models.pipeline import ClipConditioner, ClipMismatch, Decoder, default_checkpoint_name, load_clip, slerp
from models.prior import PRIOR_SAMPLING, Prior
from models.samplers import DEFAULT_GUIDANCE_SCALE, SAMPLERS, THRESHOLDING, SamplingOptions
from models.superres import SUPERRES_SAMPLING, Cascade
from utils.checkpoints import PRETRAINED_DIR, WEIGHTS_SUFFIX, default_weights
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, run_main
from utils.config import option
from utils.errors import UserError, require
from utils.files import check_output_file
from utils.images import load_image, to_uint8
from utils.plotting import save_grid
from utils.trajectory import save_trajectory_gif
from utils.training import resolve_device

MAX_SAMPLES = 100_000
DEFAULT_PROMPTS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PIPELINES = {"decoder": "prompt -> text-conditioned decoder", "prior": "prompt -> prior -> image-conditioned decoder (DALL-E 2)",
             "cascade": "prompt -> 14x14 base decoder -> super-resolution (Imagen)"}


@dataclass
class GenerateConfig:
    prompt: str | None = option(None, "one or more prompts, one grid row (or block of rows) each", nargs="+")
    prompts_file: str | None = option(None, "a text file with one prompt per line")
    image: str | None = option(None, "make variations of these image files (CLIP-encode, then decode many)", nargs="+")
    interpolate: str | None = option(None, "two prompts or image files: a strip along the spherical path between their embeddings", nargs=2)
    num_samples: int = option(16, "images per prompt or image (with --interpolate: points on the strip)")
    pipeline: str = option("decoder", "; ".join(f"{k}: {v}" for k, v in PIPELINES.items()), choices=list(PIPELINES))
    clip_model_path: str | None = option(None, "the CLIP checkpoint the other stages were trained on (default: checkpoints/clip.pt, else pretrained/clip.safetensors)")
    decoder_path: str | None = option(None, "decoder checkpoint (default: decoder, or decoder_image with the prior, --image or "
                                            "--interpolate; in a cascade the 14x14 base, decoder_14px or decoder_image_14px)")
    prior_path: str | None = option(None, "the diffusion prior's checkpoint (implies --pipeline prior; default: prior)")
    sampler: str = option("dpmpp_2m", "sampling algorithm", choices=list(SAMPLERS))
    steps: int = option(SamplingOptions.steps, "sampler steps (DDPM's original: 1000)")
    spacing: str = option(SamplingOptions.spacing, "how the steps are spread over t (quadratic: crowded towards t = 0)", choices=list(SPACINGS))
    guidance_scale: float | None = option(None, "classifier-free guidance scale of the decoder (1: no guidance; default: the decoder's own, which "
                                                f"a release writes into its weights, 1.5 for the shipped text decoder; else {DEFAULT_GUIDANCE_SCALE:g})")
    guidance_from_t: int = option(SamplingOptions.guidance_from_t, "guide the decoder only at timesteps t >= this (0..999), the conditional "
                                                                    "output alone below it: a guidance interval (Kynkaanniemi et al. 2024)")
    prior_guidance_scale: float = option(PRIOR_SAMPLING.guidance_scale, "classifier-free guidance scale of the prior")
    num_candidates: int = option(1, "prior: draw k image embeddings per image and keep the one closest to the text (DALL-E 2 reranking)")
    superres_path: str | None = option(None, "the super-resolution checkpoint (implies --pipeline cascade; default: superres)")
    superres_steps: int = option(SUPERRES_SAMPLING.steps, "super-resolution sampler steps")
    superres_guidance_scale: float = option(SUPERRES_SAMPLING.guidance_scale, "super-resolution classifier-free guidance scale")
    augmentation_level: float = option(0.1, "super-resolution: noise level in [0, 1] given to the low-res images (Imagen's conditioning augmentation)")
    thresholding: str = option("none", "x0 thresholding at every sampler step (none: clip only the final images)", choices=list(THRESHOLDING))
    eta: float = option(0.0, "DDIM noise (0: deterministic)")
    seed: int = option(0, "random seed: same seed, same images")
    chunk_size: int = option(256, "images generated at once (memory bound)")
    output: str = option("outputs/generated.png", "grid PNG path")
    npz: str | None = option(None, "also save the raw images (uint8 [N, C, H, W], key 'images') and prompts")
    gif: str | None = option(None, "also save the denoising trajectory as an animated GIF")
    device: str = option("auto", "auto, cpu or cuda")

    def validate(self) -> None:
        require(0 < self.num_samples <= MAX_SAMPLES, f"--num_samples must be between 1 and {MAX_SAMPLES}, got {self.num_samples}")
        for flag in ("steps", "superres_steps", "chunk_size", "num_candidates"):
            require(getattr(self, flag) > 0, f"--{flag} must be positive, got {getattr(self, flag)}")
        for flag in ("guidance_scale", "prior_guidance_scale", "superres_guidance_scale", "eta"):
            value = getattr(self, flag)
            require(value is None and flag == "guidance_scale" or math.isfinite(value) and value >= 0, f"--{flag} must be a finite number, 0 or more; got {value}")
        require(0 <= self.augmentation_level <= 1, f"--augmentation_level must be in [0, 1], got {self.augmentation_level}")
        modes = [bool(self.prompt or self.prompts_file), bool(self.image), bool(self.interpolate)]
        require(sum(modes) <= 1, "give prompts, --image or --interpolate, not several")
        require(not (self.interpolate and self.num_samples < 2), "--interpolate needs --num_samples of at least 2")
        require(not (self.prior_path and self.superres_path), "give --prior_path or --superres_path, not both (a cascade has no prior)")
        if self.prior_path or self.superres_path:
            implied = "prior" if self.prior_path else "cascade"
            require(self.pipeline in ("decoder", implied), f"--{implied.replace('cascade', 'superres')}_path belongs to --pipeline {implied}, not {self.pipeline}")
            self.pipeline = implied
        for flag in ("output", "npz", "gif"):
            if getattr(self, flag):
                check_output_file(getattr(self, flag), f"--{flag}")

    @property
    def sampling(self) -> SamplingOptions:
        """The decoder's (for a cascade: the base's) sampling options."""
        return SamplingOptions(self.sampler, self.steps, self.guidance_scale, self.thresholding, self.eta, self.seed, self.spacing,
                               self.guidance_from_t)

    @property
    def needs_image_decoder(self) -> bool:
        return bool(self.pipeline == "prior" or self.image or self.interpolate)

    def prompts(self) -> list[str]:
        prompts = list(self.prompt or [])
        if self.prompts_file:
            try:
                prompts += [line.strip() for line in Path(self.prompts_file).read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(f"cannot read --prompts_file {self.prompts_file}: {type(err).__name__}") from None
            require(len(prompts) > 0, f"--prompts_file {self.prompts_file} holds no prompts")
        return prompts or DEFAULT_PROMPTS


class Generator:
    """The loaded stages, and the embedding each kind of input becomes."""

    def __init__(self, config: GenerateConfig) -> None:
        self.config = config
        device = resolve_device(config.device)
        condition = "image" if config.needs_image_decoder else "text"
        cascade = config.pipeline == "cascade"
        base_resolution = 14 if cascade else 0  # the cascade's base, at unclip_train.py's default --low_res_size
        self.paths = {"CLIP": config.clip_model_path or default_weights("clip"),
                      "decoder": config.decoder_path or default_weights(default_checkpoint_name("decoder", condition, base_resolution))}
        if cascade:
            self.paths["super-resolution"] = config.superres_path or default_weights(default_checkpoint_name("superres", condition))
        if config.pipeline == "prior":
            self.paths["prior"] = config.prior_path or default_weights("prior")
        print("weights: " + ", ".join(f"{stage} {path}" for stage, path in self.paths.items()))
        try:
            self.load(config, condition, device)
        except ClipMismatch as err:
            shipped = [stage for stage, path in self.paths.items() if Path(path).suffix == WEIGHTS_SUFFIX]
            if shipped and "CLIP" not in shipped:  # the user's CLIP, a shipped stage
                raise ClipMismatch(f"{err} (your CLIP is {self.paths['CLIP']}, the {', '.join(shipped)} shipped: train those stages on your CLIP, "
                                f"or give --clip_model_path {PRETRAINED_DIR / 'clip.safetensors'})") from None
            raise
        if config.guidance_scale is None:
            config.guidance_scale = self.decoder.guidance_scale
            named = config.guidance_scale != DEFAULT_GUIDANCE_SCALE
            print(f"guidance {config.guidance_scale:g}: " + ("the one the decoder's file names" if named else "the default") + " (--guidance_scale sets another)")

    def load(self, config: GenerateConfig, condition: str, device: torch.device) -> None:
        paths = {stage: str(path) for stage, path in self.paths.items()}
        self.conditioner = ClipConditioner(load_clip(paths["CLIP"], device))
        clip = self.conditioner.clip
        if config.pipeline == "cascade":
            self.decoder = Cascade.load(paths["decoder"], paths["super-resolution"], device, clip, augmentation_level=config.augmentation_level,
                                        superres_steps=config.superres_steps, superres_guidance_scale=config.superres_guidance_scale)
        else:
            self.decoder = Decoder.load(paths["decoder"], device, clip)
        require(self.decoder.config.condition == condition,
                f"{paths['decoder']} is conditioned on CLIP {self.decoder.config.condition} embeddings, but this mode needs {'an image' if condition == 'image' else 'a text'}-conditioned decoder"
                + (" (with the prior, --image or --interpolate: train one with --condition image)" if condition == "image" else " (or give --pipeline prior)"))
        self.prior = Prior.load(paths["prior"], device, clip) if "prior" in paths else None

    def from_prompts(self, prompts: list[str]) -> Conditioning:
        """Prompts -> decoder conditioning: text embeddings, or image embeddings drawn by the prior."""
        self.conditioner.check_prompts(prompts)
        cond = self.conditioner.text(prompts)
        if self.prior is not None:
            c = self.config
            sampling = replace(PRIOR_SAMPLING, guidance_scale=c.prior_guidance_scale, seed=c.seed)
            return Conditioning(self.prior.sample(cond, sampling, num_candidates=c.num_candidates))
        return cond  # a decoder without cross-attention ignores the token states

    def from_images(self, paths: list[str]) -> torch.Tensor:
        """Image files -> unit-norm CLIP image embeddings [N, D]."""
        clip = self.conditioner.clip.config  # the image encoder's input format, whatever size the decoder draws
        images = torch.stack([load_image(p, clip.image_channels, clip.image_size) for p in paths])
        return self.conditioner.image(images).embedding

    def endpoint(self, item: str) -> torch.Tensor:
        """An interpolation end: an image file, or a prompt (through the prior)."""
        if Path(item).is_file():
            return self.from_images([item])[0]
        require(self.prior is not None, f"{item!r} is not an image file; to interpolate between prompts, give --pipeline prior")
        return self.from_prompts([item]).embedding[0]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, GenerateConfig)
    config = config_from_args(GenerateConfig, parser.parse_args(argv))
    config.validate()
    generator = Generator(config)
    n = config.num_samples
    if config.interpolate:
        a, b = (generator.endpoint(item) for item in config.interpolate)
        cond = Conditioning(slerp(a, b, torch.linspace(0, 1, n)))
        labels, repeated = [f"{config.interpolate[0]} -> {config.interpolate[1]}"], [" -> ".join(config.interpolate)] * n
    elif config.image:
        cond = Conditioning(generator.from_images(config.image).repeat_interleave(n, dim=0))
        labels, repeated = [Path(p).name for p in config.image], [p for p in config.image for _ in range(n)]
    else:
        labels = config.prompts()
        repeated = [p for p in labels for _ in range(n)]
        cond = generator.from_prompts(repeated)

    trajectory: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    keep = min(len(repeated), 64)

    def record(t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if not trajectory or trajectory[-1][0] > t:  # the first chunk only
            trajectory.append((t, x_t[:keep].float().cpu(), x0[:keep].float().cpu()))

    progress = (lambda chunks: tqdm(chunks, desc="generating", unit="chunk")) if len(repeated) > config.chunk_size else None
    images = generator.decoder.generate(cond, config.sampling, config.chunk_size, record if config.gif else None, progress,
                                        shared_noise=bool(config.interpolate))
    title = f"{config.sampler}, {config.steps} steps, guidance {config.guidance_scale:g}, seed {config.seed}"
    if config.pipeline == "cascade":
        low = generator.decoder.superres.config.low_res_size
        title += f"; {low}x{low} base + super-resolution ({config.superres_steps} steps, augmentation {config.augmentation_level:g})"
    print(f"wrote {write_grid(images, labels, n, title, config.output)}")
    if config.npz:
        Path(config.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(config.npz, images=to_uint8(images).numpy(), prompts=np.array(repeated))
        print(f"wrote {config.npz}")
    if config.gif:
        print(f"wrote {save_trajectory_gif(trajectory, config.gif, nrow=min(n, 8))}")


def write_grid(images: torch.Tensor, labels: list[str], per_label: int, title: str, path: str) -> Path:
    """One block of rows per label (up to 16 columns), the label beside its first row; one label alone is a square grid."""
    if len(labels) == 1 and per_label > 16:
        columns = int(np.ceil(np.sqrt(per_label)))
        return save_grid(images, path, nrow=columns, title=f'"{labels[0]}": {title}')
    columns = min(per_label, 16)
    rows_per_label = -(-per_label // columns)
    blocks, row_labels = [], []
    for i, label in enumerate(labels):
        block = images[i * per_label : (i + 1) * per_label]
        fill = rows_per_label * columns - len(block)
        blocks.append(torch.cat([block, -torch.ones(fill, *block.shape[1:])]) if fill else block)
        row_labels += [f'"{label}"'] + [""] * (rows_per_label - 1)  # the prompt, quoted
    return save_grid(torch.cat(blocks), path, nrow=columns, row_labels=row_labels, title=title)


if __name__ == "__main__":
    run_main(main)
