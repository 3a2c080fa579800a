"""SimCLRv2's memory (Sec. 2, after MoCo, arXiv 1911.05722): a queue of embeddings of past batches,
computed by an exponential-moving-average (EMA) copy of the network, used as extra negatives.

The paper gives the size (65,536) and the decay (0.999) but the authors never released the code;
what they leave open is chosen as in MoCo: the EMA copy embeds the first view of each image of the
step (N entries per step over all processes, so the queue spans 65,536 / N steps), runs with
training-mode BatchNorm (batch statistics, per process), and is updated before it embeds, from the
weights the last optimiser step left. Every process pushes the gathered global batch, so all
queues are identical.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EmbeddingQueue(nn.Module):
    """First in, first out: the last ``size`` embeddings pushed, the oldest overwritten first.

    Embedding number t (counting from 0 over all pushes) lives in row t mod ``size``; the buffers
    ``entries`` (size, dim) and ``pushed`` go into checkpoints, so a resumed run has the same queue.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("entries", torch.zeros(size, dim))
        self.register_buffer("pushed", torch.zeros((), dtype=torch.int64))

    def negatives(self) -> Tensor:
        """The embeddings held, (min(pushed, size), dim); none before the first push."""
        return self.entries[: min(int(self.pushed), self.size)]

    @torch.no_grad()
    def push(self, embeddings: Tensor) -> None:
        """Append ``embeddings`` (k, dim), overwriting the oldest once the queue is full."""
        count = embeddings.shape[0]
        first = int(self.pushed) + max(count - self.size, 0)  # only the last ``size`` can stay
        kept = embeddings[-self.size :]
        rows = (first + torch.arange(kept.shape[0], device=kept.device)) % self.size
        self.entries[rows] = kept.to(self.entries.dtype)
        self.pushed += count


class MovingAverage(nn.Module):
    """A copy of a network whose parameters follow the network's as an exponential moving average:
    p_ema <- decay * p_ema + (1 - decay) * p at each :meth:`update` (decay 0.999 in SimCLRv2).
    Buffers (BatchNorm statistics) are copied. The copy is never differentiated."""

    def __init__(self, source: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.network = copy.deepcopy(source).requires_grad_(False)

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        for average, current in zip(self.network.parameters(), source.parameters(), strict=True):
            average.lerp_(current, 1 - self.decay)
        for average, current in zip(self.network.buffers(), source.buffers(), strict=True):
            average.copy_(current)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        with torch.no_grad():
            return self.network(x)
