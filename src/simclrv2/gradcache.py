"""Gradient caching (Gao et al., arXiv 2101.06983): a contrastive batch larger than memory allows.

:func:`chunked_forward` runs a network on a batch in chunks without autograd, keeping no
activations, and returns the whole batch's outputs; the loss and its gradient with respect to
those outputs are taken on the whole batch; the backward then runs each chunk again, with the same
inputs, RNG state and autocast, and back-propagates that chunk's share of the outputs' gradient at
once. Memory: one chunk's activations and graph, plus the inputs and outputs of the batch. (Keeping
every chunk's graph until the backward, as activation checkpointing does, fragments glibc's heap on
the CPU: the resident memory then grows with the number of chunks; ``benchmarks/memory.py``.)

The parameter gradients are those of the unchunked batch, BatchNorm apart:

- BatchNorm normalises each chunk with that chunk's statistics (over all processes with global BN).
  Pretraining orders its 2n views [first views; second views] and takes chunk sizes that divide n, so
  no chunk holds both views of an image (as MoCo's shuffled BN): batch statistics cannot help tell a
  positive pair apart.
- Running statistics are updated once per step, by the first chunk; the other chunks and the
  second pass in the backward leave every buffer as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from simclrv2.errors import UserError


@contextmanager
def _frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Forwards inside leave ``module``'s buffers (BatchNorm's running statistics) unchanged."""
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None  # CUDA only
    return torch.get_rng_state(), cuda


class _ChunkedForward(torch.autograd.Function):
    """Forward: ``module`` on each chunk, without autograd. Backward: each chunk again with
    autograd, its outputs' gradient back-propagated into the parameters' ``.grad`` at once (so
    the parameters, inputs of this function only to make its outputs differentiable, get None)."""

    @staticmethod
    def forward(ctx, x: Tensor, module: nn.Module, chunk_size: int, *parameters: Tensor):  # type: ignore[override]
        device = x.device.type
        ctx.module, ctx.chunk_size, ctx.count = module, chunk_size, len(parameters)
        ctx.autocast = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
        ctx.rng, outputs = [], []
        ctx.save_for_backward(x)
        ctx.set_materialize_grads(False)
        for i, part in enumerate(x.split(chunk_size)):
            ctx.rng.append(_rng_state(x.device))
            with _frozen_buffers(module) if i else nullcontext():  # chunk 0: the one update
                out = module(part)
            outputs.append((out,) if isinstance(out, Tensor) else out)
        ctx.single = isinstance(out, Tensor)
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        devices = [x.device] if x.device.type == "cuda" else []
        start = 0
        with _frozen_buffers(ctx.module):
            for part, (cpu_rng, cuda_rng) in zip(x.split(ctx.chunk_size), ctx.rng):
                rows = slice(start, start + part.shape[0])
                start = rows.stop
                with torch.random.fork_rng(devices), torch.enable_grad():
                    torch.set_rng_state(cpu_rng)
                    if cuda_rng is not None:
                        torch.cuda.set_rng_state(cuda_rng, x.device)  # CUDA only
                    with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                        out = ctx.module(part)
                outputs = (out,) if ctx.single else out
                pairs = [(o, g[rows]) for o, g in zip(outputs, grads) if g is not None]
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, None) + (None,) * ctx.count


def chunked_forward(module: nn.Module, x: Tensor, chunk_size: int) -> Tensor | tuple[Tensor, ...]:
    """``module(x)`` (a tensor or a tuple of tensors, batch first) computed ``chunk_size`` rows at
    a time; the backward runs the chunks again instead of keeping their activations."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    outputs = _ChunkedForward.apply(x, module, chunk_size, *parameters)
    return outputs[0] if len(outputs) == 1 else outputs


def check_chunk_size(chunk_size: int, images_per_process: int) -> None:
    """The chunks rule: a chunk size (in views) dividing the images each process holds, so a chunk
    never holds both views of an image."""
    if chunk_size and images_per_process % chunk_size:
        divisors = [k for k in range(1, images_per_process + 1) if images_per_process % k == 0]
        raise UserError(
            f"pretrain.chunk_size={chunk_size} must divide the {images_per_process} images each "
            f"process holds per step, so that no chunk holds both views of an image; choose one of "
            f"{', '.join(map(str, divisors[-6:]))}, or 0 for no chunking"
        )
