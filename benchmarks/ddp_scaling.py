"""Data parallelism from 1 to N processes (torchrun; gloo on a CPU, NCCL on GPUs): samples/s and the loss they reach.

    python benchmarks/ddp_scaling.py                              # 1 and 2 processes on the CPU, one thread each
    python benchmarks/ddp_scaling.py --processes 1 2 4 8 --device cuda

Each run trains the same decoder from the same seed at the same global batch for the same steps, so the runs take
the same steps up to rounding and should differ only in speed. Rounding is not nothing: sums in another order
differ in the last bits, and hundreds of Adam steps carry that apart. So one more run, one process with
--reference_threads threads (which also sums in another order), measures how far rounding alone moves the weights;
N processes should land no further from the first run than that. On a 2-core CPU this checks correctness, not
speed: two processes of one thread each are compared with one of one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401

from evaluation.reports import add_device_argument, use_device, write_result
from utils.checkpoints import PRETRAINED_DIR, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32, help="the global batch, split over the processes")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (OMP_NUM_THREADS)")
    parser.add_argument("--reference_threads", type=int, default=2, help="threads of the extra one-process run that measures rounding alone (0: none)")
    args = parser.parse_args()
    device = use_device(args.device)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as folder:
        runs = [(n, args.threads) for n in args.processes] + ([(1, args.reference_threads)] if args.reference_threads else [])
        for processes, threads in runs:
            save_path = Path(folder) / f"decoder_{processes}x{threads}.pt"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "unclip_train.py",
                       "--clip_model_path", str(PRETRAINED_DIR / "clip.safetensors"), "--device", str(device), "--preset", "cpu",
                       "--steps", str(args.steps), "--max_minutes", "0", "--batch_size", str(args.batch_size), "--sample_every", "0",
                       "--save_every", str(args.steps), "--save_path", str(save_path), "--output_dir", str(Path(folder) / f"out_{processes}x{threads}")]
            print("$ " + " ".join(command[1:]), flush=True)
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            metrics = json.loads(save_path.with_suffix(".json").read_text())
            row = {"processes": processes, "threads_per_process": threads, "samples_per_second": metrics["train_samples_per_second"],
                   "final_loss_last_100_steps": round(metrics["final_loss"], 5),
                   "wall_seconds": round(time.perf_counter() - start, 1)}
            ema = load_checkpoint(save_path, "decoder")["ema"]
            reference = reference or ema
            difference = sum(float((ema[k].float() - reference[k].float()).norm() ** 2) for k in ema) ** 0.5
            row["ema_weights_relative_difference_to_first_run"] = difference / sum(float(v.float().norm() ** 2) for v in reference.values()) ** 0.5
            rows.append(row)
            print(f"{processes} process(es) x {threads} thread(s): {row['samples_per_second']:,.0f} samples/s, "
                  f"loss over the last 100 steps {row['final_loss_last_100_steps']:.5f}, "
                  f"{row['wall_seconds']:.0f} s with start-up; EMA weights {row['ema_weights_relative_difference_to_first_run']:.2e} "
                  "from the first run's (relative)", flush=True)
    write_result("ddp_scaling", {"device": str(device), "steps": args.steps, "global_batch": args.batch_size, "threads_per_process": args.threads,
                                 "runs": rows})


if __name__ == "__main__":
    main()
