"""Gradient caching (Gao et al., arXiv 2101.06983): a contrastive batch larger than memory allows.

:func:`chunked_forward` runs a network on a batch in chunks without keeping their activations, and
returns the whole batch's outputs; the loss and its gradient with respect to those outputs are taken
on the whole batch; the backward then runs each chunk again, with the same inputs and RNG state, and
back-propagates the outputs' gradient through it. That is activation checkpointing of each chunk
(``torch.utils.checkpoint``, non-reentrant): the autograd engine reaches a chunk only once the
loss's gradient for all outputs exists. Memory: one chunk's activations plus the inputs and outputs
of the batch. The parameter gradients are those of the unchunked batch, BatchNorm apart:

- BatchNorm normalises each chunk with that chunk's statistics (over all processes with global BN).
  Pretraining orders its 2n views [first views; second views] and takes chunk sizes that divide n, so
  no chunk holds both views of an image (as MoCo's shuffled BN): batch statistics cannot help tell a
  positive pair apart.
- Running statistics are updated once per step, by the first chunk; the other chunks and the
  recomputation in the backward leave every buffer as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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


def _checkpointed(module: nn.Module, x: Tensor) -> Tensor | tuple[Tensor, ...]:
    """``module(x)`` keeping only ``x``; the backward recomputes it with frozen buffers."""

    def contexts() -> tuple[AbstractContextManager, AbstractContextManager]:  # forward, recompute
        return nullcontext(), _frozen_buffers(module)

    return checkpoint(module, x, use_reentrant=False, context_fn=contexts)


def chunked_forward(module: nn.Module, x: Tensor, chunk_size: int) -> Tensor | tuple[Tensor, ...]:
    """``module(x)`` (a tensor or a tuple of tensors, batch first) computed ``chunk_size`` rows at
    a time, each chunk's activations recomputed in the backward instead of kept."""
    first, *rest = x.split(chunk_size)
    outputs = [_checkpointed(module, first)]  # the step's one update of the running statistics
    with _frozen_buffers(module):
        outputs += [_checkpointed(module, part) for part in rest]
    if isinstance(outputs[0], Tensor):
        return torch.cat(outputs)
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def check_chunk_size(chunk_size: int, images_per_process: int) -> None:
    """The chunks rule: a chunk size (in views) dividing the images each process holds, so a chunk
    never holds both views of an image."""
    if chunk_size < 0 or (chunk_size and images_per_process % chunk_size):
        divisors = [k for k in range(1, images_per_process + 1) if images_per_process % k == 0]
        raise UserError(
            f"pretrain.chunk_size={chunk_size} must divide the {images_per_process} images each "
            f"process holds per step, so that no chunk holds both views of an image; choose one of "
            f"{', '.join(map(str, divisors[-6:]))}, or 0 for no chunking"
        )
