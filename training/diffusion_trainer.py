"""Train one unCLIP diffusion stage on a frozen CLIP: the loop behind ``unclip_train.py``.

One step (DDPM Algorithm 1, with the Imagen/unCLIP additions):
    x0, c ~ the stage's batch;  t ~ U{0..T-1};  eps ~ N(0, I)
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps                                 (DDPM eq. 4)
    drop c with probability p (classifier-free guidance learns the unconditional model too)
    loss = w(t) || net(x_t, t, c) - target ||^2    (target: eps, x0 or v; w: min-SNR)
then AdamW, gradient clipping and an EMA of the weights, which is what samples.

A run is set up, perhaps resumed from its checkpoint, stepped until its step
count or time budget is spent, and finished (``DiffusionRun``). What differs
between the decoder, super-resolution and the prior is in ``training.stages``.
Under torchrun each process trains on its slice of every batch (utils.distributed).

On a GPU the step avoids waiting on the host: timesteps and noise are drawn on
the device, losses are copied back every ``LOG_EVERY`` steps rather than every
step, the optimizer is fused and the EMA a few multi-tensor kernels.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.profiler import record_function
from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

from dataloading.datasets import BatchStream, load_dataset
from models.pipeline import ClipConditioner, load_clip
from training.stages import Stage, build_stage
from training.unclip_configs import DiffusionTrainingConfig
from utils.checkpoints import checkpoint_to_resume, extra_ema_path, load_checkpoint, save_checkpoint
from training.loss_history import LOW_NOISE_STEPS, new_loss_history, record_loss
from utils.errors import UserError, require
from utils.files import write_json
from utils.plotting import save_loss_curves
from utils import distributed
from utils.training import EMA, Throughput, adamw, autocast, configure_backends, count_parameters, gradient_scaler, resolve_device, seed_everything

LOG_EVERY = 25  # steps between copies of the losses to the host (each copy waits for the GPU)


def training_progress(step: int, seconds: float, config: DiffusionTrainingConfig) -> float:
    """How far training is, in [0, 1]: by steps, or by the time budget if that runs out first."""
    by_steps = step / config.steps
    by_time = seconds / (60 * config.max_minutes) if config.max_minutes else 0.0
    return min(1.0, max(by_steps, by_time))


def learning_rate(step: int, progress: float, config: DiffusionTrainingConfig) -> float:
    """Linear warm-up over the first steps, then cosine decay to 5 % of the peak as progress goes 0 -> 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class DiffusionRun:
    """One training run of one stage: its model, EMA, optimizer, data order and history."""

    def __init__(self, config: DiffusionTrainingConfig, log: Callable[[str], None] = print) -> None:
        config.validate()
        self.config = config
        self.dist, self.device = distributed.start(resolve_device(config.device))
        self.dist.check_batch(config.batch_size)
        configure_backends(self.device)
        self.log = log if self.dist.is_main else (lambda message: None)
        self.generator = seed_everything(config.seed)  # data order, captions, augmentation (CPU)
        # timesteps, condition dropping and noise: drawn where the model runs (the same stream as the data's on the CPU)
        self.noise_generator = self.generator if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(config.seed)
        clip_state = load_checkpoint(config.clip_model_path, "clip")
        clip = load_clip(config.clip_model_path, self.device, clip_state)
        dataset_name = config.dataset or clip_state.get("dataset", "mnist")
        data_dir = config.data_dir if config.data_dir is not None else clip_state.get("training", {}).get("config", {}).get("data_dir")  # shipped weights carry no training state
        self.splits = load_dataset(dataset_name, data_dir).subset(config.train_subset, config.seed)
        require(self.splits.name == clip_state.get("dataset", self.splits.name),
                f"the CLIP at {config.clip_model_path} was trained on {clip_state.get('dataset')}, not {self.splits.name}")
        self.stage: Stage = build_stage(config, ClipConditioner(clip), self.splits)
        self.model = self.stage.bundle.model.to(self.device)
        self.channels_last = self.device.type == "cuda" and self.stage.kind != "prior"  # the prior's inputs are vectors
        if self.channels_last:  # the layout cuDNN's convolutions run fastest in on tensor cores
            self.model.to(memory_format=torch.channels_last)
        self.dist.broadcast_parameters(self.model)
        self.schedule = self.stage.bundle.schedule
        self.ema = EMA(self.model, config.ema_decay)
        self.extra_emas = {f"{decay:g}": EMA(self.model, decay) for decay in config.extra_ema_decays or []}  # by name; scored after the run
        self.optimizer = adamw(self.model.parameters(), self.device, lr=config.lr, betas=(0.9, config.adam_beta2), weight_decay=0.0)
        self.scaler = gradient_scaler(self.device)
        self.compile = config.compile if config.compile is not None else self.device.type == "cuda"
        self.pending_losses: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, per-sample loss [b], t [b]) not yet in history
        self.train_set = self.splits.training_set(config.captions, config.seed)
        self.batches = BatchStream(self.train_set, config.batch_size, self.generator)
        self.history: dict = new_loss_history()
        self.step, self.seconds = 0, 0.0
        self.throughput = Throughput()
        self.written: list[Path] = []

    def resume(self) -> None:
        """Continue from the checkpoint at ``save_path``: weights, EMA, optimizer, random streams, history and clock."""
        path = self.config.save_path
        state = checkpoint_to_resume(path, self.stage.kind, self.log)
        if state is None:
            return
        self.require_same_model(state, f"cannot resume {path}")
        training = state["training"]
        self.model.load_state_dict(training["model"])
        self.ema.load_state_dict({"decay": self.config.ema_decay, "num_updates": training["ema_updates"], "model": state["ema"]})
        saved_extra = training.get("extra_emas", {})
        require(set(saved_extra) == set(self.extra_emas), f"cannot resume {path}: it kept EMAs with decays "
                f"{sorted(saved_extra) or 'none'} besides --ema_decay; pass the same --extra_ema_decays")
        for name, ema in self.extra_emas.items():
            ema.load_state_dict({"decay": ema.decay, "num_updates": training["ema_updates"], "model": saved_extra[name]})
        self.optimizer.load_state_dict(training["optimizer"])
        self.generator.set_state(training["data_rng"])
        torch.set_rng_state(training["torch_rng"])
        if self.noise_generator is not self.generator and "noise_rng" in training:
            self.noise_generator.set_state(training["noise_rng"])
        self.history, self.step, self.seconds = training["history"], training["step"], training["seconds"]
        if "batches" in training:  # the epoch's order, the position in it and the caption generator
            self.batches.load_state_dict(training["batches"])
        else:  # a checkpoint from before 2026-12 kept none of these: a new epoch, captions seeded by the step
            self.train_set.rng.seed(self.config.seed + self.step)
        self.log(f"resumed {path} at step {self.step}")

    def require_same_model(self, state: dict, refusal: str, other_dropout: bool = False) -> None:
        """Refuse (``refusal``: why not) weights saved for another model config, schedule, CLIP or caption style.
        ``other_dropout``: the weights may have been trained with another dropout rate (it regularizes, it shapes no weight)."""
        try:  # read as a load would: fields added since take their old meaning
            saved = type(self.stage.bundle.config).from_dict(state["config"]).to_dict()
        except (KeyError, TypeError) as err:
            raise UserError(f"{refusal}: its model config is damaged ({type(err).__name__})") from None
        mine = self.stage.bundle.config.to_dict()
        if other_dropout and "dropout" in mine.get("unet", {}):
            saved["unet"]["dropout"] = mine["unet"]["dropout"]
        require(saved == mine, f"{refusal}: it was trained with another model, schedule or CLIP")
        saved_config = state.get("training", {}).get("config")  # shipped weights carry no training state
        if saved_config is not None:
            saved_captions = saved_config.get("captions", "class")
            require(saved_captions == self.config.captions, f"{refusal}: it was trained on --captions {saved_captions}, not {self.config.captions}")

    def initialize_from(self, path: str | Path) -> None:
        """Start from another run's EMA weights (``--init_from``): the network and every EMA take them; the optimizer,
        learning-rate schedule, step count and history start afresh, so the run is a warm restart (SGDR, Loshchilov &
        Hutter 2017) or a fine-tune of those weights, with or without the dropout they were trained with (``--dropout``)."""
        state = load_checkpoint(path, self.stage.kind)
        self.require_same_model(state, f"cannot start from {path}", other_dropout=True)
        self.model.load_state_dict(state["ema"])
        for ema in (self.ema, *self.extra_emas.values()):
            ema.model.load_state_dict(state["ema"])
        self.log(f"starting from the weights of {path} (fresh optimizer and schedule)")

    @property
    def progress(self) -> float:
        return training_progress(self.step, self.seconds, self.config)

    def save(self) -> None:
        training = {"config": self.config.to_dict(), "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "ema_updates": self.ema.num_updates, "data_rng": self.generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "noise_rng": self.noise_generator.get_state(), "batches": self.batches.state_dict(),
                    "history": self.history, "step": self.step, "seconds": self.seconds, "extra_emas": {name: ema.model.state_dict() for name, ema in self.extra_emas.items()}}
        save_checkpoint(self.config.save_path, self.stage.kind, {**self.sampling_payload(self.ema), "training": training})

    def sampling_payload(self, ema: EMA) -> dict:
        """What sampling loads from a checkpoint: the model config and one EMA's weights."""
        return {"config": self.stage.bundle.config.to_dict(), "ema": ema.model.state_dict()}

    def compiled_forward(self) -> Callable:
        """The network as train_step calls it: under torch.compile (in --compile_mode) where --compile is on, else as it is."""
        return torch.compile(self.model, mode=self.config.compile_mode) if self.compile else self.model

    def train_step(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, forward: Callable) -> None:
        """One optimizer step on one global batch (DDPM Algorithm 1)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.progress, self.config)
        per_sample, t = self.compute_gradients(images, texts, indices, forward)
        with record_function("optimizer"):
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with record_function("ema"):
            for ema in (self.ema, *self.extra_emas.values()):
                ema.update(self.model)
        self.step += 1
        self.pending_losses.append((self.step, per_sample.detach(), t))

    def compute_gradients(self, images: torch.Tensor, texts: list[str], indices: torch.Tensor, forward: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient of the mean loss over one global batch, in every process; returns this process's (per-sample loss, t)."""
        with record_function("conditioning"):  # the phases' names label torch.profiler's view (benchmarks/gpu.py --profile)
            x0, cond = self.stage.batch(images, texts, indices, self.generator)  # [B, ...] on the CPU
            x0, cond = x0.to(self.device, non_blocking=True), cond.to(self.device, non_blocking=True)  # no host-device sync
        batch, device, generator = len(x0), self.device, self.noise_generator
        cond.drop = torch.rand(batch, generator=generator, device=device) < self.config.cond_drop_prob
        t = self.schedule.sample_timesteps(batch, generator, self.config.timestep_density, self.config.uniform_share,
                                           self.config.laplace_mean, self.config.laplace_scale)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        local = self.dist.local(batch)  # every process drew the whole batch's randomness and keeps its own slice
        x0, t, noise, cond = x0[local], t[local], noise[local], cond.select(local)
        x_t = self.schedule.q_sample(x0, t, noise)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with record_function("forward"), autocast(device):
            output = forward(x_t, t, cond)
        per_sample = self.schedule.loss(output, x0, noise, t)  # [B / processes]
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            self.scaler.scale(per_sample.mean()).backward()
        self.dist.average_gradients(self.model.parameters())  # the gradient of the mean loss over the global batch
        return per_sample, t

    def flush_losses(self) -> float | None:
        """Copy the losses of the last steps to the host, into the history; returns the latest step's loss."""
        if not self.pending_losses:
            return None
        steps = [step for step, _, _ in self.pending_losses]
        per_sample = torch.stack([loss for _, loss, _ in self.pending_losses]).float().cpu()  # [steps, b]: one copy
        timesteps = torch.stack([t for _, _, t in self.pending_losses]).cpu()
        self.pending_losses = []
        for step, losses, t in zip(steps, per_sample, timesteps):
            record_loss(self.history, step, losses, t, self.schedule.num_steps)
        return float(per_sample[-1].mean())

    def train(self) -> None:
        """Step until the step count or the time budget is spent; checkpoints and sample grids on the way."""
        config = self.config
        require(self.progress < 1, f"{config.save_path} has already trained {self.step} steps in {self.seconds / 60:.1f} min; "
                                   "raise --steps or --max_minutes to train more")
        forward = self.compiled_forward()
        ranks = f" in each of {self.dist.world_size} processes (torchrun), {config.batch_size // self.dist.world_size} samples each" if self.dist.enabled else ""
        self.log(f"{self.stage.description}; on {self.device}{ranks}; {len(self.train_set)} training images"
                 + ("; torch.compile on (its first step is not counted in --max_minutes)" if self.compile else ""))
        bar = tqdm(total=config.steps, initial=self.step, desc=self.stage.kind, unit="step", disable=not self.dist.is_main)
        self.model.train()
        compiling = self.compile
        while self.progress < 1:
            self.throughput.start()
            started = time.perf_counter()
            images, texts, _, indices = next(self.batches)
            self.train_step(images, texts, indices, forward)
            if compiling:  # the first compiled step spends its time compiling: neither training time nor throughput
                compiling = False
                self.throughput = Throughput()
                self.log(f"compiled in {time.perf_counter() - started:.0f} s")
            else:
                self.throughput.stop(len(images))
                self.seconds += time.perf_counter() - started
            self.seconds = self.dist.agree(self.seconds, self.device)  # rank 0's clock: one learning rate and one stop everywhere
            bar.update(1)
            finished = self.progress >= 1
            if self.step % LOG_EVERY == 0 or self.step % config.save_every == 0 or finished:
                bar.set_postfix(loss=f"{self.flush_losses():.4f}")
            if self.dist.is_main and (self.step % config.save_every == 0 or finished):
                self.save()
            if self.dist.is_main and config.sample_every and self.step % config.sample_every == 0 and not finished:
                self.written.append(self.stage.preview(self.ema.model, self.step, Path(config.output_dir) / f"samples_step{self.step:06d}.png"))
        bar.close()
        if self.step < config.steps:
            self.log(f"stopped at step {self.step} of {config.steps}: the {config.max_minutes:g}-minute budget (--max_minutes) is spent")

    def finish(self) -> dict:
        """The final sample grid, metrics file and loss plot; returns the metrics."""
        config, history, output_dir = self.config, self.history, Path(self.config.output_dir)
        self.written.append(self.stage.preview(self.ema.model, self.step, output_dir / "samples_final.png"))
        metrics = {
            "stage": self.stage.kind, **self.stage.summary(), "steps": self.step, "train_seconds": round(self.seconds, 1),
            "train_samples_per_second": round(self.throughput.images_per_second, 1), "parameters": count_parameters(self.model),
            "final_loss": float(np.mean([v for _, v in history["loss"][-100:]])),
            "final_loss_low_noise": float(np.mean([v for _, v in history["loss_low_noise"][-100:]])) if history["loss_low_noise"] else None,
            "loss_by_timestep_bucket": [s / max(n, 1) for s, n in history["loss_by_bucket"]], "device": str(self.device),
            "processes": self.dist.world_size, "compiled": self.compile,
            "config": config.to_dict(),
        }
        curves = {"all t": history["loss"], f"t < {LOW_NOISE_STEPS}": history["loss_low_noise"]}
        title = f"{self.stage.kind} training loss" + (" (min-SNR weighted)" if config.min_snr_gamma else "")
        extra = [save_checkpoint(extra_ema_path(config.save_path, name), self.stage.kind, self.sampling_payload(ema))
                 for name, ema in self.extra_emas.items()]
        written = [Path(config.save_path), *extra, write_json(Path(config.save_path).with_suffix(".json"), metrics),
                   save_loss_curves(curves, output_dir / f"{self.stage.kind}_loss.png", title)] + self.written
        for path in written:
            self.log(f"wrote {path}")
        self.ema.model.eval()
        return metrics


def train_unclip(config: DiffusionTrainingConfig, log: Callable[[str], None] = print) -> tuple[Stage, dict]:
    """Train (or, with ``config.resume``, continue) one stage on a frozen CLIP; returns the stage and its metrics."""
    run = DiffusionRun(config, log)
    if config.resume:
        run.resume()
    if config.init_from and run.step == 0:  # not resumed: a resumed run already holds weights that began there
        run.initialize_from(config.init_from)
    run.train()
    metrics = run.finish() if run.dist.is_main else {}
    run.dist.barrier()
    distributed.stop()
    return run.stage, metrics
