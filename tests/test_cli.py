"""The three scripts on good and bad input: one-line errors with exit code 2, files written on success."""
import subprocess
import sys

import numpy as np
import pytest

import clip_train
import generate_images
import unclip_train
from conftest import ROOT, assert_one_line_error, run_cli
from utils.checkpoints import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "0"], "--epochs must be positive"),
    (["--epochs", "-2"], "--epochs must be positive"),
    (["--batch_size", "0"], "--batch_size must be at least 2"),
    (["--dataset", "cifar"], "invalid choice"),
    (["--epochs", "many"], "invalid int value"),
])
def test_clip_train_rejects_bad_arguments(capsys, argv, match):
    assert_one_line_error(capsys, run_cli(clip_train.main, argv), match)


def test_clip_train_rejects_a_folder_without_idx_files(capsys, tmp_path):
    assert_one_line_error(capsys, run_cli(clip_train.main, ["--data_dir", tmp_path]), "lacks the IDX files")


def test_clip_train_resume_refuses_corrupt_and_wrong_kind_checkpoints(capsys, tmp_path, tiny_decoder_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(capsys, run_cli(clip_train.main, ["--resume", "--save_path", corrupt]), "corrupt")
    assert_one_line_error(capsys, run_cli(clip_train.main, ["--resume", "--save_path", tiny_decoder_path]), "holds a 'decoder' model")


def test_clip_train_writes_checkpoint_metrics_and_plots(tiny_clip_path):
    import json
    metrics = json.loads(tiny_clip_path.with_suffix(".json").read_text())
    for key in ("zero_shot_word", "zero_shot_numeral", "zero_shot_held_out", "retrieval_p10_word", "train_seconds", "config"):
        assert key in metrics
    plots = tiny_clip_path.parent / "plots"
    assert (plots / "clip_loss.png").stat().st_size > 1000 and (plots / "clip_similarity.png").stat().st_size > 1000


def test_unclip_train_bad_inputs(capsys, tmp_path, tiny_clip_path, tiny_decoder_path):
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tmp_path / "missing.pt"]), "does not exist")
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_decoder_path]), "holds a 'decoder' model")
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--steps", "0"]), "--steps must be positive")
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--channels", "8,x"]), "--channels")
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--condition", "image", "--cross_attention"]), "--cross_attention needs")


def test_unclip_train_resume_continues_the_step_count(tmp_path, tiny_clip_path):
    argv = ["--clip_model_path", tiny_clip_path, "--batch_size", 4, "--channels", "8,8", "--train_subset", 50, "--save_every", 1,
            "--sample_every", 0, "--save_path", tmp_path / "d.pt", "--output_dir", tmp_path / "out"]
    assert run_cli(unclip_train.main, argv + ["--steps", 2]) == 0
    assert run_cli(unclip_train.main, argv + ["--steps", 3, "--resume"]) == 0
    state = load_checkpoint(tmp_path / "d.pt", "decoder")
    assert state["training"]["step"] == 3 and len(state["training"]["history"]["loss"]) == 3


def generate(tmp_path, decoder_path, clip_path, *extra):
    return run_cli(generate_images.main, ["--clip_model_path", clip_path, "--decoder_path", decoder_path, "--steps", 2,
                                          "--output", tmp_path / "grid.png", *extra])


@pytest.mark.parametrize("extra,match", [
    (["--prompt", ""], "empty prompt"),
    (["--prompt", "☃☃ ☃"], "only characters the tokenizer does not know"),
    (["--prompt", "six", "--num_samples", "0"], "--num_samples must be between"),
    (["--prompt", "six", "--num_samples", "-5"], "--num_samples must be between"),
    (["--prompt", "six", "--num_samples", "100000000"], "--num_samples must be between"),
    (["--prompt", "six", "--steps", "0"], "--steps must be positive"),
    (["--prompt", "six", "--guidance_scale", "-1"], "--guidance_scale must be a finite number, 0 or more"),
    (["--prompt", "six", "--guidance_scale", "inf"], "--guidance_scale must be a finite number"),
    (["--prompt", "six", "--guidance_scale", "nan"], "--guidance_scale must be a finite number"),
    (["--prompt", "six", "--prior_guidance_scale", "inf"], "--prior_guidance_scale must be a finite number"),
    (["--prompt", "six", "--sampler", "euler"], "invalid choice"),
    (["--prompt", "six", "--guidance_from_t", "1000"], "guidance_from_t must be a timestep from 0 to 999"),
])
def test_generate_rejects_bad_input(capsys, tmp_path, tiny_decoder_path, tiny_clip_path, extra, match):
    assert_one_line_error(capsys, generate(tmp_path, tiny_decoder_path, tiny_clip_path, *extra), match)


def test_generate_refuses_missing_and_mismatched_checkpoints(capsys, tmp_path, tiny_decoder_path, tiny_clip_path):
    assert_one_line_error(capsys, generate(tmp_path, tmp_path / "none.pt", tiny_clip_path, "--prompt", "six"), "does not exist")
    assert_one_line_error(capsys, generate(tmp_path, tiny_clip_path, tiny_clip_path, "--prompt", "six"), "holds a 'clip' model")
    other = load_checkpoint(tiny_clip_path, "clip")
    other["model"]["text_encoder.projection.weight"] += 0.01  # another CLIP: same shapes, other weights
    save_checkpoint(tmp_path / "other_clip.pt", "clip", {k: v for k, v in other.items() if k not in ("kind", "format_version")})
    assert_one_line_error(capsys, generate(tmp_path, tiny_decoder_path, tmp_path / "other_clip.pt", "--prompt", "six"), "another CLIP")
    other["tokenizer"]["max_length"] = 20
    save_checkpoint(tmp_path / "other_tok.pt", "clip", {k: v for k, v in other.items() if k not in ("kind", "format_version")})
    assert_one_line_error(capsys, generate(tmp_path, tiny_decoder_path, tmp_path / "other_tok.pt", "--prompt", "six"), "another tokenizer")


def test_generate_writes_png_npz_gif_and_is_seeded(capsys, tmp_path, tiny_decoder_path, tiny_clip_path):
    args = ["--prompt", "six", "7", "--num_samples", 3, "--chunk_size", 4, "--seed", 5]
    assert generate(tmp_path, tiny_decoder_path, tiny_clip_path, *args, "--npz", tmp_path / "a.npz", "--gif", tmp_path / "a.gif") == 0
    out = capsys.readouterr().out
    for name in ("grid.png", "a.npz", "a.gif"):
        assert (tmp_path / name).stat().st_size > 0 and name in out
    data = np.load(tmp_path / "a.npz")
    assert data["images"].shape == (6, 1, 28, 28) and data["images"].dtype == np.uint8
    assert data["prompts"].tolist() == ["six"] * 3 + ["7"] * 3
    assert generate(tmp_path, tiny_decoder_path, tiny_clip_path, *args, "--npz", tmp_path / "b.npz") == 0
    assert np.array_equal(np.load(tmp_path / "b.npz")["images"], data["images"])


def test_scripts_run_as_programs(tmp_path):
    """The real entry points: a one-line error and exit code 2 from a fresh interpreter."""
    result = subprocess.run([sys.executable, "generate_images.py", "--decoder_path", str(tmp_path / "no.pt"), "--clip_model_path", str(tmp_path / "no.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_image_conditioned_decoder_trains_and_generate_explains_the_prior(capsys, tmp_path, tiny_clip_path):
    argv = ["--clip_model_path", tiny_clip_path, "--condition", "image", "--steps", 2, "--batch_size", 4, "--channels", "8,8",
            "--train_subset", 50, "--sample_every", 0, "--save_path", tmp_path / "img.pt", "--output_dir", tmp_path / "out"]
    assert run_cli(unclip_train.main, argv) == 0
    state = load_checkpoint(tmp_path / "img.pt", "decoder")
    assert state["config"]["condition"] == "image" and state["config"]["unet"]["token_dim"] == 0
    capsys.readouterr()
    assert_one_line_error(capsys, generate(tmp_path, tmp_path / "img.pt", tiny_clip_path, "--prompt", "six"), "or give --pipeline prior")


def test_download_failure_is_one_line_not_a_hang(capsys, tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    code = run_cli(clip_train.main, ["--download", "--data_dir", tmp_path])
    assert_one_line_error(capsys, code, "download of mnist failed")
