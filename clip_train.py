"""Train the tiny CLIP (character LSTM + CNN) contrastively.

    python clip_train.py                      # embedded MNIST, ~2 minutes on a 2-core CPU
    python clip_train.py --dataset fashion    # Fashion-MNIST from Debian's package
    python clip_train.py --resume             # continue an interrupted run
"""
from __future__ import annotations

from training.clip_trainer import ClipTrainingConfig, train_clip
from training.presets import apply_preset
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, given_flags, run_main


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, ClipTrainingConfig)
    given = given_flags(parser, argv)
    train_clip(config_from_args(ClipTrainingConfig, parser.parse_args(argv), lambda values: apply_preset("clip", values, given)))


if __name__ == "__main__":
    run_main(main)
