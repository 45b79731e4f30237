"""Prompt in, images out: CLIP text embedding -> diffusion decoder -> pixels.

    python generate_images.py --prompt six --num_samples 64
    python generate_images.py --prompt zero 1 "a handwritten two" --num_samples 8 --npz out.npz --gif out.gif
    python generate_images.py --prompts_file prompts.txt --sampler ddim --steps 50 --guidance_scale 2
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dataloading.datasets import to_uint8
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import SAMPLERS, THRESHOLDING
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, option, require, run_main
from utils.errors import UserError
from utils.plotting import save_grid
from utils.trajectory import save_trajectory_gif
from utils.training import resolve_device

MAX_SAMPLES = 100_000


@dataclass
class GenerateConfig:
    prompt: str | None = option(None, "one or more prompts, one grid row (or block of rows) each", nargs="+")
    prompts_file: str | None = option(None, "a text file with one prompt per line")
    num_samples: int = option(16, "images per prompt")
    clip_model_path: str = option("checkpoints/clip.pt", "the CLIP checkpoint the decoder was trained on")
    decoder_path: str = option("checkpoints/decoder.pt", "the text-conditioned decoder checkpoint")
    sampler: str = option("dpmpp_2m", "sampling algorithm", choices=list(SAMPLERS))
    steps: int = option(25, "sampler steps (DDPM's original: 1000)")
    guidance_scale: float = option(3.0, "classifier-free guidance scale (1: no guidance)")
    thresholding: str = option("static", "x0 thresholding", choices=list(THRESHOLDING))
    eta: float = option(0.0, "DDIM noise (0: deterministic)")
    seed: int = option(0, "random seed: same seed, same images")
    chunk_size: int = option(256, "images generated at once (memory bound)")
    output: str = option("outputs/generated.png", "grid PNG path")
    npz: str | None = option(None, "also save the raw images (uint8 [N, C, H, W], key 'images') and prompts")
    gif: str | None = option(None, "also save the denoising trajectory as an animated GIF")
    device: str = option("auto", "auto, cpu or cuda")

    def validate(self) -> None:
        require(0 < self.num_samples <= MAX_SAMPLES, f"--num_samples must be between 1 and {MAX_SAMPLES}, got {self.num_samples}")
        require(self.steps > 0, f"--steps must be positive, got {self.steps}")
        require(self.guidance_scale >= 0, f"--guidance_scale must be 0 or more, got {self.guidance_scale}")
        require(self.chunk_size > 0, f"--chunk_size must be positive, got {self.chunk_size}")
        require(self.eta >= 0, f"--eta must be 0 or more, got {self.eta}")

    def prompts(self) -> list[str]:
        prompts = list(self.prompt or [])
        if self.prompts_file:
            try:
                prompts += [line.strip() for line in Path(self.prompts_file).read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(f"cannot read --prompts_file {self.prompts_file}: {type(err).__name__}") from None
            require(len(prompts) > 0, f"--prompts_file {self.prompts_file} holds no prompts")
        return prompts or ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, GenerateConfig)
    config = config_from_args(GenerateConfig, parser.parse_args(argv))
    config.validate()
    prompts = config.prompts()
    device = resolve_device(config.device)
    clip = load_clip(config.clip_model_path, device)
    conditioner = ClipConditioner(clip)
    conditioner.check_prompts(prompts)
    decoder = Decoder.load(config.decoder_path, device)
    decoder.check_clip(clip, config.decoder_path)
    require(decoder.config.condition == "text", f"{config.decoder_path} is conditioned on CLIP image embeddings: it needs a prior (--prior_path)")

    repeated = [p for p in prompts for _ in range(config.num_samples)]
    cond = conditioner.text(repeated)
    if not decoder.config.unet.token_dim:
        cond.tokens = cond.token_mask = None
    trajectory: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    keep = min(len(repeated), 64)

    def record(t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if len(trajectory) < 1000 and (not trajectory or trajectory[-1][0] > t):  # first chunk only
            trajectory.append((t, x_t[:keep].float().cpu(), x0[:keep].float().cpu()))

    progress = (lambda chunks: tqdm(chunks, desc="generating", unit="chunk")) if len(repeated) > config.chunk_size else None
    images = decoder.generate(cond, config.sampler, config.steps, config.guidance_scale, config.thresholding, config.eta,
                              config.seed, config.chunk_size, record if config.gif else None, progress)

    columns = min(config.num_samples, 16)
    row_labels = None
    if len(prompts) > 1 or config.num_samples <= 16:
        rows_per_prompt = -(-config.num_samples // columns)
        padded = []
        for i, prompt in enumerate(prompts):
            block = images[i * config.num_samples : (i + 1) * config.num_samples]
            fill = rows_per_prompt * columns - len(block)
            padded.append(torch.cat([block, -torch.ones(fill, *block.shape[1:])]) if fill else block)
        grid_images = torch.cat(padded)
        row_labels = [prompt if r == 0 else "" for prompt in prompts for r in range(rows_per_prompt)]
    else:
        grid_images, columns = images, int(np.ceil(np.sqrt(config.num_samples)))
    title = f"{config.sampler}, {config.steps} steps, guidance {config.guidance_scale:g}, seed {config.seed}"
    if row_labels is None:
        title = f'"{prompts[0]}": {title}'
    print(f"wrote {save_grid(grid_images, config.output, nrow=columns, row_labels=row_labels, title=title)}")
    if config.npz:
        Path(config.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(config.npz, images=to_uint8(images).numpy(), prompts=np.array(repeated))
        print(f"wrote {config.npz}")
    if config.gif:
        print(f"wrote {save_trajectory_gif(trajectory, config.gif, nrow=min(columns, 8))}")


if __name__ == "__main__":
    run_main(main)
