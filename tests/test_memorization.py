"""benchmarks/memorization.py: the loss gap between training and held-out images, and the distance to the nearest training image."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import memorization  # noqa: E402
from conftest import run_cli  # noqa: E402


def test_nearest_distance_is_zero_for_a_copy_and_the_pixel_distance_otherwise():
    reference = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    reference[1, 0, 0, 0], reference[2] = 255, 255  # one lit pixel; all lit
    images = torch.stack([reference[1], torch.full((1, 4, 4), 255, dtype=torch.uint8), reference[1].clone()])
    images[2, 0, 1, 1] = 255  # two lit pixels: nearest to the one-pixel image, one pixel away
    assert memorization.nearest_distances(images, reference).tolist() == [0.0, 0.0, 1.0]


def test_the_loss_is_measured_at_the_same_noise_for_the_same_images(tiny_clip_path, tiny_decoder_path, embedded_splits):
    from models.pipeline import ClipConditioner, Decoder, load_clip
    clip = load_clip(str(tiny_clip_path))
    decoder = Decoder.load(str(tiny_decoder_path), clip=clip)
    images, labels = embedded_splits.train_images[:6], embedded_splits.train_labels[:6]
    cond = ClipConditioner(clip).text([f"{int(c)}" for c in labels])
    first, again = memorization.denoising_loss(decoder, images, cond), memorization.denoising_loss(decoder, images, cond)
    assert first.shape == (memorization.TIMESTEP_GRID,) and torch.isfinite(first).all() and torch.equal(first, again)
    assert not torch.equal(first, memorization.denoising_loss(decoder, embedded_splits.test_images[:6], cond))  # other images, other loss


def test_the_script_writes_both_measures_for_each_decoder(tiny_clip_path, tiny_decoder_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # write_result's default folder: outputs/benchmarks under here
    code = run_cli(memorization.main, ["--clip_model_path", tiny_clip_path, "--decoder_paths", tiny_decoder_path, "--per_class", 2,
                                       "--samples_per_class", 2, "--device", "cpu", "--name", "memo"])
    row, = json.loads((tmp_path / "outputs/benchmarks/memo.json").read_text())["rows"]
    assert code == 0 and row["decoder_path"] == str(tiny_decoder_path) and set(row["loss_ratio_by_third"]) == set(memorization.THIRDS)
    assert row["loss_ratio"] > 0 and row["nearest_train_distance_held_out"] > 0 and 0 <= row["share_nearer_than_held_out_5th_percentile"] <= 1
