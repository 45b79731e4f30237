"""Training and generation speed at the CPU and GPU presets, eager against compiled, and time to quality.

    python benchmarks/gpu.py                         # on CUDA: both presets; on a CPU: the cpu preset
    python benchmarks/gpu.py --presets cpu gpu --device cpu
    python benchmarks/gpu.py --device cpu --stages decoder --compile --steps 200 --generate   # eager against compiled on a CPU
    python benchmarks/gpu.py --time_to_quality       # CLIP + decoder from nothing at the gpu preset, then judged

Training: samples/s of the real trainers' steps (training.clip_trainer.ClipRun.step,
training.diffusion_trainer.DiffusionRun.train_step: forward, backward, AdamW, EMA) for
CLIP, the decoder, the prior and super-resolution, after warm-up steps, with the decoder
also under torch.compile (at each preset; on a CPU where --compile asks), at larger batches and in --compile_modes (CUDA graphs:
reduce-overhead); beside each diffusion figure, the host's milliseconds per batch (draw and
conditioning) and the FLOPs done per second (torch.utils.flop_counter). On CUDA, a torch.profiler
view of the decoder's step, eager and compiled (kernel time against wall time, and the host's time
in each phase of the step) and each figure's peak memory. Generation: seconds for 64 and 1,000
images from the shipped decoder (20 DPM-Solver++ steps with guidance).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import common  # noqa: F401
import torch

from evaluation.reports import add_device_argument, use_device, write_result
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.samplers import SamplingOptions
from training.clip_trainer import ClipRun, ClipTrainingConfig
from training.diffusion_trainer import DiffusionRun
from training.presets import GPU_PRESET
from training.unclip_configs import COMPILE_MODES, STAGE_CONFIGS
from utils.checkpoints import PRETRAINED_DIR

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CLIP, SHIPPED_DECODER = PRETRAINED_DIR / "clip.safetensors", PRETRAINED_DIR / "decoder.safetensors"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def preset_values(stage: str, preset: str) -> dict:
    return dict(GPU_PRESET[stage]) if preset == "gpu" else {}


def timed_steps(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step of ``step()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def clip_speed(preset: str, device: str, folder: Path, warmup: int, steps: int) -> dict:
    config = ClipTrainingConfig(device=device, save_path=str(folder / "clip.pt"), output_dir=str(folder / "clip"), **preset_values("clip", preset))
    run = ClipRun(config, log=lambda message: None)
    batches = run.train_set.batches(config.batch_size, run.generator)

    def step() -> None:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = run.train_set.batches(config.batch_size, run.generator)
            batch = next(batches)
        run.step(run.batch_loss(*batch))
    return {"batch_size": config.batch_size, "seconds_per_step": timed_steps(step, warmup, steps, run.device)}


def next_batch(run: DiffusionRun) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """The next training batch of a run: (images [B, C, H, W], captions, dataset indices [B])."""
    images, texts, _, indices = next(run.batches)
    return images, texts, indices


def host_batch_ms(run: DiffusionRun, count: int = 20) -> float:
    """Milliseconds per batch of the work done on the host before a step: the draw and the stage's batch (conditioning)."""
    start = time.perf_counter()
    for _ in range(count):
        run.stage.batch(*next_batch(run), run.generator)
    return 1000 * (time.perf_counter() - start) / count


def gflop_per_sample(run: DiffusionRun) -> float:
    """Forward and backward FLOPs of one training sample (torch.utils.flop_counter: matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    images, texts, indices = next_batch(run)
    counter = FlopCounterMode(display=False)
    with counter:
        run.compute_gradients(images, texts, indices, run.model)
    return counter.get_total_flops() / len(images) / 1e9


def benchmark_run(stage: str, preset: str, device: str, folder: Path, compile: bool, batch_size: int | None = None,
                  compile_mode: str = "default") -> tuple[DiffusionRun, Callable]:
    """A training run of ``stage`` at ``preset`` (its batch replaced by ``batch_size``) on the shipped CLIP, in training
    mode, and the network as its steps call it (compiled or not)."""
    values = {**preset_values(stage, preset), **({"batch_size": batch_size} if batch_size else {})}
    config = STAGE_CONFIGS[stage](clip_model_path=str(SHIPPED_CLIP), device=device, compile=compile, compile_mode=compile_mode,
                                  save_path=str(folder / f"{stage}.pt"), output_dir=str(folder / stage), **values)
    run = DiffusionRun(config, log=lambda message: None)
    run.model.train()
    return run, run.compiled_forward()


def diffusion_speed(stage: str, preset: str, device: str, folder: Path, warmup: int, steps: int, compile: bool,
                    batch_size: int | None = None, compile_mode: str = "default") -> dict:
    run, forward = benchmark_run(stage, preset, device, folder, compile, batch_size, compile_mode)
    config = run.config

    def step() -> None:
        run.train_step(*next_batch(run), forward)
    seconds = timed_steps(step, warmup + (3 if compile else 0), steps, run.device)
    gflop = gflop_per_sample(run)
    return {"batch_size": config.batch_size, "channels": getattr(config, "channels", None), "seconds_per_step": seconds, "compile_mode": compile_mode,
            "host_ms_per_batch": round(host_batch_ms(run), 2), "gflop_per_sample": round(gflop, 3),
            "tflop_per_second": round(gflop * config.batch_size / seconds / 1000, 2)}


PHASES = ("conditioning", "forward", "backward", "optimizer", "ema")  # the record_function labels of DiffusionRun.train_step


def profile_decoder_step(device: str, folder: Path, compile: bool, steps: int = 10, batch_size: int | None = None) -> dict:
    """torch.profiler over ``steps`` decoder steps at the gpu preset: wall time, the device's busy time (its kernels),
    the host's time in each phase of the step, and the top operators."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    run, forward = benchmark_run("decoder", "gpu", device, folder, compile, batch_size)
    for _ in range(5 if compile else 3):
        run.train_step(*next_batch(run), forward)
    synchronize(run.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            run.train_step(*next_batch(run), forward)
        synchronize(run.device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)  # kernels only: operators would count them twice
    phases = {e.key: round(e.cpu_time_total / 1000 / steps, 2) for e in events if e.key in PHASES}
    table = events.table(sort_by="self_cuda_time_total" if run.device.type == "cuda" else "self_cpu_time_total", row_limit=18)
    return {"compiled": compile, "wall_ms_per_step": round(1000 * wall / steps, 2), "device_busy_ms_per_step": round(kernels_us / 1000 / steps, 2),
            "host_ms_per_phase": phases, "table": table}


def generation_seconds(device: torch.device, counts: tuple[int, ...]) -> dict:
    clip = load_clip(str(SHIPPED_CLIP), device)
    decoder = Decoder.load(str(SHIPPED_DECODER), device, clip=clip)
    conditioner = ClipConditioner(clip)
    result = {}
    decoder.generate(conditioner.text(["six"] * 8), SamplingOptions(seed=0))  # warm-up
    for count in counts:
        synchronize(device)
        start = time.perf_counter()
        decoder.generate(conditioner.text(["six"] * count), SamplingOptions(seed=0))
        synchronize(device)
        result[str(count)] = round(time.perf_counter() - start, 2)
    return result


TIME_TO_QUALITY_GUIDANCE = ("1.25", "1.5", "2.0")  # the target (>= 99 % at a Frechet ratio <= 2) may sit below the default scale


def time_to_quality(folder: Path, device: str) -> dict:
    """CLIP and the decoder trained from nothing at the gpu preset, as a user would type it, then judged."""
    seconds = {}
    commands = {
        "clip_train": ["clip_train.py", "--preset", "gpu", "--device", device, "--save_path", str(folder / "clip.pt"), "--output_dir", str(folder / "clip")],
        "unclip_train": ["unclip_train.py", "--preset", "gpu", "--device", device, "--clip_model_path", str(folder / "clip.pt"),
                         "--save_path", str(folder / "decoder.pt"), "--output_dir", str(folder / "decoder")],
        "decoder_quality": ["benchmarks/decoder_quality.py", "--device", device, "--clip_model_path", str(folder / "clip.pt"),
                            "--decoder_path", str(folder / "decoder.pt"), "--name", "gpu_time_to_quality_samples",
                            "--guidance_scales", *TIME_TO_QUALITY_GUIDANCE, "--forms", "word"],  # three sampler seeds each
    }
    for name, command in commands.items():
        print("$ python " + " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, *command], cwd=ROOT, check=True)
        seconds[name] = round(time.perf_counter() - start, 1)
    seconds["train_total"] = round(seconds["clip_train"] + seconds["unclip_train"], 1)
    print(f"training from nothing: {seconds['train_total'] / 60:.2f} min (process start-up and compilation included)")
    return {"seconds": seconds, "quality": "outputs/benchmarks/gpu_time_to_quality_samples.json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    parser.add_argument("--presets", nargs="+", choices=["cpu", "gpu"], default=None, help="default: cpu and gpu on CUDA, cpu on a CPU")
    parser.add_argument("--stages", nargs="+", default=["clip", "decoder", "prior", "superres"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per figure")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="also time the decoder compiled at each preset (default: on CUDA)")
    parser.add_argument("--generate", nargs="*", type=int, default=[64, 1000], help="image counts to time generation for (none: skip)")
    parser.add_argument("--decoder_batches", nargs="*", type=int, default=[512, 1024],
                        help="also time the decoder at the gpu preset at these batch sizes (eager, and compiled where --compile)")
    parser.add_argument("--compile_modes", nargs="*", default=["reduce-overhead"], choices=list(COMPILE_MODES[1:]),
                        help="also time the compiled decoder at the gpu preset in these torch.compile modes (with --compile)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None, help="profile decoder steps (default: on CUDA)")
    parser.add_argument("--time_to_quality", action="store_true")
    parser.add_argument("--name", default="gpu")
    args = parser.parse_args()
    device = use_device(args.device)
    if args.time_to_quality:
        write_result(f"{args.name}_time_to_quality", time_to_quality(Path("outputs/benchmarks/time_to_quality"), str(device)))
        return
    presets = args.presets or (["cpu", "gpu"] if device.type == "cuda" else ["cpu"])
    compile_too = args.compile if args.compile is not None else device.type == "cuda"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        def measure(stage: str, preset: str, compiled: bool, batch_size: int | None = None, mode: str = "default") -> None:
            """One row of the table: a trainer's samples/s (and, for a diffusion stage, FLOP/s and host time), printed."""
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if stage == "clip":
                row = clip_speed(preset, str(device), Path(folder), args.warmup, args.steps)
            else:
                row = diffusion_speed(stage, preset, str(device), Path(folder), args.warmup, args.steps, compiled, batch_size, mode)
            row.update(stage=stage, preset=preset, compiled=compiled, samples_per_second=round(row["batch_size"] / row["seconds_per_step"], 1),
                       peak_memory_mb=peak_memory_mb(device))
            rows.append(row)
            print_row(row)

        for preset in presets:
            for stage in args.stages:
                for compiled in ([False, True] if compile_too and stage == "decoder" else [False]):
                    measure(stage, preset, compiled)
        if "gpu" in presets and "decoder" in args.stages:
            for batch_size in args.decoder_batches:
                for compiled in [False, True] if compile_too else [False]:
                    measure("decoder", "gpu", compiled, batch_size)
            for mode in args.compile_modes if compile_too else []:  # e.g. CUDA graphs, at the preset's batch and the largest
                for batch_size in [GPU_PRESET["decoder"]["batch_size"], *args.decoder_batches[-1:]]:
                    measure("decoder", "gpu", True, batch_size, mode)
        profiled = []
        if args.profile if args.profile is not None else device.type == "cuda":
            for compiled in [False, True] if compile_too else [False]:
                row = profile_decoder_step(str(device), Path(folder), compiled)
                print(row.pop("table"))
                print(f"decoder at the gpu preset, {'compiled' if compiled else 'eager'}: {row['wall_ms_per_step']} ms per step, the device busy "
                      f"{row['device_busy_ms_per_step']} ms of it; the host's ms per phase: "
                      + ", ".join(f"{name} {ms}" for name, ms in row["host_ms_per_phase"].items()), flush=True)
                profiled.append(row)
        generation = generation_seconds(device, tuple(args.generate)) if args.generate else {}
        for count, seconds in generation.items():
            print(f"generate {count} images: {seconds:.2f} s", flush=True)
    write_result(args.name, {"device": str(device), "training": rows, "generation_seconds": generation, "decoder_profile": profiled})


def print_row(row: dict) -> None:
    compiled = ("compiled" + ("" if row.get("compile_mode", "default") == "default" else f" ({row['compile_mode']})")) if row["compiled"] else "eager   "
    extra = f"  host {row['host_ms_per_batch']:.1f} ms/batch  {row['tflop_per_second']:.1f} TFLOP/s" if "host_ms_per_batch" in row else ""
    memory = f"  peak {row['peak_memory_mb']:,.0f} MB" if row["peak_memory_mb"] else ""
    print(f"{row['stage']:9s} preset {row['preset']}  {compiled}  batch {row['batch_size']:5d}  {row['samples_per_second']:10,.0f} samples/s"
          + extra + memory, flush=True)


if __name__ == "__main__":
    main()
