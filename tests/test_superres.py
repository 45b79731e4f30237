"""Imagen's cascade: resizing, conditioning augmentation, the super-resolution model and its CLI path."""
import json

import numpy as np
import pytest
import torch

import generate_images
from conftest import assert_one_line_error, run_cli
from models.diffusion import NoiseSchedule, ScheduleConfig
from models.pipeline import Decoder, DecoderConfig
from models.samplers import SamplingOptions
from models.superres import SuperResolution, augment, downsample, low_res_condition, upsample
from models.conditioning import Conditioning
from models.unet import UNetConfig
from utils.checkpoints import load_checkpoint, save_checkpoint
from evaluation.metrics import psnr, ssim


def test_downsample_averages_blocks_and_upsample_keeps_the_range():
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    low = downsample(images, 14)
    assert low.shape == (3, 1, 14, 14)
    assert torch.allclose(low[:, :, 0, 0], images[:, :, :2, :2].mean((-1, -2)))  # the box antialiasing filter
    up = upsample(low, 28)
    assert up.shape == (3, 1, 28, 28) and up.min() >= -1 and up.max() <= 1
    assert torch.equal(downsample(images, 28), images) and torch.equal(upsample(images, 28), images)


def test_conditioning_augmentation_follows_the_forward_process():
    schedule = NoiseSchedule(ScheduleConfig())
    low = torch.full((4000, 1, 2, 2), 0.5)
    assert torch.equal(augment(low[:2], torch.zeros(2), schedule), low[:2])  # level 0: the clean image
    level = torch.full((4000,), 0.5)
    noised = augment(low, level, schedule, torch.Generator().manual_seed(0))
    a = schedule.alpha_bar(round(0.5 * 999))
    assert abs(noised.mean().item() - 0.5 * a**0.5) < 0.02  # E[z_s] = sqrt(a) z
    assert abs(noised.std().item() - (1 - a) ** 0.5) < 0.02  # Std[z_s] = sqrt(1 - a)
    assert low_res_condition(low[:2], level[:2], 8, schedule).shape == (2, 1, 8, 8)


def randomised(bundle):
    """Undo the zero initialisations, so every input path reaches the output."""
    torch.manual_seed(0)
    for p in bundle.model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    return bundle


def test_super_resolution_shapes_and_the_augmentation_level_reaches_the_model():
    config = DecoderConfig(UNetConfig(channels=(8, 16), condition_dim=4, low_res_channels=1, noise_level_conditioning=True), low_res_size=14)
    superres = randomised(SuperResolution(config))
    low, cond = torch.rand(2, 1, 14, 14) * 2 - 1, Conditioning(torch.randn(2, 4))
    sampling = SamplingOptions(steps=3, guidance_scale=1.0)
    out = {level: superres.upscale(low, cond, level, sampling) for level in (0.0, 0.3)}
    assert out[0.0].shape == (2, 1, 28, 28)
    assert not torch.allclose(out[0.0], out[0.3])
    assert torch.equal(out[0.3], superres.upscale(low, cond, 0.3, sampling))  # seeded


def test_base_decoder_draws_low_resolution_images():
    base = randomised(Decoder(DecoderConfig(UNetConfig(image_size=14, channels=(8, 16), condition_dim=4))))
    assert base.generate(Conditioning(torch.randn(3, 4)), SamplingOptions(steps=2)).shape == (3, 1, 14, 14)


def test_psnr_and_ssim_prefer_the_closer_image():
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    near, far = real + 0.05 * torch.randn_like(real), real + 0.5 * torch.randn_like(real)
    assert torch.allclose(ssim(real, real), torch.ones(4))
    assert (psnr(near, real) > psnr(far, real)).all() and (ssim(near, real) > ssim(far, real)).all()
    assert abs(psnr(real + 0.1, real)[0].item() - 10 * np.log10(4 / 0.01)) < 1e-3


def test_cascade_stages_write_their_checkpoints(tiny_cascade_paths):
    base, superres = tiny_cascade_paths
    assert load_checkpoint(base, "decoder")["config"]["unet"]["image_size"] == 14
    state = load_checkpoint(superres, "superres")
    assert state["config"]["low_res_size"] == 14 and state["config"]["unet"]["low_res_channels"] == 1
    metrics = json.loads(superres.with_suffix(".json").read_text())
    assert metrics["stage"] == "superres" and metrics["image_size"] == 28 and metrics["steps"] == 3
    assert (superres.parent / "s" / "samples_final.png").exists()


def generate(tmp_path, clip_path, decoder_path, superres_path, *extra):
    return run_cli(generate_images.main, ["--clip_model_path", clip_path, "--decoder_path", decoder_path, "--superres_path", superres_path,
                                          "--steps", 2, "--superres_steps", 2, "--output", tmp_path / "grid.png", "--npz", tmp_path / "out.npz", *extra])


def test_cascade_through_the_cli_writes_full_size_images(tmp_path, tiny_clip_path, tiny_cascade_paths):
    base, superres = tiny_cascade_paths
    assert generate(tmp_path, tiny_clip_path, base, superres, "--prompt", "six", "7", "--num_samples", 2, "--thresholding", "dynamic",
                    "--augmentation_level", 0.2, "--gif", tmp_path / "t.gif") == 0
    data = np.load(tmp_path / "out.npz")
    assert data["images"].shape == (4, 1, 28, 28) and data["prompts"].tolist() == ["six", "six", "7", "7"]
    assert (tmp_path / "grid.png").exists() and (tmp_path / "t.gif").exists()


@pytest.mark.parametrize("case", ["full_size_base", "superres_as_base", "base_as_superres", "other_clip", "bad_level"])
def test_cascade_bad_inputs(capsys, tmp_path, tiny_clip_path, tiny_cascade_paths, tiny_decoder_path, case):
    base, superres = tiny_cascade_paths
    other_clip = tmp_path / "other_clip.pt"
    if case == "other_clip":  # the same CLIP with one weight changed: its embedding space is another
        state = load_checkpoint(tiny_clip_path, "clip")
        state["model"]["text_encoder.projection.weight"] += 0.01
        save_checkpoint(other_clip, "clip", {k: v for k, v in state.items() if k not in ("kind", "format_version")})
    decoder_path, superres_path, clip_path, extra, match = {
        "full_size_base": (tiny_decoder_path, superres, tiny_clip_path, [], "upscales 14x14 images but the base decoder"),
        "superres_as_base": (superres, superres, tiny_clip_path, [], "holds a 'superres' model"),
        "base_as_superres": (base, base, tiny_clip_path, [], "holds a 'decoder' model"),
        "other_clip": (base, superres, other_clip, [], "trained on another CLIP checkpoint"),
        "bad_level": (base, superres, tiny_clip_path, ["--augmentation_level", 1.5], "--augmentation_level must be in [0, 1]"),
    }[case]
    assert_one_line_error(capsys, generate(tmp_path, clip_path, decoder_path, superres_path, "--prompt", "six", *extra), match)
