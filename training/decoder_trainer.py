"""Train the diffusion decoder on a frozen CLIP: the loop behind ``unclip_train.py``.

One step (DDPM Algorithm 1, with the Imagen/unCLIP additions):
    x0, caption ~ data;  c = CLIP(caption) or CLIP(x0)     (cached: CLIP is frozen)
    t ~ U{0..T-1};  eps ~ N(0, I);  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    drop c with probability p (classifier-free guidance learns the unconditional model too)
    loss = w(t) || net(x_t, t, c) - target ||^2    (target: eps, x0 or v; w: min-SNR)
then AdamW, gradient clipping and an EMA of the weights, which is what samples.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from dataloading.datasets import CaptionedImages, load_dataset
from models.diffusion import PREDICTIONS, SCHEDULES, ScheduleConfig
from models.pipeline import ClipConditioner, Decoder, DecoderConfig, clip_fingerprint, load_clip
from models.unet import Conditioning, UNetConfig
from training.clip_trainer import subset, write_json
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.cli import option, require
from utils.plotting import save_grid, save_loss_curves
from utils.training import EMA, Throughput, autocast, count_parameters, resolve_device, seed_everything

LOW_NOISE_STEPS = 100  # the loss on t < 100 is tracked on its own: it keeps falling after the total flattens


@dataclass
class DecoderTrainingConfig:
    clip_model_path: str = option("checkpoints/clip.pt", "the trained CLIP checkpoint (frozen)")
    condition: str = option("text", "condition on CLIP text embeddings of the caption, or CLIP image embeddings of the image (unCLIP)", choices=["text", "image"])
    cross_attention: bool = option(False, "also cross-attend to CLIP's per-token text states (text condition only)")
    steps: int = option(1800, "training steps")
    batch_size: int = option(64, "images per step")
    lr: float = option(2e-3, "peak learning rate (linear warm-up, cosine decay)")
    warmup_steps: int = option(100, "learning-rate warm-up steps")
    ema_decay: float = option(0.998, "decay of the exponential moving average used for sampling")
    cond_drop_prob: float = option(0.15, "probability of dropping the conditioning (for classifier-free guidance)")
    schedule: str = option("cosine", "noise schedule", choices=list(SCHEDULES))
    prediction: str = option("v", "what the network predicts", choices=list(PREDICTIONS))
    min_snr_gamma: float = option(5.0, "min-SNR loss weighting gamma (0: off)")
    channels: str = option("32,48,64", "UNet channels per level, comma separated (level 0 runs at half resolution)")
    blocks_per_level: int = option(1, "residual blocks per UNet level")
    dataset: str | None = option(None, "mnist or fashion (default: the CLIP checkpoint's)")
    data_dir: str | None = option(None, "folder with IDX files (default: the CLIP checkpoint's)")
    train_subset: int = option(0, "train on only this many images (0: all), for quick tests")
    sample_every: int = option(600, "write a sample grid every N steps (0: only at the end)")
    save_every: int = option(250, "write the checkpoint every N steps")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto, cpu or cuda")
    compile: bool = option(False, "torch.compile the UNet (worth it on a GPU)")
    save_path: str = option("checkpoints/decoder.pt", "checkpoint path; metrics go beside it as .json")
    output_dir: str = option("outputs/decoder", "folder for sample grids and plots")
    resume: bool = option(False, "continue from the checkpoint at --save_path")

    def validate(self) -> None:
        require(self.steps > 0, f"--steps must be positive, got {self.steps}")
        require(self.batch_size > 0, f"--batch_size must be positive, got {self.batch_size}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(0 <= self.cond_drop_prob < 1, f"--cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        require(0 < self.ema_decay < 1, f"--ema_decay must be in (0, 1), got {self.ema_decay}")
        require(self.save_every > 0 and self.sample_every >= 0, "--save_every must be positive and --sample_every 0 or positive")
        require(self.blocks_per_level > 0, f"--blocks_per_level must be positive, got {self.blocks_per_level}")
        require(not (self.cross_attention and self.condition == "image"), "--cross_attention needs --condition text (images have no tokens)")
        self.channel_tuple()

    def channel_tuple(self) -> tuple[int, ...]:
        try:
            channels = tuple(int(c) for c in self.channels.split(","))
        except ValueError:
            channels = ()
        require(len(channels) >= 1 and all(c > 0 and c % 4 == 0 for c in channels), f"--channels must be positive multiples of 4, e.g. 32,48,64; got {self.channels!r}")
        return channels


def fixed_prompts(captions) -> tuple[list[str], list[str]]:
    """The sample-grid prompts: every class under every name form ("zero" .. "nine", "0" .. "9")."""
    prompts = [names[k] for k in range(len(captions.name_forms)) for names in captions.names]
    return prompts, [f"{captions.name_forms[k]}s" for k in range(len(captions.name_forms))]


class ConditioningCache:
    """CLIP is frozen, so each caption (~160 of them) or image is encoded once, not every step."""

    def __init__(self, conditioner: ClipConditioner, condition: str, captions: list[str], images: torch.Tensor) -> None:
        self.condition = condition
        if condition == "text":
            cond = conditioner.text(captions)
            self.index = {caption: i for i, caption in enumerate(captions)}
            self.embeddings, self.tokens, self.mask = cond.embedding.cpu(), cond.tokens.cpu(), cond.token_mask.cpu()
        else:
            from utils.metrics import encode_images
            self.embeddings = encode_images(conditioner.clip, images)  # [N, D], row i = training image i

    def lookup(self, texts: list[str], image_indices: torch.Tensor, use_tokens: bool) -> Conditioning:
        if self.condition == "image":
            return Conditioning(self.embeddings[image_indices])
        rows = torch.tensor([self.index[t] for t in texts])
        if not use_tokens:
            return Conditioning(self.embeddings[rows])
        return Conditioning(self.embeddings[rows], self.tokens[rows], self.mask[rows])


def endless(dataset: CaptionedImages, batch_size: int, generator: torch.Generator) -> Iterator:
    while True:
        yield from dataset.batches(batch_size, generator)


def learning_rate(step: int, config: DecoderTrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_decoder(config: DecoderTrainingConfig, log: Callable[[str], None] = print) -> tuple[Decoder, dict]:
    config.validate()
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    clip = load_clip(config.clip_model_path, device)
    clip_state = load_checkpoint(config.clip_model_path, "clip")
    dataset_name = config.dataset or clip_state.get("dataset", "mnist")
    data_dir = config.data_dir if config.data_dir is not None else clip_state["training"]["config"].get("data_dir")
    splits = subset(load_dataset(dataset_name, data_dir), config.train_subset, config.seed)
    require(splits.name == clip_state.get("dataset", splits.name), f"the CLIP at {config.clip_model_path} was trained on {clip_state.get('dataset')}, not {splits.name}")
    channels, size, _ = splits.image_shape
    conditioner = ClipConditioner(clip)
    use_tokens = config.cross_attention and config.condition == "text"
    decoder_config = DecoderConfig(
        unet=UNetConfig(image_channels=channels, image_size=size, channels=config.channel_tuple(), blocks_per_level=config.blocks_per_level,
                        condition_dim=clip.config.embed_dim, token_dim=clip.text_encoder.token_dim if use_tokens else 0),
        schedule=ScheduleConfig(config.schedule, 1000, config.prediction, config.min_snr_gamma),
        condition=config.condition, clip=clip_fingerprint(clip), dataset=splits.name,
    )
    decoder = Decoder(decoder_config)
    model = decoder.model.to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    history: dict = {"loss": [], "loss_low_noise": [], "loss_by_bucket": np.zeros((10, 2)).tolist()}
    step, seconds = 0, 0.0

    if config.resume and Path(config.save_path).exists():
        state = load_checkpoint(config.save_path, "decoder", map_location=device)
        require(state["config"] == decoder_config.to_dict(), f"cannot resume {config.save_path}: it was trained with another model, schedule or CLIP")
        model.load_state_dict(state["training"]["model"])
        ema.load_state_dict({"decay": config.ema_decay, "num_updates": state["training"]["ema_updates"], "model": state["ema"]})
        optimizer.load_state_dict(state["training"]["optimizer"])
        generator.set_state(state["training"]["data_rng"])
        torch.set_rng_state(state["training"]["torch_rng"])
        history, step, seconds = state["training"]["history"], state["training"]["step"], state["training"]["seconds"]
        log(f"resumed {config.save_path} at step {step}")
    require(step < config.steps, f"{config.save_path} has already trained {step} steps; raise --steps to train more")

    train_set = CaptionedImages(splits.train_images, splits.train_labels, splits.captions, seed=config.seed + step)
    cache = ConditioningCache(conditioner, config.condition, splits.captions.all_train_captions(), splits.train_images)
    forward = torch.compile(model) if config.compile else model
    prompts, _ = fixed_prompts(splits.captions)
    grid_cond = conditioner.text(prompts) if config.condition == "text" else None
    output_dir = Path(config.output_dir)
    log(f"decoder UNet: {count_parameters(model):,} parameters on {device}; conditioned on CLIP {config.condition} embeddings"
        + (" + token cross-attention" if use_tokens else "") + f"; {len(train_set)} training images")

    def save() -> None:
        training = {"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema_updates": ema.num_updates,
                    "data_rng": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": history, "step": step, "seconds": seconds}
        save_checkpoint(config.save_path, "decoder", {"config": decoder_config.to_dict(), "ema": ema.model.state_dict(), "training": training})

    written: list[Path] = []

    def sample_grid(name: str) -> None:
        if grid_cond is None:
            return  # an image-conditioned decoder needs image embeddings: see the prior stage
        sampler = Decoder(decoder_config, ema.model)
        images = sampler.generate(grid_cond, steps=20, guidance_scale=3.0, seed=0)
        path = save_grid(images, output_dir / name, nrow=len(splits.captions.names), row_labels=None,
                         title=f"EMA samples at step {step}: rows {', '.join(splits.captions.name_forms)} names")
        written.append(path)
        ema.model.train(False)

    throughput = Throughput()
    batches = endless(train_set, config.batch_size, generator)
    bar = tqdm(total=config.steps, initial=step, desc="decoder", unit="step")
    model.train()
    while step < config.steps:
        throughput.start()
        t0 = time.perf_counter()
        x0, texts, _, idx = next(batches)
        cond = cache.lookup(texts, idx, use_tokens)
        cond.drop = torch.rand(len(x0), generator=generator) < config.cond_drop_prob
        t = decoder.schedule.sample_timesteps(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = decoder.schedule.q_sample(x0, t, noise)
        x0, x_t, t, noise, cond = x0.to(device), x_t.to(device), t.to(device), noise.to(device), cond.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        with autocast(device):
            output = forward(x_t, t, cond)
        per_sample = decoder.schedule.loss(output, x0, noise, t)  # [B]
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)
        step += 1
        throughput.stop(len(x0))
        seconds += time.perf_counter() - t0
        record_loss(history, step, per_sample.detach().cpu(), t.cpu())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.save_every == 0 or step == config.steps:
            save()
        if config.sample_every and step % config.sample_every == 0 and step < config.steps:
            sample_grid(f"samples_step{step:06d}.png")
    bar.close()
    sample_grid("samples_final.png")
    metrics = {
        "steps": step, "train_seconds": round(seconds, 1), "train_images_per_second": round(throughput.images_per_second, 1),
        "parameters": count_parameters(model), "condition": config.condition, "cross_attention": use_tokens,
        "final_loss": float(np.mean([v for _, v in history["loss"][-100:]])),
        "final_loss_low_noise": float(np.mean([v for _, v in history["loss_low_noise"][-100:]])) if history["loss_low_noise"] else None,
        "loss_by_timestep_bucket": [s / max(n, 1) for s, n in history["loss_by_bucket"]], "device": str(device), "config": asdict(config),
    }
    written = [Path(config.save_path), write_json(Path(config.save_path).with_suffix(".json"), metrics),
               save_loss_curves({"all t": history["loss"], f"t < {LOW_NOISE_STEPS}": history["loss_low_noise"]}, output_dir / "decoder_loss.png",
                                "decoder training loss (min-SNR weighted)")] + written
    for path in written:
        log(f"wrote {path}")
    return Decoder(decoder_config, ema.model.eval()), metrics


def record_loss(history: dict, step: int, per_sample: torch.Tensor, t: torch.Tensor) -> None:
    """Loss per step, on low-noise steps, and summed per tenth of the timestep range."""
    history["loss"].append((step, per_sample.mean().item()))
    low = t < LOW_NOISE_STEPS
    if low.any():
        history["loss_low_noise"].append((step, per_sample[low].mean().item()))
    buckets = (t * 10 // 1000).tolist()
    for b, value in zip(buckets, per_sample.tolist()):
        history["loss_by_bucket"][b][0] += value
        history["loss_by_bucket"][b][1] += 1
