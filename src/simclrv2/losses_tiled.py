r"""The contrastive cross-entropy without its similarity matrix: row/column tiles and a streaming
log-sum-exp (the approach of Inf-CL, arXiv 2410.17243), so memory grows linearly with the batch.

For queries q (M, d), keys k (C, d), logits s = q k^T / tau, one excluded key per row (its own view)
and one positive key per row, the loss is the mean over rows of

    lse_i - s_i,pos(i),   lse_i = log sum_{j != excluded(i)} exp(s_ij).

Forward: for each tile of rows, walk the tiles of columns merging each tile's log-sum-exp into a
running one (logaddexp), so only one (tile x tile) block of s exists at a time. Backward: recompute
each block, p = exp(s - lse) is the softmax, and with g = p - onehot(pos) accumulate
dq = g k / (tau M) and dk = g^T q / (tau M). Memory: the inputs, their gradients, lse (M,) and one
block; time: about 1.3x the dense matrix products (the backward recomputes s).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

TILE = 1024  # rows and columns of a block: 4 MiB of fp32 logits, in cache, and big enough matmuls
DENSE_BYTES_PER_LOGIT = 16  # the dense loss's fp32 logits, their masked copy, softmax, gradient
DENSE_SHARE = 4  # the dense loss may take 1 / DENSE_SHARE of the memory free on a GPU


@functools.cache
def cuda_dense_limit(device: torch.device) -> int:
    """CUDA only. The most logits the dense loss may hold on ``device``: a quarter of the memory
    free for tensors there (the driver's free memory plus what the caching allocator holds
    unused; host-side queries, no wait on the device) at 16 bytes a logit. Measured once per
    process, at the first loss (after a forward has allocated its activations), so every step
    of a run takes the same path."""
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free // DENSE_SHARE // DENSE_BYTES_PER_LOGIT


def _block(
    queries: Tensor, keys: Tensor, excluded: Tensor, cols: slice, temperature: float
) -> Tensor:
    """Logits of ``queries`` (r, d) against ``keys[cols]``, each row's excluded column at -inf."""
    s = queries @ keys[cols].T / temperature  # (r, c)
    local = excluded - cols.start  # (r,) column of each row's excluded key, if in this block
    own = torch.arange(s.shape[1], device=s.device) == local[:, None]  # (r, c)
    return s.masked_fill_(own, float("-inf"))


def _tiles(size: int, tile: int) -> list[slice]:
    return [slice(start, min(start + tile, size)) for start in range(0, size, tile)]


class _TiledContrastiveLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, keys, positives, excluded, temperature, tile):  # type: ignore[override]
        lse = torch.empty(queries.shape[0], dtype=queries.dtype, device=queries.device)  # (M,)
        for rows in _tiles(queries.shape[0], tile):
            running = torch.full_like(lse[rows], float("-inf"))
            for cols in _tiles(keys.shape[0], tile):
                block = _block(queries[rows], keys, excluded[rows], cols, temperature)
                running = torch.logaddexp(running, torch.logsumexp(block, dim=1))
            lse[rows] = running
        positive_logits = (queries * keys[positives]).sum(1) / temperature  # (M,)
        ctx.save_for_backward(queries, keys, positives, excluded, lse)
        ctx.temperature, ctx.tile = temperature, tile
        return (lse - positive_logits).mean()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        queries, keys, positives, excluded, lse = ctx.saved_tensors
        temperature, tile = ctx.temperature, ctx.tile
        d_queries, d_keys = torch.zeros_like(queries), torch.zeros_like(keys)
        for rows in _tiles(queries.shape[0], tile):
            for cols in _tiles(keys.shape[0], tile):
                block = _block(queries[rows], keys, excluded[rows], cols, temperature)
                softmax = torch.exp(block - lse[rows, None])  # (r, c); 0 at the excluded key
                d_queries[rows] += softmax @ keys[cols]
                d_keys[cols] += softmax.T @ queries[rows]
        d_queries -= keys[positives]  # the one-hot part of (p - onehot)
        d_keys.index_add_(0, positives, -queries)
        scale = grad / (temperature * queries.shape[0])
        return d_queries * scale, d_keys * scale, None, None, None, None


def tiled_contrastive_loss(
    queries: Tensor,
    keys: Tensor,
    positives: Tensor,
    excluded: Tensor,
    temperature: float,
    tile: int = TILE,
) -> Tensor:
    """Mean over the M rows of -log softmax(queries @ keys.T / temperature) at ``positives``, with
    each row's ``excluded`` column left out of the softmax; never more than ``tile`` x ``tile``
    logits at once. ``queries`` (M, d), ``keys`` (C, d), ``positives`` and ``excluded`` (M,) int64
    column indices; the same value and gradients as the dense computation."""
    return _TiledContrastiveLoss.apply(queries, keys, positives, excluded, temperature, tile)
