"""The DALL-E 2 path through the CLIs: prior training, prompt -> prior -> decoder, variations, interpolation."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import generate_images
import unclip_train
from conftest import assert_one_line_error, run_cli
from utils.images import to_signed_float
from models.pipeline import ClipConditioner, load_clip
from training.stages import DecoderStage
from training.unclip_configs import DecoderTrainingConfig
from utils.checkpoints import load_checkpoint


def generate(tmp_path, clip_path, decoder_path, *extra):
    return run_cli(generate_images.main, ["--clip_model_path", clip_path, "--decoder_path", decoder_path, "--steps", 2,
                                          "--output", tmp_path / "grid.png", "--npz", tmp_path / "out.npz", *extra])


def test_prior_checkpoint_and_metrics(tiny_unclip_paths):
    _, prior = tiny_unclip_paths
    state = load_checkpoint(prior, "prior")
    assert state["config"]["prior"]["embed_dim"] == 64 and state["training"]["step"] == 3
    quality = json.loads(prior.with_suffix(".json").read_text())["prior_quality"]
    for form in ("word", "numeral"):
        assert {"generated_cosine_to_real", "text_cosine_to_real", "zero_shot_accuracy"} <= set(quality[form])


def test_prompt_prior_decoder(tmp_path, tiny_clip_path, tiny_unclip_paths):
    decoder, prior = tiny_unclip_paths
    assert generate(tmp_path, tiny_clip_path, decoder, "--prompt", "six", "3", "--num_samples", 2, "--prior_path", prior, "--num_candidates", 3) == 0
    data = np.load(tmp_path / "out.npz")
    assert data["images"].shape == (4, 1, 28, 28) and data["prompts"].tolist() == ["six", "six", "3", "3"]


def write_png(path, size, mode="L"):
    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def test_variations_of_images_including_other_sizes(tmp_path, tiny_clip_path, tiny_unclip_paths):
    decoder, _ = tiny_unclip_paths
    small, big_rgb = write_png(tmp_path / "a.png", 28), write_png(tmp_path / "b.png", 40, "RGB")
    with pytest.warns(UserWarning, match="is 40x40; resized to 28x28"):
        assert generate(tmp_path, tiny_clip_path, decoder, "--image", small, big_rgb, "--num_samples", 3) == 0
    assert np.load(tmp_path / "out.npz")["images"].shape == (6, 1, 28, 28)


def test_interpolation_between_images_and_prompts(tmp_path, tiny_clip_path, tiny_unclip_paths):
    decoder, prior = tiny_unclip_paths
    a, b = write_png(tmp_path / "a.png", 28), write_png(tmp_path / "b.png", 28)
    assert generate(tmp_path, tiny_clip_path, decoder, "--interpolate", a, b, "--num_samples", 5) == 0
    assert np.load(tmp_path / "out.npz")["images"].shape == (5, 1, 28, 28)
    assert generate(tmp_path, tiny_clip_path, decoder, "--interpolate", "three", "eight", "--num_samples", 4, "--prior_path", prior) == 0


@pytest.mark.parametrize("case", ["unreadable", "missing", "prompt_without_prior", "text_decoder", "prior_as_decoder", "decoder_as_prior", "two_modes"])
def test_unclip_bad_inputs(capsys, tmp_path, tiny_clip_path, tiny_unclip_paths, tiny_decoder_path, case):
    decoder, prior = tiny_unclip_paths
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    argv, match = {
        "unreadable": (["--image", broken], "cannot read image"),
        "missing": (["--image", tmp_path / "none.png"], "does not exist"),
        "prompt_without_prior": (["--interpolate", "three", "eight"], "give --pipeline prior"),
        "text_decoder": (["--prompt", "six", "--prior_path", prior, "--decoder_path", tiny_decoder_path], "needs an image-conditioned decoder"),
        "prior_as_decoder": (["--prompt", "six", "--prior_path", prior, "--decoder_path", prior], "holds a 'prior' model"),
        "decoder_as_prior": (["--prompt", "six", "--prior_path", decoder], "holds a 'decoder' model"),
        "two_modes": (["--prompt", "six", "--image", broken], "not several"),
    }[case]
    if "--decoder_path" in argv:
        i = argv.index("--decoder_path")
        decoder, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    assert_one_line_error(capsys, generate(tmp_path, tiny_clip_path, decoder, *argv), match)


def test_time_budget_stops_training_early(capsys, tmp_path, tiny_clip_path):
    argv = ["--clip_model_path", tiny_clip_path, "--stage", "prior", "--prior_width", 16, "--prior_depth", 1, "--steps", 100000,
            "--max_minutes", 0.002, "--batch_size", 8, "--sample_every", 0, "--save_path", tmp_path / "p.pt", "--output_dir", tmp_path / "o"]
    assert run_cli(unclip_train.main, argv) == 0
    assert "budget (--max_minutes) is spent" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "p.pt", "prior")["training"]["step"] < 100000


def test_image_embedding_noise_stays_on_the_sphere_near_the_embedding(tiny_clip_path, embedded_splits):
    splits = embedded_splits.subset(64, seed=0)
    conditioner = ClipConditioner(load_clip(str(tiny_clip_path)))
    images, indices = to_signed_float(splits.train_images[:16]), torch.arange(16)
    embeddings = {}
    for noise in (0.0, 0.25):
        config = DecoderTrainingConfig(clip_model_path=str(tiny_clip_path), condition="image", embedding_noise=noise, channels="8,16")
        stage = DecoderStage(config, conditioner, splits)
        embeddings[noise] = stage.batch(images, [""] * 16, indices, torch.Generator().manual_seed(0))[1].embedding
        clean = stage.cache.image_embeddings[indices]
    assert torch.equal(embeddings[0.0], clean)
    cosine = (embeddings[0.25] * clean).sum(-1)
    assert torch.allclose(embeddings[0.25].norm(dim=-1), torch.ones(16), atol=1e-5)
    assert (cosine < 0.999).all() and (cosine > 0.9).all()  # moved, but only a little (norm ~0.25 -> cosine ~0.97)


def test_embedding_augmentation_conditions_on_a_moved_copy_and_keeps_the_target(tiny_clip_path, embedded_splits):
    splits = embedded_splits.subset(64, seed=0)
    conditioner = ClipConditioner(load_clip(str(tiny_clip_path)))
    images, indices = to_signed_float(splits.train_images[:16]), torch.arange(16)
    config = DecoderTrainingConfig(clip_model_path=str(tiny_clip_path), condition="image", embedding_augmentation=True, channels="8,16")
    stage = DecoderStage(config, conditioner, splits)
    target, cond = stage.batch(images, [""] * 16, indices, torch.Generator().manual_seed(0))
    clean = stage.cache.image_embeddings[indices]
    cosine = (cond.embedding * clean).sum(-1)
    assert torch.equal(target, stage.bundle.encode(images))  # the decoder still learns the original image (in its pixel space)
    assert torch.allclose(cond.embedding.norm(dim=-1), torch.ones(16), atol=1e-5)
    assert (cosine < 0.9999).all() and (cosine > 0.5).all()  # the embedding of a nearby view, not of the image itself


@pytest.mark.parametrize("argv,match", [
    (["--condition", "image", "--embedding_noise", -1], "--embedding_noise must be 0 or positive"),
    (["--condition", "text", "--embedding_noise", 0.25], "--embedding_noise needs --condition image"),
    (["--condition", "text", "--embedding_augmentation"], "--embedding_augmentation needs --condition image"),
])
def test_bad_embedding_noise_is_refused(capsys, tmp_path, tiny_clip_path, argv, match):
    argv = ["--clip_model_path", tiny_clip_path, *argv, "--save_path", tmp_path / "d.pt"]
    assert_one_line_error(capsys, run_cli(unclip_train.main, argv), match)


def test_dropout_is_active_while_training_and_off_when_sampling(tiny_clip_path, embedded_splits):
    splits = embedded_splits.subset(64, seed=0)
    conditioner = ClipConditioner(load_clip(str(tiny_clip_path)))
    config = DecoderTrainingConfig(clip_model_path=str(tiny_clip_path), dropout=0.5, channels="8,16")
    bundle = DecoderStage(config, conditioner, splits).bundle
    assert bundle.config.unet.dropout == 0.5  # saved with the model config
    x, t, cond = torch.randn(4, 1, 28, 28), torch.full((4,), 500), conditioner.text(["six"] * 4)
    with torch.no_grad():
        for parameter in bundle.model.parameters():  # as if trained: the blocks' zero-initialised output layers would hide the dropout
            parameter.normal_(0, 0.1)
        bundle.model.train()
        assert not torch.equal(bundle.model(x, t, cond), bundle.model(x, t, cond))  # a fresh dropout mask each pass
        bundle.model.eval()
        assert torch.equal(bundle.model(x, t, cond), bundle.model(x, t, cond))


@pytest.mark.parametrize("value", [-0.1, 1])
def test_impossible_dropout_is_refused(capsys, tmp_path, tiny_clip_path, value):
    argv = ["--clip_model_path", tiny_clip_path, "--dropout", value, "--save_path", tmp_path / "d.pt"]
    assert_one_line_error(capsys, run_cli(unclip_train.main, argv), "--dropout must be at least 0 and below 1")
    assert not (tmp_path / "d.pt").exists()
