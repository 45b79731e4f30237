"""Data parallelism under torchrun, on the CPU with gloo: two processes train, stop on a time budget, resume, and
compute exactly the gradients that one process computes on the whole batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from utils.checkpoints import load_checkpoint

TIMEOUT = 240  # seconds: a rank left waiting in a collective would hang; this turns a hang into a failure


def torchrun(*args: object, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N`` (N=1: plain python) on the CPU; fails the test on a non-zero exit."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def first_gradients(trainer: str, out: Path, flags: list, processes: int) -> dict[str, torch.Tensor]:
    torchrun("tests/ddp_first_gradients.py", trainer, out, *flags, "--device", "cpu", processes=processes)
    return torch.load(out)


@pytest.mark.parametrize("trainer", ["clip", "decoder"])
def test_two_processes_at_half_the_batch_give_the_gradients_of_one(trainer, tiny_clip_path, tmp_path):
    if trainer == "clip":  # style captions: their fits matrix and the BatchNorm statistics both span the whole batch
        flags = ["--train_subset", 600, "--batch_size", 32, "--captions", "style"]
    else:
        flags = ["--clip_model_path", tiny_clip_path, "--train_subset", 200, "--batch_size", 8, "--channels", "8,16", "--cross_attention"]
    one = first_gradients(trainer, tmp_path / "one.pt", flags, processes=1)
    two = first_gradients(trainer, tmp_path / "two.pt", flags, processes=2)
    # rounding differs with the order of the sums; Adam's first update (about lr * sign(g)) magnifies it where g is near 0.
    # A real difference is far larger: BatchNorm on each half alone put CLIP's first gradients 8 % apart.
    for step, tolerance in (("first", 1e-5), ("second", 2e-4)):
        assert one[step].keys() == two[step].keys() and len(one[step]) > 10
        for name, grad in one[step].items():
            scale = float(grad.abs().max())
            torch.testing.assert_close(two[step][name], grad, rtol=0, atol=tolerance * scale, msg=f"{step} step, {name}")
    nonzero = [bool(grad.abs().max() > 0) for grad in one["second"].values()]
    assert sum(nonzero) >= 0.25 * len(nonzero)  # not a comparison of zeros (the UNet's zero-initialised layers pass none on at first)


def test_clip_trains_stops_on_its_budget_and_resumes_under_torchrun(tmp_path):
    path = tmp_path / "clip.pt"
    common = ["clip_train.py", "--device", "cpu", "--train_subset", 600, "--batch_size", 64, "--epochs", 3,
              "--save_path", path, "--output_dir", tmp_path / "plots"]
    first = torchrun(*common, "--max_minutes", 0.0001)
    assert "stopped after epoch 1 of 3" in first.stdout
    assert first.stdout.count("TinyCLIP:") == 1  # one process speaks
    assert load_checkpoint(path, "clip")["training"]["epoch"] == 1
    resumed = torchrun(*common, "--resume")
    assert "resumed" in resumed.stdout and "wrote" in resumed.stdout
    state = load_checkpoint(path, "clip")
    assert state["training"]["epoch"] == 3 and len(state["training"]["history"]["loss"]) == 3 * (600 // 64)


def test_decoder_trains_stops_on_its_budget_and_resumes_under_torchrun(tiny_clip_path, tmp_path):
    path = tmp_path / "decoder.pt"
    common = ["unclip_train.py", "--device", "cpu", "--clip_model_path", tiny_clip_path, "--train_subset", 200, "--batch_size", 8,
              "--channels", "8,16", "--sample_every", 0, "--save_every", 5, "--save_path", path, "--output_dir", tmp_path / "out"]
    first = torchrun(*common, "--steps", 100000, "--max_minutes", 0.002)
    assert "minute budget (--max_minutes) is spent" in first.stdout
    stopped = load_checkpoint(path, "decoder")["training"]
    assert 0 < stopped["step"] < 100000 and stopped["config"]["batch_size"] == 8
    metrics = json.loads(path.with_suffix(".json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == stopped["step"]
    resumed = torchrun(*common, "--steps", stopped["step"] + 6, "--max_minutes", 0, "--resume")
    assert f"resumed {path} at step {stopped['step']}" in resumed.stdout
    assert load_checkpoint(path, "decoder")["training"]["step"] == stopped["step"] + 6


def test_a_batch_that_does_not_split_evenly_is_refused(tiny_clip_path, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "unclip_train.py", "--device", "cpu",
               "--clip_model_path", tiny_clip_path, "--batch_size", 7, "--save_path", tmp_path / "d.pt"]
    result = subprocess.run(list(map(str, command)), cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode != 0
    assert "error: --batch_size 7 must be a multiple of the 2 processes" in result.stderr
