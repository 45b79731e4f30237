"""The logit pixel space: a bijection that stretches black and full ink, used by decoders end to end."""
import pytest
import torch

import unclip_train
from conftest import assert_one_line_error, run_cli
from models.pipeline import ClipConditioner, Decoder, DecoderConfig, load_clip
from models.pixel_space import PixelSpace
from models.samplers import SamplingOptions
from test_training_loop import decoder_argv
from utils.checkpoints import load_checkpoint, save_checkpoint
from utils.images import to_signed_float

LEVELS = to_signed_float(torch.arange(256, dtype=torch.uint8))  # every grey level in [-1, 1]


@pytest.mark.parametrize("kind, delta", [("linear", 0.01), ("logit", 0.01), ("logit", 0.001)])
def test_every_grey_level_survives_the_round_trip(kind, delta):
    space = PixelSpace(kind, delta)
    y = space.encode(LEVELS)
    assert y.min() >= -1 and y.max() <= 1 and (y.diff() > 0).all()  # onto [-1, 1], in order
    back = ((space.decode(y) + 1) * 127.5).round()
    assert torch.equal(back, torch.arange(256).float())


def test_logit_space_stretches_the_ends_and_squeezes_the_middle():
    y, linear_gap = PixelSpace("logit").encode(LEVELS), 2 / 255
    gaps = y.diff()
    assert gaps[0] > 8 * linear_gap and gaps[-1] > 8 * linear_gap  # level 0 -> 1 and 254 -> 255
    assert gaps[127] < linear_gap / 2  # the mid-greys
    assert y[0] == -1 and abs(y[-1] - 1) < 1e-6


def test_a_smaller_delta_widens_black_and_full_ink():
    wide, narrow = PixelSpace("logit", 0.001).encode(LEVELS).diff(), PixelSpace("logit", 0.01).encode(LEVELS).diff()
    assert wide[0] > 2 * narrow[0] and wide[-1] > 2 * narrow[-1]


def test_unknown_pixel_space_and_impossible_delta_are_refused(tmp_path, tiny_clip_path, capsys):
    with pytest.raises(Exception, match="unknown pixel space"):
        PixelSpace("sqrt")
    with pytest.raises(Exception, match="between 0 and 0.5"):
        PixelSpace("logit", 0.5)
    assert_one_line_error(capsys, run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "d.pt", "--logit_delta", 0)), "--logit_delta")


def test_old_decoder_configs_read_as_linear():
    d = DecoderConfig().to_dict()
    del d["pixel_space"], d["logit_delta"]
    assert DecoderConfig.from_dict(d).pixel_space == "linear" and DecoderConfig.from_dict(d).logit_delta == 0.01


def test_a_logit_decoder_trains_on_encoded_images_and_draws_pixels(tmp_path, tiny_clip_path):
    path = tmp_path / "d.pt"
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, path, "--steps", 120, "--warmup_steps", 5, "--save_every", 120,
                                                   "--pixel_space", "logit", "--logit_delta", 0.002)) == 0
    data = load_checkpoint(path, "decoder")
    assert data["config"]["pixel_space"] == "logit" and data["config"]["logit_delta"] == 0.002
    losses = [loss for _, loss in data["training"]["history"]["loss"]]
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:10]) / 10
    clip = load_clip(tiny_clip_path)
    decoder = Decoder.load(str(path), clip=clip)
    seen = []
    images = decoder.generate(ClipConditioner(clip).text(["six", "7"]), SamplingOptions(steps=4),
                              callback=lambda t, x, x0: seen.append(x0))
    assert images.shape == (2, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    assert len(seen) == 4 and all(x0.min() >= -1 and x0.max() <= 1 for x0 in seen)  # the callback is shown images
    assert torch.allclose(decoder.encode(images), PixelSpace("logit", 0.002).encode(images))


def test_a_run_saved_before_pixel_spaces_existed_resumes_as_linear_and_not_as_logit(tmp_path, tiny_clip_path, capsys):
    path = tmp_path / "d.pt"
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, path, "--steps", 3, "--pixel_space", "linear")) == 0
    data = load_checkpoint(path, "decoder")
    del data["config"]["pixel_space"]  # as the checkpoints of 2026-11 were written
    save_checkpoint(path, "decoder", {k: v for k, v in data.items() if k not in ("kind", "format_version")})
    assert_one_line_error(capsys, run_cli(unclip_train.main, decoder_argv(tiny_clip_path, path, "--steps", 6, "--resume")), "cannot resume")
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, path, "--steps", 6, "--pixel_space", "linear", "--resume")) == 0
    assert load_checkpoint(path, "decoder")["training"]["step"] == 6
