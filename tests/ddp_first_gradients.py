"""Helper of tests/test_distributed.py: a trainer's gradients on its first batch, and on its second after one step, by rank 0.

    python tests/ddp_first_gradients.py clip OUT [flags]                                   # one process
    torchrun --standalone --nproc_per_node 2 tests/ddp_first_gradients.py clip OUT [flags]  # two, each on half the batch
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training.clip_trainer import ClipRun, ClipTrainingConfig  # noqa: E402
from training.diffusion_trainer import DiffusionRun  # noqa: E402
from training.unclip_configs import DecoderTrainingConfig  # noqa: E402
from utils import distributed  # noqa: E402
from utils.cli import ArgumentParser, add_config_arguments, config_from_args  # noqa: E402


def drop_labels(batch: tuple) -> tuple:
    images, texts, _, indices = batch
    return images, texts, indices


def main() -> None:
    trainer, out, flags = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    config_class = ClipTrainingConfig if trainer == "clip" else DecoderTrainingConfig
    parser = ArgumentParser()
    add_config_arguments(parser, config_class)
    config = config_from_args(config_class, parser.parse_args(flags))
    gradients = lambda: {name: p.grad.detach().cpu().clone() for name, p in run.model.named_parameters() if p.grad is not None}  # noqa: E731
    if trainer == "clip":
        run = ClipRun(config)
        batches = iter(run.train_set.batches(config.batch_size, run.generator))
        run.step(run.batch_loss(*next(batches)))
        first = gradients()
        run.step(run.batch_loss(*next(batches)))  # the second batch's gradients after one optimizer step
    else:
        run = DiffusionRun(config)
        run.train_step(*drop_labels(next(run.batches)), run.model)
        first = gradients()  # (clipped) only the output layer has any: the UNet's is zero-initialised
        run.train_step(*drop_labels(next(run.batches)), run.model)
    if run.dist.is_main:
        torch.save({"first": first, "second": gradients()}, out)
    run.dist.barrier()
    distributed.stop()


if __name__ == "__main__":
    main()
