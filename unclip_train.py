"""Train the unCLIP diffusion stages on a frozen tiny CLIP.

    python unclip_train.py --clip_model_path checkpoints/clip.pt                    # text-conditioned decoder
    python unclip_train.py --clip_model_path checkpoints/clip.pt --condition image  # unCLIP decoder (CLIP image embeddings)
    python unclip_train.py --clip_model_path checkpoints/clip.pt --resume           # continue an interrupted run
"""
from __future__ import annotations

from training.decoder_trainer import DecoderTrainingConfig, train_decoder
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, run_main


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, DecoderTrainingConfig)
    train_decoder(config_from_args(DecoderTrainingConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    run_main(main)
