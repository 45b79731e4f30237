"""The release recipe's bookkeeping (benchmarks/release.py): which files a release judges and ships, and what its card shows.
Training and judging are the trainers' and decoder_quality.py's, tested elsewhere; a whole trial run is
``python benchmarks/release.py --scale 0.01``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import release  # noqa: E402
from conftest import assert_one_line_error  # noqa: E402


def test_a_stage_ships_the_ema_it_names():
    stages = {stage.name: stage for stage in release.STAGES}
    assert release.shipped_file(stages["decoder"]) == f"decoder_ema{stages['decoder'].shipped_ema}.pt"
    assert release.shipped_file(stages["prior"]) == "prior.pt"
    assert release.PIPELINES["text decoder"][0] == ["--decoder_path", release.shipped_file(stages["decoder"])]


def test_kept_stages_are_read_from_the_shipped_weights(tmp_path):
    files = release.WorkFiles(tmp_path, kept={"clip", "prior"})
    assert files("clip.pt").resolve() == (release.PRETRAINED_DIR / "clip.safetensors").resolve()
    assert not files("clip.pt").is_absolute()  # the model card prints it
    assert files("prior.pt").resolve() == (release.PRETRAINED_DIR / "prior.safetensors").resolve()
    assert files("decoder.pt") == tmp_path / "decoder.pt" and files("decoder_ema0.999.pt") == tmp_path / "decoder_ema0.999.pt"
    kept_decoder = release.WorkFiles(tmp_path, kept={"clip", "decoder"})
    shipped = release.shipped_file(next(stage for stage in release.STAGES if stage.name == "decoder"))
    assert kept_decoder(shipped).resolve() == (release.PRETRAINED_DIR / "decoder.safetensors").resolve()
    assert not kept_decoder("decoder.pt").exists()  # the main EMA of a kept decoder does not ship: its pipeline is left out


def test_the_card_shows_the_command_without_its_note():
    shown = release.shown_arguments(["--keep", "clip", "prior", "--card_note", "a paragraph", "--seed", "1", "--card_note=x"])
    assert shown == ["--keep", "clip", "prior", "--seed", "1"]


@pytest.mark.parametrize("keep, message", [(["prior"], "add clip to --keep"), (["clip", "nothing"], "invalid choice")])
def test_keep_takes_shipped_stages_with_their_clip(keep, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["release.py", "--keep", *keep])
    with pytest.raises(SystemExit) as exit_:
        release.main()
    assert_one_line_error(capsys, exit_.value.code, message)


def test_the_text_decoder_ships_the_guidance_its_card_judges():
    """The scale written into the shipped text decoder (generate_images.py's default for it) is one the release judges,
    so the notebook finds its row in quality.json; the other stages name none and sample at the default."""
    stages = {stage.name: stage for stage in release.STAGES}
    scale = stages["decoder"].guidance_scale
    assert stages["decoder"].extra_fields() == {"sampling": {"guidance_scale": scale}} and scale in release.PIPELINES["text decoder"][1]
    assert all(stage.extra_fields() is None for name, stage in stages.items() if name != "decoder")
