"""Presets: the defaults of the training flags, for the machine a run is on.

The dataclass defaults (training/unclip_configs.py, training/clip_trainer.py) are the
``cpu`` preset, sized to finish in minutes on a 2-core CPU. A GPU does one step of
batch 32 about as fast as a step of batch 256, so the ``gpu`` preset trains larger
batches of a wider UNet for more steps: the same few minutes, many more images.
The learning rate grows with the batch, by about the square root of the batch ratio
(the rule for Adam-type optimizers, Malladi et al. 2022), capped where the UNet
stayed stable on the CPU.

``--preset auto`` (the default) picks ``gpu`` when the run is on CUDA. Flags given on the
command line always win over a preset. They were run once on an H200 (session 16, BENCHMARKS.md):
CLIP in 37 s and the decoder's 4-minute budget made 5.2 minutes with start-up and compilation,
so the decoder's budget is now 3.75 minutes; the rest is not tuned yet.
"""
from __future__ import annotations

import os
from typing import Callable

from utils.config import option
from utils.errors import require
from utils.training import resolve_device

PRESETS = ("cpu", "gpu")
GPU_PRESET: dict[str, dict[str, object]] = {
    #            the CPU defaults:  batch 128, lr 3e-3, 15 epochs
    "clip": {"batch_size": 256, "lr": 4e-3, "epochs": 40},
    #            the CPU defaults:  batch 32, lr 2e-3, channels 32,48,64, 4,000 steps or 11 min
    "decoder": {"batch_size": 256, "lr": 4e-3, "warmup_steps": 200, "channels": "64,96,128", "steps": 8000, "max_minutes": 3.75,
                "save_every": 1000, "sample_every": 2000},
    "superres": {"batch_size": 256, "lr": 4e-3, "warmup_steps": 200, "channels": "64,96", "steps": 8000, "max_minutes": 4.0,
                 "save_every": 1000, "sample_every": 2000},
    #            the CPU defaults:  batch 256, lr 1e-3, 5,000 steps or 4 min
    "prior": {"batch_size": 1024, "lr": 2e-3, "steps": 10000, "max_minutes": 3.0, "save_every": 1000, "sample_every": 2000},
}


def preset_option():
    """The --preset field of every trainer's config."""
    return option("auto", "cpu or gpu: the defaults of the flags you do not pass (training/presets.py); auto: gpu on CUDA",
                  choices=["auto", *PRESETS])


def choose_preset(preset: str, device: str) -> tuple[str, str]:
    """(the preset a run uses, why) for ``--preset`` and ``--device``."""
    require(preset in ("auto", *PRESETS), f"unknown preset {preset!r}; choose auto, cpu or gpu")
    if preset != "auto":
        return preset, "asked for with --preset"
    on_cuda = resolve_device(device).type == "cuda"
    return ("gpu", "the run is on CUDA") if on_cuda else ("cpu", "the run is on the CPU")


def apply_preset(stage: str, values: dict, given: set[str], log: Callable[[str], None] = print) -> dict:
    """The config values of a run of ``stage`` ("clip", "decoder", "superres", "prior") with its preset's defaults in
    place of the defaults of flags not ``given`` on the command line; says which preset runs and why."""
    preset, reason = choose_preset(values["preset"], values["device"])
    changed = {name: value for name, value in GPU_PRESET[stage].items() if name not in given} if preset == "gpu" else {}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process says it
        settings = ", ".join(f"--{name} {value}" for name, value in changed.items())
        log(f"preset {preset} ({reason})" + (f": {settings}" if settings else "; the flags' own defaults"))
    return {**values, **changed}
