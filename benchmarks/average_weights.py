"""Average the weights of runs that began from one checkpoint (a uniform "model soup", Wortsman et al. 2022).

    python benchmarks/average_weights.py --kind decoder --output checkpoints/soup/decoder.pt \\
        pretrained/decoder.safetensors checkpoints/restart_seed4/decoder_ema0.pt

Warm restarts of the release's text decoder from the same start with other seeds land at Fréchet ratios a quarter of a
unit apart (BENCHMARKS.md, twenty-first and twenty-fourth sessions); their average samples like one model, with the seeds'
noise partly averaged away. The output is a sampling-only checkpoint (``.pt``) or shared weights (``.safetensors``), judged
like any decoder: ``python benchmarks/decoder_quality.py --decoder_path <output> ...``.
"""
from __future__ import annotations

import argparse

import common  # noqa: F401
from utils.checkpoints import KINDS, average_weights, save_checkpoint
from utils.cli import run_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="two or more weight files of one kind and config (checkpoints or .safetensors)")
    parser.add_argument("--kind", default="decoder", choices=[kind for kind in KINDS if kind != "judge"])
    parser.add_argument("--output", required=True, help="where the average goes (.pt or .safetensors)")
    args = parser.parse_args(argv)
    path = save_checkpoint(args.output, args.kind, average_weights(args.paths, args.kind))
    print(f"wrote {path}: the average of {len(args.paths)} {args.kind} files")


if __name__ == "__main__":
    run_main(main)
