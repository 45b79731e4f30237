"""Shared fixtures: tiny trained models made once per test session through the real CLIs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.cli import run_main  # noqa: E402


def pytest_report_header(config) -> str:
    """The device this session tests on: tests/test_gpu.py runs only where CUDA is."""
    import torch
    if torch.cuda.is_available():
        return f"device: CUDA, {torch.cuda.get_device_name(0)} (the GPU tests run)"
    return "device: CPU only, no CUDA GPU (tests/test_gpu.py is skipped)"


def assert_one_line_error(capsys, code: int, match: str) -> None:
    """The script exited with code 2 and printed exactly one error line, containing ``match``, and no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert code == 2, err
    assert len(errors) == 1 and match in errors[0], err
    assert not any("Traceback" in line for line in err)


def run_cli(main, argv: list[str]) -> int:
    """Run a script's main in-process as the shell would; returns its exit code."""
    try:
        run_main(main, [str(a) for a in argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="session")
def embedded_splits():
    from dataloading.datasets import load_dataset
    return load_dataset()


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> Path:
    """A CLIP trained for a few seconds on 1,500 digits (~95 % zero-shot)."""
    import clip_train
    folder = tmp_path_factory.mktemp("clip")
    path = folder / "clip.pt"
    code = run_cli(clip_train.main, ["--train_subset", 1500, "--epochs", 4, "--batch_size", 64, "--save_path", path, "--output_dir", folder / "plots"])
    assert code == 0 and path.exists()
    return path


@pytest.fixture(scope="session")
def tiny_decoder_path(tiny_clip_path, tmp_path_factory) -> Path:
    """A text-conditioned decoder with cross-attention, trained for a handful of steps."""
    import unclip_train
    folder = tmp_path_factory.mktemp("decoder")
    path = folder / "decoder.pt"
    code = run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--steps", 4, "--batch_size", 8, "--channels", "8,16",
                                       "--cross_attention", "--train_subset", 200, "--save_every", 2, "--sample_every", 0,
                                       "--save_path", path, "--output_dir", folder / "out"])
    assert code == 0 and path.exists()
    return path


@pytest.fixture(scope="session")
def tiny_unclip_paths(tiny_clip_path, tmp_path_factory) -> tuple[Path, Path]:
    """An image-conditioned decoder and a prior, each trained for a handful of steps: (decoder, prior)."""
    import unclip_train
    folder = tmp_path_factory.mktemp("unclip")
    common = ["--clip_model_path", tiny_clip_path, "--steps", 3, "--batch_size", 8, "--train_subset", 200, "--sample_every", 0]
    decoder, prior = folder / "decoder_image.pt", folder / "prior.pt"
    assert run_cli(unclip_train.main, common + ["--condition", "image", "--channels", "8,16", "--save_path", decoder, "--output_dir", folder / "d"]) == 0
    assert run_cli(unclip_train.main, common + ["--stage", "prior", "--prior_width", 16, "--prior_depth", 1, "--save_path", prior, "--output_dir", folder / "p"]) == 0
    return decoder, prior


@pytest.fixture(scope="session")
def tiny_cascade_paths(tiny_clip_path, tmp_path_factory) -> tuple[Path, Path]:
    """A 14x14 base decoder and a 14 -> 28 super-resolution model, each trained for a handful of steps: (base, superres)."""
    import unclip_train
    folder = tmp_path_factory.mktemp("cascade")
    common = ["--clip_model_path", tiny_clip_path, "--steps", 3, "--batch_size", 8, "--train_subset", 200, "--channels", "8,16"]
    base, superres = folder / "decoder_14px.pt", folder / "superres.pt"
    assert run_cli(unclip_train.main, common + ["--resolution", 14, "--sample_every", 0, "--save_path", base, "--output_dir", folder / "b"]) == 0
    assert run_cli(unclip_train.main, common + ["--stage", "superres", "--sample_every", 2, "--save_path", superres, "--output_dir", folder / "s"]) == 0
    return base, superres
