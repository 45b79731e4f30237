"""Train the unCLIP diffusion stages on a frozen CLIP: the loop behind ``unclip_train.py``.

Every stage is a diffusion model and they share one training loop (``train_unclip``);
a stage only says what x0 and the conditioning c are, and how to preview it:

    decoder   x0 = image (or its 14x14 version,    c = CLIP text embedding of the caption
              the base of a cascade)                   (+ token states), or CLIP image embedding
    superres  x0 = 28x28 image;                    c = as the decoder's + the augmented 14x14 image
    prior     x0 = sqrt(D) * CLIP image embedding; c = CLIP text embedding (+ token states)

One step (DDPM Algorithm 1, with the Imagen/unCLIP additions):
    t ~ U{0..T-1};  eps ~ N(0, I);  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    drop c with probability p (classifier-free guidance learns the unconditional model too)
    loss = w(t) || net(x_t, t, c) - target ||^2    (target: eps, x0 or v; w: min-SNR)
then AdamW, gradient clipping and an EMA of the weights, which is what samples.
CLIP is frozen, so captions and images are encoded once (``ConditioningCache``).
"""
from __future__ import annotations

import math
import time
from functools import cached_property
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

from dataloading.augment import random_affine
from dataloading.datasets import CaptionedImages, ImageSplits, load_dataset, to_signed_float
from models.diffusion import PREDICTIONS, SCHEDULES, ScheduleConfig
from models.pipeline import (ClipConditioner, Decoder, DecoderConfig, Prior, SuperResolution, clip_fingerprint, default_checkpoint_name,
                             load_clip)
from models.prior import PriorBundleConfig, PriorConfig, embedding_scale
from models.samplers import DEFAULT_GUIDANCE_SCALE
from models.superres import downsample, low_res_condition, upsample
from models.unet import Conditioning, UNetConfig
from training.clip_trainer import subset, write_json
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.cli import option, require
from utils.metrics import encode_images, prior_quality
from utils.plotting import save_grid, save_loss_curves, save_prior_quality_plot
from utils.training import EMA, Throughput, autocast, count_parameters, resolve_device, seed_everything

LOW_NOISE_STEPS = 100  # the loss on t < 100 is tracked on its own: it keeps falling after the total flattens


STAGES = ("decoder", "prior", "superres")
STAGE_DEFAULTS = {  # tuned for a 2-core CPU: each default stage trains in minutes
    # The decoder's loss is unweighted: min-SNR-5 (as the prior uses) scaled the low-noise steps down ~100x and its
    # samples kept grain that the last sampler steps did not remove (paired 11-minute runs in BENCHMARKS.md).
    "decoder": {"steps": 4000, "max_minutes": 11.0, "batch_size": 32, "lr": 2e-3, "prediction": "v", "min_snr_gamma": 0.0, "channels": "32,48,64"},
    # The prior predicts v with min-SNR weighting: DALL-E 2's x0 target made its samples crowd near each class
    # mean here (pairwise cosine 0.974 unguided against 0.911 for real images; v: 0.928; BENCHMARKS.md).
    "prior": {"steps": 5000, "max_minutes": 4.0, "batch_size": 256, "lr": 1e-3, "prediction": "v", "min_snr_gamma": 5.0, "channels": "32,48,64"},
    "superres": {"steps": 4000, "max_minutes": 6.0, "batch_size": 32, "lr": 2e-3, "prediction": "v", "min_snr_gamma": 5.0, "channels": "32,48"},
}


@dataclass
class UnclipTrainingConfig:
    clip_model_path: str = option("checkpoints/clip.pt", "the trained CLIP checkpoint (frozen)")
    stage: str = option("decoder", "decoder: CLIP embedding -> image; prior: CLIP text -> CLIP image embedding (DALL-E 2); "
                                   "superres: CLIP embedding + 14x14 image -> 28x28 image (Imagen's cascade)", choices=list(STAGES))
    condition: str = option("text", "decoder, superres: condition on CLIP text embeddings of the caption, or CLIP image embeddings of the image (unCLIP)", choices=["text", "image"])
    embedding_noise: float = option(0.0, "decoder --condition image: add Gaussian noise of this norm to each training image embedding "
                                          "(then renormalise), so the decoder also learns the space between its 4,500 training embeddings")
    embedding_augmentation: bool = option(False, "decoder --condition image: condition on the CLIP embedding of a randomly rotated, scaled and "
                                                 "shifted copy of the training image (CLIP's own augmentation), so held-out images' embeddings "
                                                 "look like training ones")
    cross_attention: bool = option(False, "decoder, superres: also cross-attend to CLIP's per-token text states (text condition only)")
    resolution: int = option(0, "decoder: train at this image size, e.g. 14 for the base of a cascade (0: the data's own size)")
    low_res_size: int = option(14, "superres: the size of the low-resolution images it upscales")
    max_augmentation_level: float = option(0.5, "superres: the low-res condition is noised to a level drawn uniformly from [0, this] "
                                                "(Imagen's Gaussian conditioning augmentation; 0: off)")
    steps: int | None = option(None, "training steps at most (default per stage: decoder 4000, prior 5000, superres 4000)")
    max_minutes: float | None = option(None, "training minutes at most, 0: no limit; the learning-rate schedule follows whichever "
                                             "limit comes first (default per stage: decoder 11, prior 4, superres 6)")
    batch_size: int | None = option(None, "samples per step (default per stage: decoder 32, prior 256)")
    lr: float | None = option(None, "peak learning rate, linear warm-up then cosine decay (default: decoder 2e-3, prior 1e-3)")
    warmup_steps: int = option(100, "learning-rate warm-up steps")
    ema_decay: float = option(0.998, "decay of the exponential moving average used for sampling")
    cond_drop_prob: float = option(0.15, "probability of dropping the conditioning (for classifier-free guidance)")
    schedule: str = option("cosine", "noise schedule", choices=list(SCHEDULES))
    prediction: str | None = option(None, "what the network predicts (default: v)", choices=list(PREDICTIONS))
    min_snr_gamma: float | None = option(None, "min-SNR loss weighting gamma, 0: off (default: decoder 0, prior and superres 5)")
    channels: str | None = option(None, "UNet channels per level, comma separated; level 0 runs at half resolution (default: decoder 32,48,64, superres 32,48)")
    blocks_per_level: int = option(1, "decoder residual blocks per UNet level")
    full_res_channels: int = option(0, "decoder, superres: channels of a small residual refinement at full resolution after the UNet (0: none)")
    prior_width: int = option(128, "prior Transformer width")
    prior_depth: int = option(4, "prior Transformer layers")
    prior_tokens: bool = option(False, "prior: also attend to the text token states, as DALL-E 2 does (several times slower on a CPU)")
    dataset: str | None = option(None, "mnist or fashion (default: the CLIP checkpoint's)")
    data_dir: str | None = option(None, "folder with IDX files (default: the CLIP checkpoint's)")
    train_subset: int = option(0, "train on only this many images (0: all), for quick tests")
    sample_every: int = option(1000, "write a sample grid every N steps (0: only at the end)")
    save_every: int = option(250, "write the checkpoint every N steps")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto, cpu or cuda")
    compile: bool = option(False, "torch.compile the network (worth it on a GPU)")
    save_path: str | None = option(None, "checkpoint path, metrics beside it as .json (default: checkpoints/ + decoder, decoder_image, "
                                         "decoder_14px, prior, superres ... .pt)")
    output_dir: str | None = option(None, "folder for sample grids and plots (default: outputs/<stage>)")
    resume: bool = option(False, "continue from the checkpoint at --save_path")

    def resolved(self) -> "UnclipTrainingConfig":
        """A copy with every per-stage default filled in, after checking the values."""
        require(self.stage in STAGES, f"unknown stage {self.stage!r}; choose from {', '.join(STAGES)}")
        filled = replace(self, **{k: v for k, v in STAGE_DEFAULTS[self.stage].items() if getattr(self, k) is None})
        if filled.save_path is None:
            filled.save_path = f"checkpoints/{default_checkpoint_name(self.stage, self.condition, self.resolution)}.pt"
        if filled.output_dir is None:
            filled.output_dir = f"outputs/{Path(filled.save_path).stem}"
        filled.validate()
        return filled

    def validate(self) -> None:
        require(self.steps > 0, f"--steps must be positive, got {self.steps}")
        require(self.max_minutes >= 0, f"--max_minutes must be 0 (no limit) or positive, got {self.max_minutes}")
        require(self.batch_size > 0, f"--batch_size must be positive, got {self.batch_size}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(0 <= self.cond_drop_prob < 1, f"--cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        require(0 < self.ema_decay < 1, f"--ema_decay must be in (0, 1), got {self.ema_decay}")
        require(self.save_every > 0 and self.sample_every >= 0, "--save_every must be positive and --sample_every 0 or positive")
        require(self.blocks_per_level > 0, f"--blocks_per_level must be positive, got {self.blocks_per_level}")
        require(self.full_res_channels >= 0, f"--full_res_channels must be 0 or positive, got {self.full_res_channels}")
        require(self.prior_width > 0 and self.prior_width % 4 == 0 and self.prior_depth > 0, "--prior_width must be a positive multiple of 4 and --prior_depth positive")
        require(not (self.cross_attention and self.condition == "image"), "--cross_attention needs --condition text (images have no tokens)")
        require(self.resolution >= 0 and self.low_res_size > 0, "--resolution must be 0 or positive and --low_res_size positive")
        require(self.embedding_noise >= 0, f"--embedding_noise must be 0 or positive, got {self.embedding_noise}")
        require(not (self.embedding_noise and self.condition != "image"), "--embedding_noise needs --condition image (it noises CLIP image embeddings)")
        require(not (self.embedding_augmentation and self.condition != "image"), "--embedding_augmentation needs --condition image")
        require(0 <= self.max_augmentation_level <= 1, f"--max_augmentation_level must be in [0, 1], got {self.max_augmentation_level}")
        self.channel_tuple()

    def channel_tuple(self) -> tuple[int, ...]:
        try:
            channels = tuple(int(c) for c in self.channels.split(","))
        except ValueError:
            channels = ()
        require(len(channels) >= 1 and all(c > 0 and c % 4 == 0 for c in channels), f"--channels must be positive multiples of 4, e.g. 32,48,64; got {self.channels!r}")
        return channels


def fixed_prompts(captions) -> list[str]:
    """The sample-grid prompts: every class under every name form ("zero" .. "nine", "0" .. "9")."""
    return [names[k] for k in range(len(captions.name_forms)) for names in captions.names]


class ConditioningCache:
    """CLIP is frozen, so each training caption (~160) and image is encoded once, not every step."""

    def __init__(self, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        captions = splits.captions.all_train_captions()
        cond = conditioner.text(captions)
        self.index = {caption: i for i, caption in enumerate(captions)}
        self.text_embeddings, self.tokens, self.mask = cond.embedding.cpu(), cond.tokens.cpu(), cond.token_mask.cpu()
        self.clip, self.train_images = conditioner.clip, splits.train_images

    @cached_property
    def image_embeddings(self) -> torch.Tensor:
        """[N, D], row i = training image i; encoded on first use (a text-conditioned decoder never asks)."""
        return encode_images(self.clip, self.train_images)

    def text(self, texts: list[str], use_tokens: bool) -> Conditioning:
        rows = torch.tensor([self.index[t] for t in texts])
        if not use_tokens:
            return Conditioning(self.text_embeddings[rows])
        return Conditioning(self.text_embeddings[rows], self.tokens[rows], self.mask[rows])


def endless(dataset: CaptionedImages, batch_size: int, generator: torch.Generator) -> Iterator:
    while True:
        yield from dataset.batches(batch_size, generator)


def training_progress(step: int, seconds: float, config: UnclipTrainingConfig) -> float:
    """How far training is, in [0, 1]: by steps, or by the time budget if that runs out first."""
    by_steps = step / config.steps
    by_time = seconds / (60 * config.max_minutes) if config.max_minutes else 0.0
    return min(1.0, max(by_steps, by_time))


def learning_rate(step: int, progress: float, config: UnclipTrainingConfig) -> float:
    """Linear warm-up over the first steps, then cosine decay to 5 % of the peak as progress goes 0 -> 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class DecoderStage:
    """CLIP embedding (text or image) -> image: the UNet on (x0 = image, c = CLIP embedding).

    With ``--resolution 14`` it learns the 14x14 images (the cascade's base); as the
    ``superres`` stage it learns 28x28 images given the augmented 14x14 version too.
    """

    def __init__(self, config: UnclipTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        clip = conditioner.clip
        channels, native, _ = splits.image_shape
        self.kind = config.stage
        self.superres = config.stage == "superres"
        self.size = native if self.superres else (config.resolution or native)
        self.low_res_size = config.low_res_size if self.superres else 0
        require(self.low_res_size < native, f"--low_res_size must be smaller than the images ({native}x{native}), got {config.low_res_size}")
        self.max_augmentation_level = config.max_augmentation_level
        self.embedding_noise, self.embedding_augmentation = config.embedding_noise, config.embedding_augmentation
        self.use_tokens = config.cross_attention and config.condition == "text"
        self.config = DecoderConfig(
            unet=UNetConfig(image_channels=channels, image_size=self.size, channels=config.channel_tuple(), blocks_per_level=config.blocks_per_level,
                            full_res_channels=config.full_res_channels,
                            condition_dim=clip.config.embed_dim, token_dim=clip.text_encoder.token_dim if self.use_tokens else 0,
                            low_res_channels=channels if self.superres else 0, noise_level_conditioning=self.superres),
            schedule=ScheduleConfig(config.schedule, 1000, config.prediction, config.min_snr_gamma),
            condition=config.condition, clip=clip_fingerprint(clip), dataset=splits.name, low_res_size=self.low_res_size,
        )
        self.decoder = (SuperResolution if self.superres else Decoder)(self.config)
        self.model, self.schedule = self.decoder.model, self.decoder.schedule
        self.condition = config.condition
        self.cache = ConditioningCache(conditioner, splits)
        self.splits, self.conditioner = splits, conditioner
        what = f"super-resolution UNet {self.low_res_size}x{self.low_res_size} -> {native}x{native}" if self.superres else f"decoder UNet at {self.size}x{self.size}"
        self.description = (f"{what}: {count_parameters(self.model):,} parameters, conditioned on CLIP {config.condition} embeddings"
                            + (" + token cross-attention" if self.use_tokens else ""))

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        if self.embedding_augmentation:  # the target stays the original image: nearby views must decode to it
            cond = self.conditioner.image(random_affine(images, generator)).to("cpu")
        elif self.condition == "image":
            cond = Conditioning(self.cache.image_embeddings[indices])
        else:
            cond = self.cache.text(texts, self.use_tokens)
        if self.embedding_noise:  # e' = normalize(e + s * z / sqrt(D)): a random direction of norm ~s around each embedding
            noise = torch.randn(cond.embedding.shape, generator=generator) * self.embedding_noise / math.sqrt(cond.embedding.shape[-1])
            cond.embedding = torch.nn.functional.normalize(cond.embedding + noise, dim=-1)
        if self.superres:  # Imagen: the low-res condition noised to a random level, which the UNet is told
            level = torch.rand(len(images), generator=generator) * self.max_augmentation_level
            cond.low_res = low_res_condition(downsample(images, self.low_res_size), level, self.size, self.schedule, generator)
            cond.noise_level = level
        return downsample(images, self.size), cond

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        """Text: every class under every name form. Image: held-out images and their decoded CLIP embeddings.

        Super-resolution: held-out images, their bicubic upsampling from low resolution, and the model's.
        """
        decoder = type(self.decoder)(self.config, ema_model)
        captions = self.splits.captions
        first_of_class = [int((self.splits.test_labels == c).nonzero()[0]) for c in range(captions.num_classes)]
        real = to_signed_float(self.splits.test_images[first_of_class])  # [10, C, H, W]
        cond = self.conditioner.image(real) if self.condition == "image" else self.conditioner.text([names[0] for names in captions.names])
        if self.superres:
            low = downsample(real, self.low_res_size)
            upscaled = decoder.upscale(low, cond, augmentation_level=0.1, steps=20, guidance_scale=1.0, seed=0)
            images = torch.cat([real, upsample(low, self.size), upscaled])
            title = f"step {step}: held-out images (top), bicubic from {self.low_res_size}x{self.low_res_size} (middle), super-resolution (bottom)"
        elif self.condition == "text":
            prompts = fixed_prompts(captions)
            images = decoder.generate(self.conditioner.text(prompts), steps=20, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=0)
            title = f"EMA samples at step {step}: rows {', '.join(captions.name_forms)} names"
        else:
            decoded = decoder.generate(cond, steps=20, guidance_scale=DEFAULT_GUIDANCE_SCALE, seed=0)
            images, title = torch.cat([downsample(real, self.size), decoded]), f"step {step}: held-out images (top) decoded from their CLIP image embeddings"
        ema_model.eval()
        return save_grid(images, path, nrow=captions.num_classes, title=title)

    def summary(self) -> dict:
        return {"condition": self.condition, "cross_attention": self.use_tokens, "image_size": self.size, "low_res_size": self.low_res_size}


class PriorStage:
    """CLIP text -> CLIP image embedding: the prior on (x0 = sqrt(D) * image embedding, c = text embedding (+ tokens))."""

    kind = "prior"

    def __init__(self, config: UnclipTrainingConfig, conditioner: ClipConditioner, splits: ImageSplits) -> None:
        clip = conditioner.clip
        self.config = PriorBundleConfig(
            prior=PriorConfig(embed_dim=clip.config.embed_dim, token_dim=clip.text_encoder.token_dim if config.prior_tokens else 0, width=config.prior_width,
                              depth=config.prior_depth, heads=max(1, config.prior_width // 32), max_tokens=clip.tokenizer.max_length),
            schedule=ScheduleConfig(config.schedule, 1000, config.prediction, config.min_snr_gamma), clip=clip_fingerprint(clip), dataset=splits.name,
        )
        self.use_tokens = config.prior_tokens
        self.prior = Prior(self.config)
        self.model, self.schedule = self.prior.model, self.prior.schedule
        self.cache = ConditioningCache(conditioner, splits)
        self.scale = embedding_scale(clip.config.embed_dim)
        self.splits, self.conditioner = splits, conditioner
        self.description = (f"diffusion prior: {count_parameters(self.model):,} parameters, text embedding{' + tokens' if self.use_tokens else ''}"
                            " -> CLIP image embedding")
        self.quality: dict = {}

    def batch(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        return self.cache.image_embeddings[indices] * self.scale, self.cache.text(texts, use_tokens=self.use_tokens)

    def preview(self, ema_model: torch.nn.Module, step: int, path: Path) -> Path:
        self.quality = prior_quality(Prior(self.config, ema_model), self.conditioner, self.splits, per_class=20)
        ema_model.eval()
        return save_prior_quality_plot(self.quality, path, step)

    def summary(self) -> dict:
        return {"prior_quality": self.quality}


def train_unclip(config: UnclipTrainingConfig, log: Callable[[str], None] = print) -> tuple[object, dict]:
    """Train one stage (decoder or prior) on a frozen CLIP; returns the stage and its metrics.

    One step (DDPM Algorithm 1, with the unCLIP additions): x0, c ~ data; drop c with
    probability p; t ~ U{0..T-1}; x_t = q_sample(x0, t, eps); minimise w(t) ||net(x_t, t, c) - target||^2.
    """
    config = config.resolved()
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    clip_state = load_checkpoint(config.clip_model_path, "clip")
    clip = load_clip(config.clip_model_path, device, clip_state)
    dataset_name = config.dataset or clip_state.get("dataset", "mnist")
    data_dir = config.data_dir if config.data_dir is not None else clip_state["training"]["config"].get("data_dir")
    splits = subset(load_dataset(dataset_name, data_dir), config.train_subset, config.seed)
    require(splits.name == clip_state.get("dataset", splits.name), f"the CLIP at {config.clip_model_path} was trained on {clip_state.get('dataset')}, not {splits.name}")
    conditioner = ClipConditioner(clip)
    stage = (PriorStage if config.stage == "prior" else DecoderStage)(config, conditioner, splits)
    model = stage.model.to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    history: dict = {"loss": [], "loss_low_noise": [], "loss_by_bucket": np.zeros((10, 2)).tolist()}
    step, seconds = 0, 0.0

    if config.resume and not Path(config.save_path).exists():
        log(f"--resume: no checkpoint at {config.save_path} yet, so training starts from scratch")
    if config.resume and Path(config.save_path).exists():
        state = load_checkpoint(config.save_path, stage.kind, map_location=device)
        require(state["config"] == stage.config.to_dict(), f"cannot resume {config.save_path}: it was trained with another model, schedule or CLIP")
        model.load_state_dict(state["training"]["model"])
        ema.load_state_dict({"decay": config.ema_decay, "num_updates": state["training"]["ema_updates"], "model": state["ema"]})
        optimizer.load_state_dict(state["training"]["optimizer"])
        generator.set_state(state["training"]["data_rng"])
        torch.set_rng_state(state["training"]["torch_rng"])
        history, step, seconds = state["training"]["history"], state["training"]["step"], state["training"]["seconds"]
        log(f"resumed {config.save_path} at step {step}")
    require(training_progress(step, seconds, config) < 1, f"{config.save_path} has already trained {step} steps in {seconds / 60:.1f} min; raise --steps or --max_minutes to train more")

    # Captions are re-drawn with a seed that depends on the step, so a resumed run stays deterministic.
    train_set = CaptionedImages(splits.train_images, splits.train_labels, splits.captions, seed=config.seed + step)
    forward = torch.compile(model) if config.compile else model
    output_dir = Path(config.output_dir)
    log(f"{stage.description}; on {device}; {len(train_set)} training images")

    def save() -> None:
        training = {"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema_updates": ema.num_updates,
                    "data_rng": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": history, "step": step, "seconds": seconds}
        save_checkpoint(config.save_path, stage.kind, {"config": stage.config.to_dict(), "ema": ema.model.state_dict(), "training": training})

    written: list[Path] = []
    throughput = Throughput()
    batches = endless(train_set, config.batch_size, generator)
    bar = tqdm(total=config.steps, initial=step, desc=stage.kind, unit="step")
    model.train()
    while training_progress(step, seconds, config) < 1:
        throughput.start()
        t0 = time.perf_counter()
        images, texts, _, indices = next(batches)
        x0, cond = stage.batch(images, texts, indices, generator)
        cond.drop = torch.rand(len(x0), generator=generator) < config.cond_drop_prob
        t = stage.schedule.sample_timesteps(len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = stage.schedule.q_sample(x0, t, noise)
        x0, x_t, t, noise, cond = x0.to(device), x_t.to(device), t.to(device), noise.to(device), cond.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, training_progress(step, seconds, config), config)
        with autocast(device):
            output = forward(x_t, t, cond)
        per_sample = stage.schedule.loss(output, x0, noise, t)  # [B]
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
        finished = training_progress(step, seconds, config) >= 1
        if step % config.save_every == 0 or finished:
            save()
        if config.sample_every and step % config.sample_every == 0 and not finished:
            written.append(stage.preview(ema.model, step, output_dir / f"samples_step{step:06d}.png"))
    bar.close()
    if step < config.steps:
        log(f"stopped at step {step} of {config.steps}: the {config.max_minutes:g}-minute budget (--max_minutes) is spent")
    written.append(stage.preview(ema.model, step, output_dir / "samples_final.png"))
    metrics = {
        "stage": stage.kind, **stage.summary(), "steps": step, "train_seconds": round(seconds, 1),
        "train_samples_per_second": round(throughput.images_per_second, 1), "parameters": count_parameters(model),
        "final_loss": float(np.mean([v for _, v in history["loss"][-100:]])),
        "final_loss_low_noise": float(np.mean([v for _, v in history["loss_low_noise"][-100:]])) if history["loss_low_noise"] else None,
        "loss_by_timestep_bucket": [s / max(n, 1) for s, n in history["loss_by_bucket"]], "device": str(device), "config": asdict(config),
    }
    written = [Path(config.save_path), write_json(Path(config.save_path).with_suffix(".json"), metrics),
               save_loss_curves({"all t": history["loss"], f"t < {LOW_NOISE_STEPS}": history["loss_low_noise"]}, output_dir / f"{stage.kind}_loss.png",
                                f"{stage.kind} training loss" + (" (min-SNR weighted)" if config.min_snr_gamma else ""))] + written
    for path in written:
        log(f"wrote {path}")
    ema.model.eval()
    return stage, metrics


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
