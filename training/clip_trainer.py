"""Train TinyCLIP: the loop behind ``clip_train.py`` and the notebook.

Each epoch: shuffled batches of (augmented image, freshly sampled caption),
the soft-target contrastive loss (models.clip.contrastive_loss), AdamW with a
one-cycle learning rate; then zero-shot evaluation on the held-out split, and an
atomic checkpoint that ``--resume`` continues from.
"""
from __future__ import annotations

import json
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
from dataloading.datasets import CaptionedImages, ImageSplits, load_dataset
from models.clip import CLIPConfig, TinyCLIP, contrastive_loss
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.cli import option, require
from utils.metrics import encode_images, evaluate_clip
from utils.plotting import save_loss_curves, save_similarity_matrix
from utils.training import Throughput, autocast, count_parameters, resolve_device, seed_everything

CHECKPOINT_KIND = "clip"


@dataclass
class ClipTrainingConfig:
    dataset: str = option("mnist", "mnist (the embedded 5,000 digits, or IDX files with --data_dir) or fashion", choices=sorted(CAPTION_SETS))
    data_dir: str | None = option(None, "folder with the IDX files (plain or .gz)")
    download: bool = option(False, "download the dataset with torchvision (needs internet)")
    epochs: int = option(15, "passes over the training split")
    batch_size: int = option(128, "images (and captions) per contrastive batch")
    lr: float = option(3e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = option(0.05, "AdamW weight decay")
    augment: bool = option(True, "random rotation, scale and shift of training images")
    train_subset: int = option(0, "train on only this many images (0: all), for quick tests")
    embed_dim: int = option(64, "size of the shared CLIP embedding")
    seed: int = option(0, "random seed (same seed, same model)")
    device: str = option("auto", "auto, cpu or cuda")
    save_path: str = option("checkpoints/clip.pt", "checkpoint path; metrics go beside it as .json")
    output_dir: str = option("outputs/clip", "folder for the plots")
    resume: bool = option(False, "continue from the checkpoint at --save_path")

    def validate(self) -> None:
        require(self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        require(self.batch_size > 1, f"--batch_size must be at least 2 for a contrastive batch, got {self.batch_size}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(self.train_subset >= 0, f"--train_subset must be 0 or positive, got {self.train_subset}")
        require(self.embed_dim > 0, f"--embed_dim must be positive, got {self.embed_dim}")


def subset(splits: ImageSplits, n: int, seed: int) -> ImageSplits:
    """The first ``n`` images of a seeded shuffle of the training split."""
    if n <= 0 or n >= len(splits.train_labels):
        return splits
    idx = torch.randperm(len(splits.train_labels), generator=torch.Generator().manual_seed(seed))[:n]
    return ImageSplits(splits.name, splits.train_images[idx], splits.train_labels[idx], splits.test_images, splits.test_labels)


def metrics_path(save_path: str | Path) -> Path:
    return Path(save_path).with_suffix(".json")


def train_clip(config: ClipTrainingConfig, splits: ImageSplits | None = None, log: Callable[[str], None] = print) -> tuple[TinyCLIP, dict]:
    """Train (or resume) a TinyCLIP; returns the model and its final metrics."""
    config.validate()
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    splits = subset(splits or load_dataset(config.dataset, config.data_dir, config.download), config.train_subset, config.seed)
    captions = splits.captions
    channels, height, _ = splits.image_shape
    model = TinyCLIP(CLIPConfig(embed_dim=config.embed_dim, image_channels=channels, image_size=height), CharTokenizer()).to(device)
    train_set = CaptionedImages(splits.train_images, splits.train_labels, captions, seed=config.seed)
    steps_per_epoch = len(train_set) // config.batch_size
    require(steps_per_epoch > 0, f"--batch_size {config.batch_size} is larger than the {len(train_set)} training images")
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases, norms and the temperature
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    history: dict = {"loss": [], "eval": []}
    start_epoch, seconds = 0, 0.0

    if config.resume and not Path(config.save_path).exists():
        log(f"--resume: no checkpoint at {config.save_path} yet, so training starts from scratch")
    if config.resume and Path(config.save_path).exists():
        state = load_checkpoint(config.save_path, CHECKPOINT_KIND, map_location=device)
        require(state["training"]["config"]["dataset"] == config.dataset and state["config"]["embed_dim"] == config.embed_dim,
                f"cannot resume {config.save_path}: it was trained with other data or embedding size")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["training"]["optimizer"])
        scheduler.load_state_dict(state["training"]["scheduler"])
        generator.set_state(state["training"]["data_rng"])
        train_set.rng.setstate(_to_tuple(state["training"]["caption_rng"]))
        history, start_epoch, seconds = state["training"]["history"], state["training"]["epoch"], state["training"]["seconds"]
        log(f"resumed {config.save_path} after epoch {start_epoch}")
    require(start_epoch < config.epochs, f"{config.save_path} has already finished {start_epoch} epochs; raise --epochs to train more")

    log(f"TinyCLIP: {count_parameters(model):,} parameters on {device}; {len(train_set)} training images, {len(splits.test_labels)} held out")
    throughput = Throughput()
    results: dict = {}
    for epoch in range(start_epoch, config.epochs):
        model.train()
        epoch_start = time.perf_counter()
        throughput.start()
        bar = tqdm(train_set.batches(config.batch_size, generator), total=steps_per_epoch, desc=f"clip epoch {epoch + 1}/{config.epochs}", leave=False)
        for images, texts, labels, _ in bar:
            if config.augment:
                images = random_affine(images, generator)
            tokens = model.tokenizer.batch_encode(texts)
            with autocast(device):
                logits_per_image, _ = model(images.to(device), tokens)
                loss = contrastive_loss(logits_per_image.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            history["loss"].append((len(history["loss"]) + 1, loss.item()))  # (step, loss)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        throughput.stop(steps_per_epoch * config.batch_size)
        seconds += time.perf_counter() - epoch_start
        results = evaluate_clip(model, splits.test_images, splits.test_labels, captions)
        history["eval"].append({"epoch": epoch + 1, **results})
        training_state = {
            "config": asdict(config), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "data_rng": generator.get_state(), "caption_rng": _to_list(train_set.rng.getstate()),
            "history": history, "epoch": epoch + 1, "seconds": seconds,
        }
        save_checkpoint(config.save_path, CHECKPOINT_KIND, {**model.checkpoint_payload(), "dataset": splits.name, "training": training_state})
        log(f"epoch {epoch + 1:3d}/{config.epochs}  loss {np.mean([l for _, l in history['loss'][-steps_per_epoch:]]):.4f}  "
            + "  ".join(f"{k.replace('zero_shot_', 'zs_')} {v:.3f}" for k, v in results.items() if k.startswith("zero_shot")))

    metrics = {
        **results, "dataset": splits.name, "epochs": config.epochs, "train_seconds": round(seconds, 1),
        "train_images_per_second": round(throughput.images_per_second, 1), "parameters": count_parameters(model),
        "device": str(device), "config": asdict(config),
    }
    written = [Path(config.save_path), write_json(metrics_path(config.save_path), metrics)]
    written += write_clip_plots(model, splits, history, Path(config.output_dir))
    for path in written:
        log(f"wrote {path}")
    return model, metrics


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


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


def _to_list(value):
    """Python's random state (nested tuples) as lists: storable in a weights-only checkpoint."""
    return [_to_list(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
