"""Train the unCLIP diffusion stages on a frozen tiny CLIP.

    python unclip_train.py --clip_model_path checkpoints/clip.pt                    # text-conditioned decoder (~11 min)
    python unclip_train.py --clip_model_path checkpoints/clip.pt --condition image  # unCLIP decoder on CLIP image embeddings
    python unclip_train.py --clip_model_path checkpoints/clip.pt --stage prior      # DALL-E 2 prior: text -> image embedding
    python unclip_train.py --clip_model_path checkpoints/clip.pt --resolution 14    # Imagen: a 14x14 base decoder ...
    python unclip_train.py --clip_model_path checkpoints/clip.pt --stage superres   # ... and its 14x14 -> 28x28 super-resolution
    python unclip_train.py --clip_model_path checkpoints/clip.pt --resume           # continue an interrupted run
    python unclip_train.py --clip_model_path pretrained/clip.safetensors --init_from pretrained/decoder.safetensors --lr 1e-3
                                                                    # fine-tune (or warm-restart) the shipped decoder

Each stage has its own options and defaults: ``--stage prior --help`` lists the prior's.
"""
from __future__ import annotations

from training.diffusion_trainer import train_unclip
from training.unclip_configs import STAGE_CONFIGS
from training.presets import apply_preset
from utils.cli import ArgumentParser, add_config_arguments, config_from_args, given_flags, run_main

STAGE_HELP = ("decoder: CLIP embedding -> image; prior: CLIP text -> CLIP image embedding (DALL-E 2); "
              "superres: CLIP embedding + 14x14 image -> 28x28 image (Imagen's cascade). Each has its own options: --stage prior --help")


def main(argv: list[str] | None = None) -> None:
    stage_parser = ArgumentParser(add_help=False)
    stage_parser.add_argument("--stage", choices=list(STAGE_CONFIGS), default="decoder", help=STAGE_HELP)
    stage = stage_parser.parse_known_args(argv)[0].stage
    config_class = STAGE_CONFIGS[stage]
    parser = ArgumentParser(description=f"{__doc__.splitlines()[0]} These are the {stage} stage's options.", parents=[stage_parser])
    add_config_arguments(parser, config_class)
    given = given_flags(parser, argv)
    train_unclip(config_from_args(config_class, parser.parse_args(argv), lambda values: apply_preset(stage, values, given)))


if __name__ == "__main__":
    run_main(main)
