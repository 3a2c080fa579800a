"""Data-parallel training on torch.distributed: joining the process group torchrun describes, the
all-gather that carries gradients back, gradient averaging, and global BatchNorm.

SimCLR takes its negatives from the GLOBAL batch, so every process gathers every process's
embeddings. The gather's backward must SUM the gradients that all processes computed for a shard and
hand each process its own shard's sum; a backward that keeps only the local gradient (a bug two
popular ports shipped) silently drops most of the loss's gradient on more than one device.

Data parallelism is written out rather than wrapped in DistributedDataParallel: every process starts
from rank 0's state (:func:`broadcast_state`), back-propagates the loss of its own shard, and
:func:`average_gradients` replaces each gradient by its mean over the processes (one all-reduce per
step). That is DDP's arithmetic without its hooks, so gradient caching may run a network in chunks
and back-propagate inside the backward; the price is no overlap of communication with the backward
on GPUs.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_environment(device: torch.device, timeout_minutes: float = 30) -> None:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, on one node or several): NCCL when training on CUDA, gloo on the CPU.
    A collective that waits ``timeout_minutes`` for a process fails. Does nothing outside torchrun
    or when the group exists."""
    if "WORLD_SIZE" not in os.environ or is_distributed():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # CUDA only: NCCL's collectives run on the current device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))


def shutdown() -> None:
    """Leave the process group (at the end of a command), if there is one."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written a file the others read)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` (any picklable object), on every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def computed_once(compute: Callable[[], T]) -> T:
    """``compute()`` run by rank 0 alone, its (picklable, CPU) result given to every process."""
    return broadcast_object(compute() if rank() == 0 else None)


def all_gather_objects(value: object) -> list[object]:
    """Every process's ``value`` (any picklable object), in rank order, on every process."""
    if world_size() == 1:
        return [value]
    values: list[object] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def _flag_device() -> torch.device:
    """Where a collective's tensor must live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())  # CUDA only
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is True on any, so that all of them take the same branch
    (stop, raise) and none is left waiting in a collective. In one process ``flag`` itself;
    otherwise an all-reduce and a host read, which every process must make at the same point."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=_flag_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_rows(x: Tensor, counts: list[int]) -> Tensor:
    """Every process's ``x`` (``counts[rank]`` rows; the same trailing shape and dtype on all),
    concatenated in rank order on every process; ``x`` itself in one process. The rows are padded
    to the largest count for the all-gather (equal shapes, as gloo and NCCL need), then trimmed."""
    if world_size() == 1:
        return x
    padded = x.new_zeros((max(counts), *x.shape[1:]), device=_flag_device())
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)]).to(x.device)


def _coalesced(tensors: list[Tensor], collective: Callable[[Tensor], object]) -> None:
    """Run ``collective`` in place on one flat copy of ``tensors`` per dtype (one message instead of
    hundreds, and any memory format), then copy the result back."""
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        group = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def broadcast_state(modules: Iterable[nn.Module]) -> None:
    """Give every process rank 0's parameters and buffers (initial weights are drawn per process)."""
    if world_size() > 1:
        state = [t for module in modules for t in module.state_dict().values()]
        _coalesced(state, lambda flat: dist.broadcast(flat, src=0))


def average_gradients(parameters: Iterable[Tensor]) -> None:
    """Replace each gradient by its mean over processes, as DistributedDataParallel does: with each
    process's loss the mean over its equal shard, the result is the gradient of the global mean.
    Every process must have computed gradients for the same parameters."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]

    def average(flat: Tensor) -> None:
        dist.all_reduce(flat)
        flat /= world_size()

    _coalesced(grads, average)


def mean_over_processes(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Scalar tensors averaged over processes (for logging the global batch's loss)."""
    if world_size() == 1:
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world_size()))


def min_over_processes(value: Tensor) -> Tensor:
    """The element-wise minimum of ``value`` over processes (``value`` itself in one process)."""
    if world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


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


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the GLOBAL batch, on any backend.

    Every process's per-channel count, mean and variance are all-gathered (the gather's backward
    sums gradients over processes) and pooled, so the output, its gradient and the running
    statistics equal those of one BatchNorm over the batches of all processes concatenated, also
    when processes hold different numbers of samples. Written with autograd ops, not fused kernels:
    it keeps about three activation-sized tensors for the backward where BatchNorm keeps one.
    torch's SyncBatchNorm does the same with CUDA kernels but refuses CPU tensors. In evaluation,
    or in a single process, this is BatchNorm.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(
                f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}"
            )

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        channels, dims = x.shape[1], [0, *range(2, x.dim())]  # every axis but the channels
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in fp32 under autocast
        var, mean = torch.var_mean(x32, dims, correction=0)  # (C,) each, this process's
        count = mean.new_full((1,), x.numel() // channels)
        every = gather_with_grad(torch.cat([mean, var, count])[None])  # (P, 2C + 1)
        means, variances = every[:, :channels], every[:, channels:-1]
        counts = every[:, -1:].detach()  # (P, 1)
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # (C,)
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total  # (C,), biased
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), var.detach() * total / (total - 1))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_statistics(self, mean: Tensor, unbiased_var: Tensor) -> None:
        """BatchNorm's rule: an exponential average with weight ``momentum`` (a cumulative average
        when ``momentum`` is None); the variance is the unbiased one."""
        self.num_batches_tracked.add_(1)
        weight = self.momentum if self.momentum is not None else 1 / int(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), weight)


def _synchronised(layer: _BatchNorm, cls: type[_BatchNorm]) -> _BatchNorm:
    """A ``cls`` layer sharing ``layer``'s parameters and buffers (same tensors, updated in place)."""
    sync = cls(
        layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats
    )
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(sync, name, getattr(layer, name))
    return sync.train(layer.training)


@contextmanager
def global_batchnorm(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the context, every BatchNorm layer of ``module`` normalises with the statistics of the
    global batch (SimCLR's global BN for pretraining: with per-device BN the network can cheat on
    batch statistics). CUDA modules get torch's SyncBatchNorm, others :class:`GlobalBatchNorm`. The
    new layers share the old ones' parameters and buffers, and the old layers come back on exit, so
    optimisers, checkpoints and exports are unaffected. Nothing changes in a single process."""
    if world_size() == 1:
        yield module
        return
    cuda = next(module.parameters()).is_cuda
    cls = nn.SyncBatchNorm if cuda else GlobalBatchNorm  # nn.SyncBatchNorm: CUDA only
    swapped = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, _BatchNorm)
        and not isinstance(child, (GlobalBatchNorm, nn.SyncBatchNorm))
    ]
    for parent, name, child in swapped:
        setattr(parent, name, _synchronised(child, cls))
    try:
        yield module
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
