import gzip
import random
import struct

import numpy as np
import pytest
import torch

from dataloading.augment import random_affine
from dataloading.captions import FASHION_CAPTIONS, MNIST_CAPTIONS, with_article
from dataloading.datasets import CaptionedImages, load_dataset, load_idx_dir
from utils.images import to_signed_float, to_uint8
from utils.errors import UserError


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def make_idx_dir(folder, compress: bool, channels_last: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (20, 28, 28, 3) if channels_last else (20, 28, 28)
    suffix = ".gz" if compress else ""
    for part, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n,) + shape[1:]), compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, compress)


def test_embedded_split_is_fixed_stratified_and_disjoint(embedded_splits):
    s = embedded_splits
    assert s.train_images.shape == (4500, 1, 28, 28) and s.test_images.shape == (500, 1, 28, 28)
    assert s.train_labels.bincount().tolist() == [450] * 10 and s.test_labels.bincount().tolist() == [50] * 10
    again = load_dataset()
    assert torch.equal(again.test_images, s.test_images)
    train_set = {bytes(x.numpy()) for x in s.train_images}
    assert not any(bytes(x.numpy()) in train_set for x in s.test_images)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_plain_and_gz(tmp_path, compress):
    make_idx_dir(tmp_path, compress)
    s = load_idx_dir(tmp_path)
    assert s.train_images.shape == (20, 1, 28, 28) and s.test_labels.tolist() == list(range(10))


def test_torchvision_raw_layout_and_three_channels(tmp_path):
    make_idx_dir(tmp_path / "MNIST" / "raw", compress=True, channels_last=True)
    s = load_idx_dir(tmp_path)
    assert s.train_images.shape == (20, 3, 28, 28)
    image, caption, label = CaptionedImages(s.train_images, s.train_labels, MNIST_CAPTIONS)[0]
    assert image.shape == (3, 28, 28) and -1 <= image.min() and image.max() <= 1


def test_missing_idx_files_and_folder_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="lacks the IDX files"):
        load_idx_dir(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_idx_dir(tmp_path / "nope")
    make_idx_dir(tmp_path / "bad", compress=False)
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read IDX"):
        load_idx_dir(tmp_path / "bad")


def test_pixel_scaling_round_trip():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = to_signed_float(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), x)


def test_captions_mix_words_and_numerals():
    rng = random.Random(0)
    samples = [MNIST_CAPTIONS.sample(6, rng) for _ in range(400)]
    assert all("six" in s or "6" in s for s in samples)
    with_word = sum("six" in s for s in samples) / len(samples)
    assert 0.4 < with_word < 0.6
    held_out = {p for prompts in MNIST_CAPTIONS.prompts("held_out") for p in prompts}
    assert not held_out & set(MNIST_CAPTIONS.all_train_captions())
    assert FASHION_CAPTIONS.prompts("with_article")[9] == ["an ankle boot"]
    assert with_article("one") == "a one" and with_article("eight") == "an eight"  # the article follows the sound


def test_batches_yield_every_image_once(embedded_splits):
    s = embedded_splits
    ds = CaptionedImages(s.test_images, s.test_labels, MNIST_CAPTIONS)
    seen = torch.cat([idx for _, _, _, idx in ds.batches(64, torch.Generator().manual_seed(0), drop_last=False)])
    assert sorted(seen.tolist()) == list(range(500))


def test_augmentation_keeps_shape_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    y = random_affine(x, g)
    assert y.shape == x.shape and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    assert not torch.equal(x, y)
