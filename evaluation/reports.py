"""Result files of the benchmark scripts: every figure stored with its command, machine and date."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from utils.training import resolve_device


_device = torch.device("cpu")  # where this benchmark runs its models; a script with --device records it by use_device


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="where the models run: auto (CUDA when present), cpu or cuda")


def use_device(name: str) -> torch.device:
    """The device a benchmark's --device names, remembered so that its result file names that machine."""
    global _device
    _device = resolve_device(name)
    return _device


def machine() -> str:
    """The machine the figures were measured on: the GPU the models ran on, else the CPU (even where a GPU sits idle)."""
    if _device.type == "cuda":
        return f"{torch.cuda.get_device_name(_device)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU ({cpu_model()}), {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (Linux), and whether it has AVX-512 (with bf16): timings differ
    several-fold between models, and "AMD EPYC" names chips with and without it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown model"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown model")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    vector = "AVX-512 with bf16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "no AVX-512"
    return f"{name}, {vector}"


def write_result(name: str, result: dict, folder: str = "outputs/benchmarks") -> Path:
    """Store a benchmark's figures with the command line, machine and date that produced them."""
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(sys.argv), "machine": machine(), "date": time.strftime("%Y-%m-%d"), **result}
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path
