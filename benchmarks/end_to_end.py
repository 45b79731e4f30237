"""Wall time of the README's main job from nothing: train CLIP, train the decoder, draw 64 sixes.

    python benchmarks/end_to_end.py                         # writes checkpoints/clip.pt, checkpoints/decoder.pt
    python benchmarks/end_to_end.py --checkpoints checkpoints/e2e
    python benchmarks/end_to_end.py --generate_only         # time generation with the existing checkpoints
    python benchmarks/end_to_end.py --shipped               # a fresh clone: 64 sixes from pretrained/ (3 runs), the notebook on them

Each step runs as its own process, exactly as a user types it, with default settings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401
from evaluation.reports import write_result

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], log_path: Path) -> float:
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    with open(log_path, "a") as log:  # the scripts' own output and progress bars
        subprocess.run([sys.executable, *command], cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    print(f"  {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--generate_only", action="store_true", help="only time generate_images.py on the existing checkpoints")
    parser.add_argument("--shipped", action="store_true", help="time what a fresh clone does with the shipped weights: "
                                                                "generate_images.py with no paths (3 runs) and the notebook")
    args = parser.parse_args()
    if args.shipped:
        return time_shipped()
    folder = Path(args.checkpoints)
    clip, decoder = folder / "clip.pt", folder / "decoder.pt"
    log_path = ROOT / "outputs" / "benchmarks" / "end_to_end.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    print(f"the scripts' output goes to {log_path}")
    generate = ["generate_images.py", "--prompt", "six", "--num_samples", "64", "--clip_model_path", str(clip),
                "--decoder_path", str(decoder), "--output", "outputs/six.png"]
    if args.generate_only:
        write_result("generate_64", {"seconds": round(timed(generate, log_path), 1)})
        return
    for path in (clip, decoder):
        path.unlink(missing_ok=True)  # from nothing: no resume
    seconds = {
        "clip_train": timed(["clip_train.py", "--save_path", str(clip)], log_path),
        "unclip_train": timed(["unclip_train.py", "--clip_model_path", str(clip), "--save_path", str(decoder)], log_path),
        "generate_64": timed(generate, log_path),
    }
    seconds["train_total"] = seconds["clip_train"] + seconds["unclip_train"]
    clip_metrics = json.loads(clip.with_suffix(".json").read_text())
    decoder_metrics = json.loads(decoder.with_suffix(".json").read_text())
    print(f"training from nothing: {seconds['train_total'] / 60:.1f} min; 64 images: {seconds['generate_64']:.1f} s")
    write_result("end_to_end", {"seconds": {k: round(v, 1) for k, v in seconds.items()},
                                "clip_zero_shot": {k: v for k, v in clip_metrics.items() if k.startswith("zero_shot")},
                                "decoder_steps": decoder_metrics["steps"], "decoder_train_samples_per_second": decoder_metrics["train_samples_per_second"]})


def time_shipped() -> None:
    """generate_images.py --prompt six --num_samples 64 as on a fresh clone (start-up included), three times, and the notebook."""
    trained = [p for p in (ROOT / "checkpoints" / "clip.pt", ROOT / "checkpoints" / "decoder.pt") if p.exists()]
    if trained:
        sys.exit(f"error: {trained[0]} exists, so generate_images.py would use it, not pretrained/: time this on a fresh clone")
    log_path = ROOT / "outputs" / "benchmarks" / "shipped_weights.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    print(f"the scripts' output goes to {log_path}")
    generate = [timed(["generate_images.py", "--prompt", "six", "--num_samples", "64", "--output", "outputs/six.png"], log_path) for _ in range(3)]
    notebook = timed(["-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "demo.ipynb", "--output-dir", "outputs/notebook"], log_path)
    write_result("shipped_weights", {"generate_64_seconds": [round(s, 1) for s in generate], "notebook_seconds": round(notebook, 1)})


if __name__ == "__main__":
    main()
