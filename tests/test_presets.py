"""Presets: the gpu preset changes only the defaults of flags the user did not give, and the run says which preset it took."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from training.presets import GPU_PRESET, apply_preset, choose_preset
from training.unclip_configs import DecoderTrainingConfig
from utils.cli import ArgumentParser, add_config_arguments, given_flags


def test_given_flags_are_the_ones_on_the_command_line():
    parser = ArgumentParser()
    add_config_arguments(parser, DecoderTrainingConfig)
    assert given_flags(parser, ["--batch_size", "32", "--no-resume", "--channels", "8,16"]) == {"batch_size", "resume", "channels"}
    assert given_flags(parser, []) == set()
    assert parser.parse_args([]).batch_size == 32  # the defaults are back afterwards


def test_the_gpu_preset_fills_only_what_was_not_given():
    values = {"preset": "gpu", "device": "cpu", "batch_size": 32, "lr": 2e-3, "channels": "32,48,64", "steps": 4000}
    lines = []
    adjusted = apply_preset("decoder", values, given={"batch_size"}, log=lines.append)
    assert adjusted["batch_size"] == 32  # given: kept
    assert adjusted["lr"] == GPU_PRESET["decoder"]["lr"] and adjusted["channels"] == GPU_PRESET["decoder"]["channels"]
    assert lines[0].startswith("preset gpu (asked for with --preset): ") and "--batch_size" not in lines[0]
    cpu = apply_preset("decoder", {**values, "preset": "cpu"}, given=set(), log=lines.append)
    assert cpu == {**values, "preset": "cpu"} and lines[1] == "preset cpu (asked for with --preset); the flags' own defaults"
    assert choose_preset("auto", "cpu") == ("cpu", "the run is on the CPU")


def test_unclip_train_runs_the_gpu_preset_on_request(tiny_clip_path, tmp_path, capsys):
    import unclip_train
    path = tmp_path / "decoder.pt"
    code = run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--preset", "gpu", "--device", "cpu", "--steps", 2, "--batch_size", 8,
                                       "--channels", "8,16", "--train_subset", 200, "--save_path", path, "--output_dir", tmp_path / "out"])
    assert code == 0
    assert "preset gpu (asked for with --preset): --lr 0.004, --warmup_steps 200" in capsys.readouterr().out
    config = json.loads(path.with_suffix(".json").read_text())["config"]
    assert config["lr"] == 4e-3 and config["batch_size"] == 8 and config["channels"] == "8,16" and config["max_minutes"] == 3.75
    assert json.loads(path.with_suffix(".json").read_text())["compiled"] is False  # compile defaults to on only on CUDA


def test_an_unknown_preset_is_one_line(capsys):
    import clip_train
    assert_one_line_error(capsys, run_cli(clip_train.main, ["--preset", "tpu"]), "invalid choice: 'tpu'")


def test_the_speed_benchmark_counts_the_same_flops_per_sample_at_any_batch(tmp_path):
    """benchmarks/gpu.py's figures beside samples/s: FLOPs per sample (independent of the batch) and the host's time per batch."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import gpu
    small, large = (gpu.diffusion_speed("decoder", "gpu", "cpu", tmp_path, warmup=0, steps=1, compile=False, batch_size=size) for size in (4, 8))
    assert small["channels"] == GPU_PRESET["decoder"]["channels"] and (small["batch_size"], large["batch_size"]) == (4, 8)
    assert small["gflop_per_sample"] == pytest.approx(large["gflop_per_sample"], rel=1e-3)
    assert 0.5 < small["gflop_per_sample"] < 2  # the 64,96,128 UNet at 28x28: ~0.83 GFLOP forward and backward
    assert small["host_ms_per_batch"] > 0 and small["seconds_per_step"] > 0


def test_the_speed_benchmark_profiles_each_phase_of_a_decoder_step(tmp_path):
    """benchmarks/gpu.py --profile: the host's time in each labelled phase of DiffusionRun.train_step, beside wall time."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import gpu
    row = gpu.profile_decoder_step("cpu", tmp_path, compile=False, steps=2, batch_size=4)
    assert set(row["host_ms_per_phase"]) == set(gpu.PHASES) and all(ms > 0 for ms in row["host_ms_per_phase"].values())
    assert row["wall_ms_per_step"] > sum(row["host_ms_per_phase"].values()) * 0.5 and row["device_busy_ms_per_step"] == 0  # no GPU here
    assert "aten::convolution" in row["table"]


def test_the_compile_mode_reaches_torch_compile(tiny_clip_path, tmp_path, monkeypatch):
    """--compile_mode reduce-overhead (CUDA graphs) is passed to torch.compile; without --compile the network runs as it is."""
    import torch
    from training.diffusion_trainer import DiffusionRun
    from training.unclip_configs import DecoderTrainingConfig
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    common = dict(clip_model_path=str(tiny_clip_path), device="cpu", train_subset=200, batch_size=8, channels="8,16",
                  save_path=str(tmp_path / "d.pt"), output_dir=str(tmp_path / "o"))
    run = DiffusionRun(DecoderTrainingConfig(compile=True, compile_mode="reduce-overhead", **common), log=lambda message: None)
    assert run.compiled_forward() is run.model and modes == ["reduce-overhead"]
    eager = DiffusionRun(DecoderTrainingConfig(compile=False, compile_mode="reduce-overhead", **common), log=lambda message: None)
    assert eager.compiled_forward() is eager.model and modes == ["reduce-overhead"]  # not compiled: the mode is not used
