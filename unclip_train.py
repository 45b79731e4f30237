"""Train the unCLIP diffusion stages on a frozen tiny CLIP.

    python unclip_train.py --clip_model_path checkpoints/clip.pt                    # text-conditioned decoder (~11 min)
    python unclip_train.py --clip_model_path checkpoints/clip.pt --condition image  # unCLIP decoder on CLIP image embeddings
    python unclip_train.py --clip_model_path checkpoints/clip.pt --stage prior      # DALL-E 2 prior: text -> image embedding
    python unclip_train.py --clip_model_path checkpoints/clip.pt --resolution 14    # Imagen: a 14x14 base decoder ...
    python unclip_train.py --clip_model_path checkpoints/clip.pt --stage superres   # ... and its 14x14 -> 28x28 super-resolution
    python unclip_train.py --clip_model_path checkpoints/clip.pt --resume           # continue an interrupted run
"""
from __future__ import annotations

from training.diffusion_trainer import UnclipTrainingConfig, train_unclip
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, run_main


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, UnclipTrainingConfig)
    train_unclip(config_from_args(UnclipTrainingConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    run_main(main)
