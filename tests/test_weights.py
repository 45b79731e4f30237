"""Shared weights (safetensors): exact round trips, one-line errors for tampered files, and the checkpoints/ -> pretrained/ fallback."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

import generate_images
import utils.checkpoints as checkpoints
from conftest import assert_one_line_error, run_cli
from models.conditioning import Conditioning
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.prior import Prior
from models.samplers import SamplingOptions
from utils.checkpoints import default_weights, export_weights, load_checkpoint
from utils.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import average_weights  # noqa: E402

FEW_STEPS = SamplingOptions(steps=3, seed=5)


@pytest.fixture(scope="module")
def shipped(tiny_clip_path, tiny_decoder_path, tiny_unclip_paths, tiny_cascade_paths, tmp_path_factory):
    """The tiny models exported as a pretrained/ folder: {stage name: path}."""
    folder = tmp_path_factory.mktemp("pretrained")
    sources = {"clip": tiny_clip_path, "decoder": tiny_decoder_path, "decoder_image": tiny_unclip_paths[0], "prior": tiny_unclip_paths[1],
               "decoder_14px": tiny_cascade_paths[0], "superres": tiny_cascade_paths[1]}
    return {name: export_weights(path, folder / f"{name}.safetensors") for name, path in sources.items()}


def test_weights_hold_no_training_state_and_round_trip_every_field(tiny_decoder_path, shipped):
    original, weights = load_checkpoint(tiny_decoder_path, "decoder"), load_checkpoint(shipped["decoder"], "decoder")
    assert "training" in original and set(weights) == {"kind", "format_version", "config", "ema"}
    assert weights["config"] == original["config"]  # tuples stay tuples through the JSON metadata
    assert all(torch.equal(weights["ema"][k], v) for k, v in original["ema"].items()) and weights["ema"].keys() == original["ema"].keys()
    with safe_open(str(shipped["decoder"]), framework="pt") as f:  # the metadata is plain JSON, readable by any safetensors reader
        assert json.loads(f.metadata()["checkpoint"])["kind"] == "decoder"
    assert shipped["decoder"].stat().st_size < tiny_decoder_path.stat().st_size


def test_shipped_weights_give_the_same_images_as_the_models_they_came_from(tiny_clip_path, tiny_decoder_path, tiny_unclip_paths, shipped):
    clip, clip_shipped = load_clip(str(tiny_clip_path)), load_clip(str(shipped["clip"]))
    cond = ClipConditioner(clip).text(["six", "3"])
    assert torch.equal(cond.embedding, ClipConditioner(clip_shipped).text(["six", "3"]).embedding)
    decoder, decoder_shipped = Decoder.load(str(tiny_decoder_path), clip=clip), Decoder.load(str(shipped["decoder"]), clip=clip_shipped)
    assert torch.equal(decoder.generate(cond, FEW_STEPS), decoder_shipped.generate(cond, FEW_STEPS))
    prior, prior_shipped = Prior.load(str(tiny_unclip_paths[1]), clip=clip), Prior.load(str(shipped["prior"]), clip=clip_shipped)
    assert torch.equal(prior.sample(cond, FEW_STEPS), prior_shipped.sample(cond, FEW_STEPS))


def tampered(path, tmp_path, change):
    """A copy of the weights at ``path`` with ``change(tensors, metadata)`` applied."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        tree = json.loads(f.metadata()["checkpoint"])
    change(tensors, tree)
    out = tmp_path / f"tampered_{path.name}"
    save_file(tensors, str(out), metadata={"checkpoint": json.dumps(tree)})
    return out


def other_clip(tensors, tree):
    """Tampering that makes a CLIP another one: its text projection, which the fingerprint hashes, changes."""
    tensors["model.text_encoder.projection.weight"] = tensors["model.text_encoder.projection.weight"] * 1.01


def test_tampered_weights_get_one_line_errors(tiny_clip_path, shipped, tmp_path):
    def reshape(tensors, tree):
        tensors["ema.head.2.weight"] = torch.zeros(3, 3)  # the UNet's last layer

    def relabel(tensors, tree):
        tree["kind"] = "prior"

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(shipped["decoder"].read_bytes()[:1000])
    clip = load_clip(str(tiny_clip_path))
    cases = [(lambda: Decoder.load(str(tampered(shipped["decoder"], tmp_path, reshape)), clip=clip), "damaged decoder checkpoint"),
             (lambda: Decoder.load(str(tampered(shipped["decoder"], tmp_path, relabel)), clip=clip), "holds a 'prior' model"),
             (lambda: Decoder.load(str(shipped["clip"])), "holds a 'clip' model"),
             (lambda: Decoder.load(str(truncated)), "corrupt"),
             (lambda: load_clip(str(shipped["decoder"])), "holds a 'decoder' model")]
    for load, match in cases:
        with pytest.raises(UserError, match=match) as error:
            load()
        assert "\n" not in str(error.value)


def test_weights_trained_on_another_clip_are_refused(shipped, tmp_path, capsys):
    clip = tampered(shipped["clip"], tmp_path, other_clip)
    assert_one_line_error(capsys, run_cli(generate_images.main, ["--clip_model_path", clip, "--decoder_path", shipped["decoder"], "--steps", 2,
                                                                 "--output", tmp_path / "grid.png"]), "trained on another CLIP")


def test_generation_falls_back_to_pretrained_exactly_where_checkpoints_lack_a_stage(shipped, tiny_decoder_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", shipped["clip"].parent)
    assert default_weights("decoder") == shipped["decoder"]
    assert default_weights("decoder_image_14px") == checkpoints.CHECKPOINT_DIR / "decoder_image_14px.pt"  # neither: the error names checkpoints/

    def used(*extra):
        capsys.readouterr()
        assert run_cli(generate_images.main, ["--prompt", "six", "--num_samples", 2, "--steps", 2, "--output", tmp_path / "grid.png", *extra]) == 0
        line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("weights: "))
        return line

    assert used() == f"weights: CLIP {shipped['clip']}, decoder {shipped['decoder']}"
    assert "prior " + str(shipped["prior"]) in used("--pipeline", "prior") and "decoder_image" in used("--pipeline", "prior")
    assert f"super-resolution {shipped['superres']}" in used("--pipeline", "cascade")
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tiny_decoder_path, tmp_path / "checkpoints" / "decoder.pt")  # the user trained a decoder (on the same CLIP here)
    assert used() == f"weights: CLIP {shipped['clip']}, decoder checkpoints/decoder.pt"


def test_every_mode_runs_from_shipped_weights_alone(shipped, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", shipped["clip"].parent)
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "digit.png")
    for extra in (["--prompt", "six"], ["--prompt", "six", "--pipeline", "prior"], ["--prompt", "six", "--pipeline", "cascade"],
                  ["--image", tmp_path / "digit.png"], ["--interpolate", "three", "eight", "--pipeline", "prior"]):
        assert run_cli(generate_images.main, [*extra, "--num_samples", 2, "--steps", 2, "--output", tmp_path / "grid.png"]) == 0, extra
    assert_one_line_error(capsys, run_cli(generate_images.main, ["--prompt", "six", "--pipeline", "cascade", "--prior_path", shipped["prior"]]),
                          "belongs to --pipeline prior")


def test_a_decoder_trains_on_the_shipped_clip(shipped, tmp_path):
    import unclip_train

    path = tmp_path / "mine.pt"
    assert run_cli(unclip_train.main, ["--clip_model_path", shipped["clip"], "--steps", 2, "--batch_size", 4, "--channels", "8,16", "--train_subset", 40,
                                       "--sample_every", 0, "--save_path", path, "--output_dir", tmp_path / "out"]) == 0
    Decoder.load(str(path), clip=load_clip(str(shipped["clip"])))  # its fingerprint is the shipped CLIP's


def test_your_clip_with_a_shipped_stage_says_how_to_fix_it(shipped, tmp_path, monkeypatch, capsys):
    """The user trained only CLIP: the shipped decoder does not fit it, and the one-line error names both ways out."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", shipped["clip"].parent)
    mine = load_checkpoint(tampered(shipped["clip"], tmp_path, other_clip), "clip")
    checkpoints.save_checkpoint(tmp_path / "checkpoints" / "clip.pt", "clip", {k: v for k, v in mine.items() if k not in ("kind", "format_version")})
    code = run_cli(generate_images.main, ["--prompt", "six", "--num_samples", 2, "--steps", 2, "--output", tmp_path / "grid.png"])
    assert_one_line_error(capsys, code, "give --clip_model_path")


def test_a_file_can_name_the_guidance_it_samples_at(tiny_clip_path, tiny_decoder_path, shipped, tmp_path, capsys):
    """A release writes its model card's guidance into the text decoder's weights; generate_images.py samples at it unless
    --guidance_scale says otherwise. Files that name none (every training checkpoint) keep the default; a bad value is one line."""
    from models.prior import PRIOR_SAMPLING
    from models.samplers import DEFAULT_GUIDANCE_SCALE
    named = export_weights(tiny_decoder_path, tmp_path / "decoder.safetensors", {"sampling": {"guidance_scale": 1.6}})
    assert Decoder.load(str(named)).guidance_scale == 1.6
    assert Decoder.load(str(tiny_decoder_path)).guidance_scale == Decoder.load(str(shipped["decoder"])).guidance_scale == DEFAULT_GUIDANCE_SCALE
    assert Prior.load(str(shipped["prior"])).guidance_scale == PRIOR_SAMPLING.guidance_scale
    common = ["--clip_model_path", tiny_clip_path, "--decoder_path", named, "--prompt", "six", "--num_samples", 2, "--steps", 2, "--npz", tmp_path / "a.npz"]
    assert run_cli(generate_images.main, common + ["--output", tmp_path / "own.png"]) == 0
    assert "guidance 1.6: the one the decoder's file names" in capsys.readouterr().out
    assert run_cli(generate_images.main, common + ["--output", tmp_path / "explicit.png", "--guidance_scale", "1.6", "--npz", tmp_path / "b.npz"]) == 0
    assert "the decoder's file names" not in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"])  # the same scale, the same images

    def bad_scale(tensors, tree):
        tree["sampling"]["guidance_scale"] = "lots"
    with pytest.raises(UserError, match="names no usable guidance scale") as error:
        Decoder.load(str(tampered(named, tmp_path, bad_scale)))
    assert "\n" not in str(error.value)


def test_checkpoints_are_written_readable_like_any_file(tmp_path):
    """Written through a private temporary file and renamed into place, a checkpoint still gets the umask's mode (0644 under
    022), not mkstemp's 0600: shipped weights and checkpoints stay readable by the other users of a shared machine."""
    import os
    previous = os.umask(0o022)
    try:
        for name in ("c.pt", "c.safetensors"):
            path = checkpoints.save_checkpoint(tmp_path / name, "judge", {"model": {"w": torch.zeros(2)}})
            assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(previous)


def test_averaged_weights_are_the_mean_of_runs_with_one_config(tiny_decoder_path, tiny_clip_path, tmp_path, capsys):
    """benchmarks/average_weights.py: a model soup of two runs is their parameters' mean and samples like any decoder;
    files of other configs or kinds, or a single file, get one line."""
    first = load_checkpoint(tiny_decoder_path, "decoder")
    shifted = {**{k: v for k, v in first.items() if k not in ("kind", "format_version")}, "ema": {k: v + 1.0 for k, v in first["ema"].items()}}
    second = checkpoints.save_checkpoint(tmp_path / "second.pt", "decoder", shifted)
    output = tmp_path / "soup.safetensors"
    assert run_cli(average_weights.main, [tiny_decoder_path, second, "--output", output]) == 0
    soup = load_checkpoint(output, "decoder")
    assert "training" not in soup and soup["config"] == first["config"]
    assert all(torch.allclose(soup["ema"][k], first["ema"][k] + 0.5) for k in first["ema"])
    images = Decoder.load(str(output), clip=load_clip(str(tiny_clip_path))).generate(
        ClipConditioner(load_clip(str(tiny_clip_path))).text(["six"]), SamplingOptions(steps=2, seed=0))
    assert images.shape == (1, 1, 28, 28) and torch.isfinite(images).all()

    other = checkpoints.save_checkpoint(tmp_path / "other.pt", "decoder", {**shifted, "config": {**first["config"], "condition": "image"}})
    for argv, message in (([tiny_decoder_path, other], "cannot be averaged"), ([tiny_decoder_path], "at least two"),
                          ([tiny_decoder_path, tiny_clip_path], "is needed")):
        capsys.readouterr()
        assert_one_line_error(capsys, run_cli(average_weights.main, [*argv, "--output", tmp_path / "bad.pt"]), message)
    assert not (tmp_path / "bad.pt").exists()
