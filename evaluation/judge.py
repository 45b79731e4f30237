"""An independent judge: a plain CNN classifier, trained on the training split only.

It never sees generated images or the generator's weights. Two numbers come
from it: the share of generated images it reads as the prompted class, and
the Frechet distance between its penultimate-layer features of generated and
real images (FID's recipe with a judge that knows digits instead of ImageNet).

Recipe 2 adds photometric augmentation: faint background lifts, contrast
changes and pixel noise, which a reader ignores. A judge trained on exactly
black backgrounds only (recipe 1) ranked generators by their background level
more than by their digits; BENCHMARKS.md ("Why the judge changed") has the figures
from ``benchmarks/judge_calibration.py``. Blur, wrong or collapsed classes
still count against a generator under recipe 2.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dataloading.augment import random_affine
from dataloading.datasets import ImageSplits
from evaluation.metrics import frechet_distance
from utils.checkpoints import CHECKPOINT_DIR, WEIGHTS_SUFFIX, default_weights, load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.images import to_signed_float

FEATURE_DIM = 64
JUDGE_RECIPE = 2  # bump when train_judge changes, so cached judges are retrained; 1: without photometric augmentation
JUDGE_EPOCHS = (10, 40)  # passes over the training split: 40 for the embedded MNIST's 4,500 images, fewer for bigger splits


def judge_epochs(num_train: int) -> int:
    """Passes over a training split of this size: about 180,000 images seen (40 passes over 4,500), within JUDGE_EPOCHS,
    so Fashion-MNIST's 60,000 get 10 passes and a tiny test subset still 40."""
    low, high = JUDGE_EPOCHS
    return min(high, max(low, round(180_000 / max(1, num_train))))


def default_judge_path(dataset: str) -> Path:
    """Where a dataset's judge is cached: MNIST's at checkpoints/judge.pt (else the shipped one), others at checkpoints/judge_<dataset>.pt."""
    return default_weights("judge") if dataset == "mnist" else CHECKPOINT_DIR / f"judge_{dataset}.pt"


def random_photometric(images: torch.Tensor, generator: torch.Generator, max_lift: float = 0.1, max_noise: float = 0.05,
                       min_contrast: float = 0.8, probability: float = 0.5) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> the same, each image with probability ``probability`` changed in ways a reader ignores.

    x' = clamp(-1 + (x + 1) * contrast + lift + noise), contrast ~ U[min_contrast, 1], lift ~ U[0, max_lift]
    (a grey background), noise ~ N(0, s^2) with s ~ U[0, max_noise] per image.
    """
    b = images.shape[0]

    def per_image(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator)).view(b, 1, 1, 1)

    changed = -1 + (images + 1) * per_image(min_contrast, 1.0) + per_image(0.0, max_lift)
    changed = changed + per_image(0.0, max_noise) * torch.randn(images.shape, generator=generator)
    keep = (torch.rand(b, generator=generator) >= probability).view(b, 1, 1, 1)
    return torch.where(keep, images, changed.clamp(-1, 1))


class Judge(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # [B, 32, 14, 14]
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # [B, 64, 7, 7]
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # [B, 128]
            nn.Linear(128, FEATURE_DIM), nn.ReLU(),  # [B, 64]: the Frechet features
        )
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))
        self.recipe = JUDGE_RECIPE  # how it was trained; set by load_or_train_judge

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (logits [B, K], features [B, F])."""
        features = self.features(images)
        return self.classifier(features), features

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 or [-1, 1] images -> (predicted classes [N], features [N, F])."""
        self.eval()
        classes, features = [], []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            batch = to_signed_float(batch) if batch.dtype == torch.uint8 else batch.float()
            logits, feats = self(batch)
            classes.append(logits.argmax(-1))
            features.append(feats)
        return torch.cat(classes), torch.cat(features)


def train_judge(splits: ImageSplits, epochs: int | None = None, batch_size: int = 64, seed: int = 0, recipe: int = JUDGE_RECIPE) -> tuple[Judge, float]:
    """Train on the training split; returns the judge and its held-out accuracy. ``epochs``: judge_epochs by default.

    ``recipe=1`` leaves out the photometric augmentation, kept to show what it changes.
    """
    epochs = epochs or judge_epochs(len(splits.train_labels))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    judge = Judge(splits.image_shape[0], splits.captions.num_classes)
    judge.recipe = recipe
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = len(splits.train_labels) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps_per_epoch)
    for _ in tqdm(range(epochs), desc="judge", unit="epoch"):
        judge.train()
        order = torch.randperm(len(splits.train_labels), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            images = random_affine(to_signed_float(splits.train_images[idx]), generator)
            if recipe >= 2:
                images = random_photometric(images, generator)
            loss = F.cross_entropy(judge(images)[0], splits.train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    predictions, _ = judge.predict(splits.test_images)
    return judge, (predictions == splits.test_labels).float().mean().item()


def load_or_train_judge(splits: ImageSplits, path: str | Path | None = None, recipe: int = JUDGE_RECIPE) -> tuple[Judge, float]:
    """The judge is trained once per dataset and recipe and cached at ``path`` (default: default_judge_path).
    A cached judge of another dataset is never overwritten: that is an error."""
    path = Path(path) if path is not None else default_judge_path(splits.name)
    if path.exists():
        data = load_checkpoint(path, "judge")
        if data["dataset"] != splits.name:
            raise UserError(f"{path} holds the judge of {data['dataset']}, not {splits.name}; give --judge_path another file "
                            f"(the default for {splits.name} is {default_judge_path(splits.name)})")
        if data["num_train"] == len(splits.train_labels) and data.get("recipe", 1) == recipe:
            judge = Judge(splits.image_shape[0], splits.captions.num_classes)
            judge.load_state_dict(data["model"])
            judge.recipe = recipe
            return judge.eval(), data["test_accuracy"]
        if path.suffix == WEIGHTS_SUFFIX:
            raise UserError(f"{path} is shipped weights of a judge trained on {data['num_train']} {data['dataset']} images with recipe "
                            f"{data.get('recipe', 1)}; give --judge_path a .pt file to train one for these {len(splits.train_labels)}")
    judge, accuracy = train_judge(splits, recipe=recipe)
    save_checkpoint(path, "judge", {"model": judge.state_dict(), "dataset": splits.name, "num_train": len(splits.train_labels), "test_accuracy": accuracy, "recipe": recipe})
    return judge.eval(), accuracy


class QualityReference:
    """Real images to compare generated ones against, at a fixed sample size.

    The training split is cut per class into two halves with a fixed seed:
    half A is the reference distribution. A generated set of ``per_class``
    images per class is good when its Frechet distance to A is close to that of
    a real set of the same size. That real-vs-real distance is itself noisy: on
    the embedded MNIST, one draw of 100 per class from half B gives 0.13 to 0.21
    (BENCHMARKS.md, seventeenth session). So the baseline is the mean over
    ``draws`` random draws of ``per_class`` per class from half B, and a ratio
    divides by that mean (``ratio``).
    """

    def __init__(self, judge: Judge, splits: ImageSplits, per_class: int, seed: int = 0, draws: int = 8) -> None:
        generator = torch.Generator().manual_seed(seed)
        half_a, half_b = [], []
        for c in range(splits.captions.num_classes):
            idx = (splits.train_labels == c).nonzero().squeeze(1)
            idx = idx[torch.randperm(len(idx), generator=generator)]
            half_a.append(idx[: len(idx) // 2])
            half_b.append(idx[len(idx) // 2 :])
        self.judge = judge
        self.per_class = per_class
        _, self.reference_features = judge.predict(splits.train_images[torch.cat(half_a)])
        draws_of_b = [torch.cat([b[torch.randperm(len(b), generator=generator)[:per_class]] for b in half_b]) for _ in range(draws)]
        results = [self.evaluate(splits.train_images[d], splits.train_labels[d]) for d in draws_of_b]
        frechets = [r["frechet"] for r in results]
        self.real = {**results[0], "frechet": sum(frechets) / draws, "frechet_draws": frechets}
        self.real["judge_recipe"] = judge.recipe  # result files say which judge measured them

    def ratio(self, frechet: float) -> float:
        """A Frechet distance over the mean real-vs-real one at the same size: 1 is as close as real data gets."""
        return frechet / self.real["frechet"]

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Judge accuracy (overall and per class) and Frechet distance to the reference half."""
        predictions, features = self.judge.predict(images)
        correct = (predictions == labels).float()
        per_class = [correct[labels == c].mean().item() for c in labels.unique().tolist()]
        return {"accuracy": correct.mean().item(), "min_class_accuracy": min(per_class), "per_class_accuracy": per_class,
                "frechet": frechet_distance(features.numpy(), self.reference_features.numpy()), "num_images": len(labels)}
