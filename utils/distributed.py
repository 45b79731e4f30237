"""Data parallelism over processes started by torchrun: the whole of it, in one file.

    torchrun --standalone --nproc_per_node 2 unclip_train.py --device cpu ...   # gloo on CPUs
    torchrun --standalone --nproc_per_node 8 unclip_train.py ...                # NCCL, one GPU per process

Every process (rank) holds a full copy of the model, seeded alike and then made
equal to rank 0's. The recipe that keeps N ranks at batch B/N equal to one
process at batch B:

1. One data order. Every rank draws the whole global batch of B from the same
   random streams (order, captions, augmentation, timesteps, noise) and keeps its
   own slice of B/N (``Distributed.local``); the streams stay in step on every
   rank, so a checkpoint's random states are everybody's and ``--resume`` works.
2. One gradient. After backward each rank holds the gradient of the mean loss
   over its slice; ``average_gradients`` all-reduces them into the mean over all
   ranks, the gradient of the mean loss over the global batch (what
   DistributedDataParallel does, without overlapping the reduction with backward:
   these models are a few MB).
3. One clock. The time budget and the decision to stop are rank 0's
   (``agree``), so no rank takes another learning rate or stops a step early and
   leaves the others waiting in a collective.
   BatchNorm takes the global batch's statistics (``GlobalBatchNorm2d``).
4. One writer. Checkpoints, sample grids, metrics and progress bars come from
   rank 0 (``is_main``).

Outside torchrun (no WORLD_SIZE in the environment) all of this is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import require


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local(self, batch_size: int) -> slice:
        """This rank's slice of a global batch of ``batch_size`` items."""
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def check_batch(self, batch_size: int) -> None:
        require(batch_size % self.world_size == 0 and batch_size >= self.world_size,
                f"--batch_size {batch_size} must be a multiple of the {self.world_size} processes (each takes an equal slice)")

    def average_gradients(self, parameters) -> None:
        """Every rank's gradients -> their mean over ranks, in one flat all-reduce."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        torch._foreach_copy_(grads, [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads)])

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Make every rank's weights and buffers rank 0's."""
        if self.enabled:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def agree(self, value: float, device: torch.device) -> float:
        """Rank 0's value of a number (a clock, a stop decision), on every rank."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's [b, ...] -> the global [world_size * b, ...] in rank order, with gradients flowing back to each rank's part
        (CLIP's contrastive loss needs every caption of the global batch as a negative for every image)."""
        return _GatherWithGradients.apply(local, self) if self.enabled else local

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class _GatherWithGradients(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own part, summed over the ranks' losses."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, ranks: Distributed) -> torch.Tensor:
        ctx.ranks = ranks
        parts = [torch.empty_like(local) for _ in range(ranks.world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)  # [world_size * b, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank computed the same loss over the whole batch: its part's gradient is world_size x its share
        return grad[ctx.ranks.local(len(grad))], None  # ... which average_gradients then divides back


class _AllReduceSum(torch.autograd.Function):
    """A sum over ranks whose backward sums the ranks' gradients too (each rank's loss used the same global sum)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, every rank's slice together, so that N ranks
    normalise exactly as one process would (torch's SyncBatchNorm does this on GPUs only). Same parameters and buffers."""

    ranks: Distributed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [b, C, H, W]
        if not self.training:
            return super().forward(x)
        x = x.float()  # the statistics in fp32, also under autocast
        sums = _AllReduceSum.apply(torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))]))  # [2, C] over all ranks
        count = x.numel() // x.shape[1] * self.ranks.world_size
        mean = sums[0] / count
        var = (sums[1] / count - mean**2).clamp_min(0)  # the biased variance normalises, as BatchNorm's does
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1), self.momentum)  # the unbiased one is kept for evaluation
        scale = self.weight / torch.sqrt(var + self.eps)  # [C]
        return (x - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]


def synchronise_batch_norm(module: torch.nn.Module, ranks: Distributed) -> None:
    """Make every BatchNorm2d of ``module`` a GlobalBatchNorm2d under torchrun (the class changes; the weights and checkpoint keys do not)."""
    if ranks.enabled:
        for layer in module.modules():
            if type(layer) is torch.nn.BatchNorm2d:
                layer.__class__, layer.ranks = GlobalBatchNorm2d, ranks


def start(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group that torchrun describes in the environment (or none); returns the rank and its device:
    on CUDA, the GPU of the local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
