"""Training throughput and generation time of the decoder on this machine.

    python benchmarks/speed.py                       # default decoder config, CPU threads as set by torch
    python benchmarks/speed.py --decoder_path checkpoints/decoder.pt

Training: images/s of full optimizer steps (forward, backward, AdamW, EMA) at
batch sizes 32 (the default) and 64. Generation: seconds to draw 64 images with guidance for
each sampler and step count (the numbers do not depend on the weights).
"""
from __future__ import annotations

import argparse
import time

import common  # noqa: F401
from evaluation.reports import write_result
import torch

from models.pipeline import Decoder, DecoderConfig
from models.samplers import DEFAULT_GUIDANCE_SCALE, SamplingOptions
from models.conditioning import Conditioning
from models.unet import UNetConfig
from utils.training import EMA, count_parameters


def training_images_per_second(config: UNetConfig, batch_size: int, steps: int) -> float:
    decoder = Decoder(DecoderConfig(unet=config))
    model, schedule = decoder.model.train(), decoder.schedule
    ema = EMA(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0 = torch.rand(batch_size, config.image_channels, config.image_size, config.image_size) * 2 - 1
    cond = Conditioning(torch.randn(batch_size, config.condition_dim), drop=torch.rand(batch_size) < 0.15)

    def step() -> None:
        t = schedule.sample_timesteps(batch_size)
        noise = torch.randn_like(x0)
        loss = schedule.loss(model(schedule.q_sample(x0, t, noise), t, cond), x0, noise, t).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[32, 64], help="the decoder trains at 32 by default")
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--decoder_path", default=None, help="time this checkpoint's network (default: the default config)")
    parser.add_argument("--runs", nargs="+", default=["ddpm:100", "ddim:50", "ddim:20", "dpmpp_2m:20", "dpmpp_2m:10"])
    args = parser.parse_args()
    decoder = Decoder.load(args.decoder_path) if args.decoder_path else Decoder(DecoderConfig())
    config = decoder.config.unet
    result: dict = {"parameters": count_parameters(decoder.model), "unet": vars(config).copy(), "train_images_per_second": {}}
    for batch_size in args.batch_sizes:
        speed = round(training_images_per_second(config, batch_size, args.train_steps), 1)
        result["train_images_per_second"][batch_size] = speed
        print(f"UNet {result['parameters']:,} parameters: {speed} training images/s at batch {batch_size}")
    decoder.model.eval()
    cond = Conditioning(torch.nn.functional.normalize(torch.randn(64, config.condition_dim), dim=-1))
    result["generate_64_seconds"] = {}
    for run in args.runs:
        sampler, steps = run.split(":")
        start = time.perf_counter()
        decoder.generate(cond, SamplingOptions(sampler, int(steps)))
        seconds = time.perf_counter() - start
        result["generate_64_seconds"][run] = round(seconds, 2)
        print(f"64 images, {sampler} {steps} steps, guidance {DEFAULT_GUIDANCE_SCALE:g}: {seconds:.1f} s")
    write_result("speed", result)


if __name__ == "__main__":
    main()
