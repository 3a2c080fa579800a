"""torch.distributed helpers: who we are, and the all-gather that carries gradients back.

SimCLR takes its negatives from the GLOBAL batch, so every process gathers every process's
embeddings. The gather's backward must SUM the gradients that all processes computed for a shard and
hand each process its own shard's sum; a backward that keeps only the local gradient (a bug two
popular ports shipped) silently drops most of the loss's gradient on more than one device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in the forward; all_reduce(SUM) of the incoming gradient, then the own slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's gradient for every shard, summed
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (equal shapes on every process) over all processes, rank order, with a
    backward that sums gradients across processes. Identity when not distributed."""
    return _GatherWithGrad.apply(x) if world_size() > 1 else x
