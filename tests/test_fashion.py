"""Fashion-MNIST end to end (issue 19): every stage trains on ``--dataset fashion`` with style captions, every
pipeline generates from a clothing prompt, and the judge is the dataset's own.

The data is a tiny IDX folder of random images (CI has no Debian package); ``--data_dir`` points every script at it,
and the stages after CLIP take the dataset and folder from the CLIP checkpoint.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import clip_train
import generate_images
import unclip_train
from conftest import assert_one_line_error, run_cli
from dataloading.datasets import load_dataset
from evaluation.judge import default_judge_path, load_or_train_judge
from test_data import write_idx
from utils.checkpoints import CHECKPOINT_DIR, load_checkpoint


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """240 training and 60 test 'garments': random pixels, labels cycling through the ten classes."""
    folder = tmp_path_factory.mktemp("fashion_idx")
    rng = np.random.default_rng(0)
    for part, n in (("train", 240), ("t10k", 60)):
        images = rng.integers(0, 256, (n, 28, 28)) * (rng.random((n, 1, 1)) < 0.7)  # some images dark, so brightness varies
        write_idx(folder / f"{part}-images-idx3-ubyte", images, compress=False)
        write_idx(folder / f"{part}-labels-idx1-ubyte", np.arange(n) % 10, compress=False)
    return folder


@pytest.fixture(scope="module")
def fashion_models(fashion_dir, tmp_path_factory):
    """{stage: checkpoint path} for CLIP and every diffusion stage, a few steps each."""
    folder = tmp_path_factory.mktemp("fashion_models")
    paths = {name: folder / f"{name}.pt" for name in ("clip", "decoder", "decoder_image", "prior", "decoder_14px", "superres")}
    assert run_cli(clip_train.main, ["--dataset", "fashion", "--data_dir", fashion_dir, "--captions", "style", "--text_pooling", "max",
                                     "--epochs", 1, "--batch_size", 32, "--save_path", paths["clip"], "--output_dir", folder / "clip"]) == 0
    common = ["--clip_model_path", paths["clip"], "--steps", 2, "--batch_size", 8, "--sample_every", 0, "--captions", "style"]
    small = ["--channels", "8,16"]
    flags = {"decoder": small, "decoder_image": [*small, "--condition", "image"], "prior": ["--stage", "prior", "--prior_width", 16, "--prior_depth", 1],
             "decoder_14px": [*small, "--resolution", 14], "superres": [*small, "--stage", "superres"]}
    for name, extra in flags.items():
        assert run_cli(unclip_train.main, [*common, *extra, "--save_path", paths[name], "--output_dir", folder / name]) == 0, name
    return paths


def test_every_stage_trains_on_fashion_and_every_pipeline_draws_clothes(capsys, tmp_path, fashion_models):
    for name, path in fashion_models.items():
        kind = {"clip": "clip", "prior": "prior", "superres": "superres"}.get(name, "decoder")
        data = load_checkpoint(path, kind)
        assert (data["dataset"] if kind == "clip" else data["config"]["dataset"]) == "fashion", name
    base = ["--clip_model_path", fashion_models["clip"], "--steps", 2, "--num_samples", 2, "--prompt", "an ankle boot", "a large bright pullover"]
    runs = {"decoder": ["--decoder_path", fashion_models["decoder"]],
            "prior": ["--prior_path", fashion_models["prior"], "--decoder_path", fashion_models["decoder_image"]],
            "cascade": ["--decoder_path", fashion_models["decoder_14px"], "--superres_path", fashion_models["superres"], "--superres_steps", 2]}
    for pipeline, extra in runs.items():
        output = tmp_path / f"{pipeline}.png"
        assert run_cli(generate_images.main, [*base, *extra, "--output", output, "--npz", tmp_path / f"{pipeline}.npz"]) == 0, pipeline
        assert output.stat().st_size > 0 and np.load(tmp_path / f"{pipeline}.npz")["images"].shape == (4, 1, 28, 28)
    assert str(tmp_path / "cascade.png") in capsys.readouterr().out


def test_a_style_word_of_another_dataset_is_text_like_any_other(capsys, tmp_path, fashion_models):
    """'a thick six' means nothing to the clothes model, but it is text: it generates, no crash."""
    code = run_cli(generate_images.main, ["--clip_model_path", fashion_models["clip"], "--decoder_path", fashion_models["decoder"], "--steps", 2,
                                          "--num_samples", 1, "--prompt", "a thick six slanted left", "--output", tmp_path / "odd.png"])
    assert code == 0
    assert_one_line_error(capsys, run_cli(generate_images.main, ["--clip_model_path", fashion_models["clip"], "--decoder_path", fashion_models["decoder"],
                                                                 "--prompt", "", "--output", tmp_path / "empty.png"]), "empty prompt")


def test_the_fashion_judge_is_trained_on_its_own_split_and_cached_apart_from_mnists(fashion_dir, tmp_path):
    assert default_judge_path("fashion") == CHECKPOINT_DIR / "judge_fashion.pt"
    splits = load_dataset("fashion", str(fashion_dir))
    judge, accuracy = load_or_train_judge(splits, tmp_path / "judge_fashion.pt")
    cached = load_checkpoint(tmp_path / "judge_fashion.pt", "judge")
    assert cached["dataset"] == "fashion" and cached["num_train"] == 240 and 0 <= accuracy <= 1
    predicted, features = judge.predict(splits.test_images)
    assert predicted.shape == (60,) and features.shape[0] == 60 and torch.all((predicted >= 0) & (predicted < 10))
