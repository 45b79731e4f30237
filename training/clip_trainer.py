"""Train TinyCLIP: the loop behind ``clip_train.py`` and the notebook.

Each epoch: shuffled batches of (augmented image, freshly sampled caption),
the soft-target contrastive loss (models.clip.contrastive_loss), AdamW with a
one-cycle learning rate; then zero-shot evaluation on the held-out split, and an
atomic checkpoint that ``--resume`` continues from. Under torchrun each process
encodes its slice of every batch and the loss sees the whole batch's embeddings
(utils.distributed).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

from dataloading.augment import random_affine
from dataloading.captions import CAPTION_SETS
from dataloading.character_tokenizer import CharTokenizer
from dataloading.datasets import ImageSplits, load_dataset
from dataloading.style_captions import CAPTION_STYLES, STYLE_CAPTION_SETS
from models.text_encoder import TEXT_POOLINGS
from evaluation.attributes import clip_attribute_retrieval
from evaluation.metrics import evaluate_clip
from models.clip import CLIPConfig, TinyCLIP, contrastive_loss, encode_images
from training.presets import preset_option
from utils.checkpoints import checkpoint_to_resume, random_state_from_list, random_state_to_list, save_checkpoint
from utils.config import option
from utils.errors import require
from utils.files import check_output_file, check_output_folder, write_json
from utils.plotting import save_loss_curves, save_similarity_matrix
from utils import distributed
from utils.training import Throughput, adamw, autocast, configure_backends, count_parameters, gradient_scaler, resolve_device, seed_everything

CHECKPOINT_KIND = "clip"


@dataclass
class ClipTrainingConfig:
    dataset: str = option("mnist", "mnist (the embedded 5,000 digits, or IDX files with --data_dir) or fashion", choices=sorted(CAPTION_SETS))
    data_dir: str | None = option(None, "folder with the IDX files (plain or .gz)")
    download: bool = option(False, "download the dataset with torchvision (needs internet)")
    captions: str = option("class", "class: captions name the class (\"a handwritten six\"); style: also how it is drawn, by measured thickness, slant and width (\"a thick six slanted left\")", choices=list(CAPTION_STYLES))
    epochs: int = option(15, "passes over the training split")
    max_minutes: float = option(0.0, "stop after the first epoch that ends past this many training minutes, 0: no limit; the "
                                     "learning-rate schedule stays planned over --epochs, so --resume goes on where it stopped")
    batch_size: int = option(128, "images (and captions) per contrastive batch, over all processes under torchrun")
    lr: float = option(3e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = option(0.05, "AdamW weight decay")
    augment: bool = option(True, "random rotation, scale and shift of training images")
    train_subset: int = option(0, "train on only this many images (0: all), for quick tests")
    embed_dim: int = option(64, "size of the shared CLIP embedding")
    text_pooling: str = option("final", "how the text LSTM's states become one embedding: final (the last states) or max (each feature's maximum over the characters)", choices=list(TEXT_POOLINGS))
    seed: int = option(0, "random seed (same seed, same model)")
    device: str = option("auto", "auto, cpu or cuda")
    preset: str = preset_option()
    save_path: str = option("checkpoints/clip.pt", "checkpoint path; metrics go beside it as .json")
    output_dir: str = option("outputs/clip", "folder for the plots")
    resume: bool = option(False, "continue from the checkpoint at --save_path")

    def validate(self) -> None:
        require(self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        require(self.max_minutes >= 0, f"--max_minutes must be 0 (no limit) or positive, got {self.max_minutes}")
        require(self.batch_size > 1, f"--batch_size must be at least 2 for a contrastive batch, got {self.batch_size}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.train_subset >= 0, f"--train_subset must be 0 or positive, got {self.train_subset}")
        require(self.embed_dim > 0, f"--embed_dim must be positive, got {self.embed_dim}")
        require(self.weight_decay >= 0, f"--weight_decay must be 0 or positive, got {self.weight_decay}")
        check_output_file(self.save_path, "--save_path")
        check_output_folder(self.output_dir, "--output_dir")


class ClipRun:
    """One training run of TinyCLIP: model, optimizer, one-cycle schedule, data order and history."""

    def __init__(self, config: ClipTrainingConfig, splits: ImageSplits | None = None, log: Callable[[str], None] = print) -> None:
        config.validate()
        self.config = config
        self.dist, self.device = distributed.start(resolve_device(config.device))
        self.dist.check_batch(config.batch_size)
        configure_backends(self.device)
        self.log = log if self.dist.is_main else (lambda message: None)
        self.generator = seed_everything(config.seed)
        self.splits = (splits or load_dataset(config.dataset, config.data_dir, config.download)).subset(config.train_subset, config.seed)
        channels, height, _ = self.splits.image_shape
        self.model = TinyCLIP(CLIPConfig(embed_dim=config.embed_dim, image_channels=channels, image_size=height, text_pooling=config.text_pooling), CharTokenizer()).to(self.device)
        self.train_set = self.splits.training_set(config.captions, config.seed)
        self.steps_per_epoch = len(self.train_set) // config.batch_size
        require(self.steps_per_epoch > 0, f"--batch_size {config.batch_size} is larger than the {len(self.train_set)} training images")
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases, norms and the temperature
        self.dist.broadcast_parameters(self.model)
        distributed.synchronise_batch_norm(self.model, self.dist)  # the image encoder's BatchNorm sees the whole batch
        self.optimizer = adamw([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], self.device, lr=config.lr)
        self.scaler = gradient_scaler(self.device)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=config.lr, total_steps=config.epochs * self.steps_per_epoch, pct_start=0.15)
        self.history: dict = {"loss": [], "eval": []}
        self.epoch, self.seconds = 0, 0.0
        self.throughput = Throughput()
        self.results: dict = {}

    def resume(self) -> None:
        """Continue from the checkpoint at ``save_path``: weights, optimizer, schedule, random streams and history."""
        path = self.config.save_path
        state = checkpoint_to_resume(path, CHECKPOINT_KIND, self.log)
        if state is None:
            return
        training = state["training"]
        require(training["config"]["dataset"] == self.config.dataset and state["config"]["embed_dim"] == self.config.embed_dim
                and training["config"].get("captions", "class") == self.config.captions,
                f"cannot resume {path}: it was trained with other data, captions or embedding size")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.load_schedule(training["scheduler"])
        self.generator.set_state(training["data_rng"])
        self.train_set.rng.setstate(random_state_from_list(training["caption_rng"]))
        self.history, self.epoch, self.seconds = training["history"], training["epoch"], training["seconds"]
        self.log(f"resumed {path} after epoch {self.epoch}")

    def load_schedule(self, saved: dict) -> None:
        """The saved one-cycle schedule; when --epochs has changed since, its phases are stretched to the new total
        (the step count carries over) and this step's learning rate is read off the stretched curve."""
        planned = self.scheduler.state_dict()
        if saved["total_steps"] == planned["total_steps"]:
            self.scheduler.load_state_dict(saved)
            return
        self.scheduler.load_state_dict({**saved, "total_steps": planned["total_steps"], "_schedule_phases": planned["_schedule_phases"]})
        self.scheduler.last_epoch -= 1
        self.scheduler.step()  # sets the optimizer's learning rate for the step the run continues at
        self.log(f"--epochs {self.config.epochs}: the learning-rate schedule, planned for {saved['total_steps']} steps, now spans {planned['total_steps']}")

    @property
    def out_of_time(self) -> bool:
        return bool(self.config.max_minutes) and self.seconds >= 60 * self.config.max_minutes

    def batch_loss(self, images: torch.Tensor, texts: list[str], labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The contrastive loss of one global training batch, augmented; this process encodes only its slice of it."""
        style = self.train_set.captions if self.config.captions == "style" else None
        if self.config.augment:  # style captions name slant, thickness and width: only shifts keep them true
            images = random_affine(images, self.generator, **({"max_degrees": 0.0, "max_scale": 0.0} if style else {}))
        fits = style.fits(labels, self.train_set.terciles[indices], texts) if style else None  # [B, B]; None: same label
        return self.loss(images, texts, labels, fits)

    def loss(self, images: torch.Tensor, texts: list[str], labels: torch.Tensor, fits: torch.Tensor | None) -> torch.Tensor:
        """The contrastive loss of one global batch; this process encodes only its slice of it (all of it outside torchrun)."""
        local = self.dist.local(len(images))
        with autocast(self.device):
            image_embedding = self.model.encode_image(images[local].to(self.device, non_blocking=True))  # [B / ranks, D]
            text_embedding, _ = self.model.encode_tokens(self.model.tokenizer.batch_encode(texts[local]))  # [B / ranks, D]
        logits_per_image, _ = self.model.logits(self.dist.gather(image_embedding), self.dist.gather(text_embedding))  # [B, B], fp32
        return contrastive_loss(logits_per_image, labels.to(self.device, non_blocking=True), fits)

    def backward(self, loss: torch.Tensor) -> None:
        """The gradients of the global batch's loss, averaged over processes."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.dist.average_gradients(self.model.parameters())

    def step(self, loss: torch.Tensor) -> None:
        """Backward and one optimizer step."""
        self.backward(loss)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def train_epoch(self) -> None:
        """One pass over the training split, then zero-shot evaluation on the held-out split and a checkpoint."""
        config, model = self.config, self.model
        model.train()
        epoch_start = time.perf_counter()
        self.throughput.start()
        bar = tqdm(self.train_set.batches(config.batch_size, self.generator), total=self.steps_per_epoch,
                   desc=f"clip epoch {self.epoch + 1}/{config.epochs}", leave=False, disable=not self.dist.is_main)
        losses: list[torch.Tensor] = []
        for images, texts, labels, indices in bar:
            loss = self.batch_loss(images, texts, labels, indices)
            self.step(loss)
            losses.append(loss.detach())
        losses = torch.stack(losses).tolist()  # one device-to-host copy per epoch, not one per step
        self.history["loss"] += [(len(self.history["loss"]) + i + 1, value) for i, value in enumerate(losses)]  # (step, loss)
        self.throughput.stop(self.steps_per_epoch * config.batch_size)
        self.seconds = self.dist.agree(self.seconds + time.perf_counter() - epoch_start, self.device)  # rank 0's clock decides
        self.epoch += 1
        if not self.dist.is_main:
            return
        self.results = evaluate_clip(model, self.splits.test_images, self.splits.test_labels, self.splits.captions)
        self.history["eval"].append({"epoch": self.epoch, **self.results})
        self.save()
        self.log(f"epoch {self.epoch:3d}/{config.epochs}  loss {np.mean([l for _, l in self.history['loss'][-self.steps_per_epoch:]]):.4f}  "
                 + "  ".join(f"{k.replace('zero_shot_', 'zs_')} {v:.3f}" for k, v in self.results.items() if k.startswith("zero_shot")))

    def save(self) -> None:
        training = {
            "config": asdict(self.config), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "data_rng": self.generator.get_state(), "caption_rng": random_state_to_list(self.train_set.rng.getstate()),
            "history": self.history, "epoch": self.epoch, "seconds": self.seconds,
        }
        save_checkpoint(self.config.save_path, CHECKPOINT_KIND, {**self.model.checkpoint_payload(), "dataset": self.splits.name, "training": training})

    def finish(self) -> dict:
        """The metrics file and the plots; returns the metrics."""
        config = self.config
        metrics = {
            **self.results, "dataset": self.splits.name, "epochs": config.epochs, "train_seconds": round(self.seconds, 1),
            "train_images_per_second": round(self.throughput.images_per_second, 1), "parameters": count_parameters(self.model),
            "device": str(self.device), "processes": self.dist.world_size, "config": asdict(config),
        }
        style = STYLE_CAPTION_SETS[self.splits.name]
        metrics["attribute_retrieval"] = clip_attribute_retrieval(self.model, self.splits, style)
        adjective = metrics["attribute_retrieval"]["adjective"]
        high, low = (style.prompt(0, {style.attributes[0].name: tercile}) for tercile in (2, 0))  # e.g. "a thick zero", "a thin zero"
        self.log(f"attribute retrieval on held-out images (AUC of \"{high}\" against \"{low}\", ...; mean over classes): "
                 + ", ".join(f"{name} {summary['mean']:.3f}" for name, summary in adjective.items()))
        written = [Path(config.save_path), write_json(Path(config.save_path).with_suffix(".json"), metrics)]
        written += write_clip_plots(self.model, self.splits, self.history, Path(config.output_dir))
        for path in written:
            self.log(f"wrote {path}")
        return metrics


def train_clip(config: ClipTrainingConfig, splits: ImageSplits | None = None, log: Callable[[str], None] = print) -> tuple[TinyCLIP, dict]:
    """Train (or, with ``config.resume``, continue) a TinyCLIP; returns the model and its final metrics."""
    run = ClipRun(config, splits, log)
    if config.resume:
        run.resume()
    require(run.epoch < config.epochs, f"{config.save_path} has already finished {run.epoch} epochs; raise --epochs to train more")
    ranks = f" in each of {run.dist.world_size} processes (torchrun)" if run.dist.enabled else ""
    run.log(f"TinyCLIP: {count_parameters(run.model):,} parameters on {run.device}{ranks}; {len(run.train_set)} training images, "
            f"{len(run.splits.test_labels)} held out")
    while run.epoch < config.epochs and not run.out_of_time:
        run.train_epoch()
    if run.epoch < config.epochs:
        run.log(f"stopped after epoch {run.epoch} of {config.epochs}: the {config.max_minutes:g}-minute budget (--max_minutes) is spent; "
                "--resume goes on")
    metrics = run.finish() if run.dist.is_main else {}
    run.dist.barrier()
    distributed.stop()
    return run.model, metrics


@torch.no_grad()
def write_clip_plots(model: TinyCLIP, splits: ImageSplits, history: dict, output_dir: Path) -> list[Path]:
    model.eval()
    loss_plot = save_loss_curves({"contrastive loss": history["loss"]}, output_dir / "clip_loss.png", "TinyCLIP training loss")
    image_embeddings = encode_images(model, splits.test_images)
    class_means = torch.stack([image_embeddings[splits.test_labels == c].mean(0) for c in range(splits.captions.num_classes)])
    class_means = torch.nn.functional.normalize(class_means, dim=-1)
    prompts = [names[0] for names in splits.captions.names]
    similarity = (model.encode_text(prompts).float().cpu() @ class_means.T).numpy()
    matrix_plot = save_similarity_matrix(similarity, prompts, [str(c) for c in range(len(prompts))], output_dir / "clip_similarity.png",
                                         "TinyCLIP: prompt vs. held-out image similarity")
    return [loss_plot, matrix_plot]
