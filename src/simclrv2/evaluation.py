"""Evaluation protocols on frozen features: weighted kNN, linear evaluation, classifier accuracy.

- Weighted kNN (the peers' monitor, Wu et al. 2018): cosine similarity to a labelled bank, the k
  nearest vote with weight exp(sim / tau); k = 200, tau 0.1 by default.
- Linear evaluation on cached features of the centre-cropped images: multinomial logistic regression
  fitted by L-BFGS (exact, fast on a CPU), or SGD with Nesterov momentum as in SimCLR (90 epochs,
  no weight decay). Caching features means no crop+flip during linear training (SimCLR augments
  there); the difference is documented and small.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor

from simclrv2 import distributed
from simclrv2.augment import center_crop
from simclrv2.data import ImageDataset, epoch_batches
from simclrv2.runtime import Runtime
from simclrv2.scores import by_split, classification_scores


@torch.no_grad()
def extract(
    fn: Callable[[Tensor], Tensor],
    data: ImageDataset,
    runtime: Runtime,
    image_size: int,
    batch_size: int = 512,
) -> tuple[Tensor, Tensor]:
    """``fn`` (float images on the device -> (B, D)) over ``data`` in order, centre-cropped as for
    evaluation; returns (features (N, D) float32 on the CPU, labels (N,)).

    Under several processes each extracts a contiguous run of whole batches (the batches one
    process would extract, so the features are the same) and every process receives all of them
    in order: every process must call it at the same point.
    """
    starts = _shard_starts(len(data), batch_size, distributed.world_size())
    start, stop = starts[distributed.rank()], starts[distributed.rank() + 1]
    # views; a process left with nothing extracts one image, for the feature width
    shard = data.slice(start, stop) if start < stop else data.slice(0, 1)
    features = []
    batches = epoch_batches(
        shard, batch_size, seed=0, epoch=0, shuffle=False, drop_last=False, device=runtime.device
    )
    with closing(batches):
        for images, _, extents in batches:
            with runtime.autocast():
                out = fn(runtime.images(center_crop(images, image_size, extents=extents)))
            features.append(out.float().cpu())
    counts = [b - a for a, b in pairwise(starts)]
    features = torch.cat(features)[: stop - start]
    return distributed.gather_rows(features, counts), data.labels.clone()


def _shard_starts(n: int, batch_size: int, processes: int) -> list[int]:
    """Where each process's rows of ``n`` begin (and the end, ``n``): runs of whole batches."""
    batches = -(-n // batch_size)
    per_process = -(-batches // processes) * batch_size
    return [min(rank * per_process, n) for rank in range(processes)] + [n]


@torch.no_grad()
def classifier_scores(
    model: torch.nn.Module, splits: dict[str, ImageDataset], runtime: Runtime, image_size: int
) -> dict:
    """The :mod:`simclrv2.scores` of a classifier on the centre-cropped labelled images of each
    split, by split (:func:`simclrv2.scores.by_split`)."""
    model.eval()
    per_split = {}
    for name, data in splits.items():
        logits, labels = extract(model, data, runtime, image_size)
        keep = labels >= 0
        per_split[name] = classification_scores(logits[keep], labels[keep], data.classes)
    return by_split(per_split)


def top1_summary(metrics: dict) -> str:
    """ "top-1 X% on SPLIT" of a stage's metrics, or "no labelled split to score"."""
    if "top1" not in metrics:
        return "no labelled split to score"
    return f"top-1 {metrics['top1']:.2f}% on {metrics['split']}"


def knn_scores(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Class scores (Q, C) on the CPU of weighted kNN: the k most cosine-similar bank rows vote
    exp(sim / tau). Computed on ``device``, ``chunk`` queries at a time (a (chunk, N) matrix);
    over several processes each scores a run of whole chunks (the same chunks as one process, so
    the same numbers) and every process receives all the scores."""
    bank = F.normalize(bank.to(device), dim=1)  # (N, D)
    bank_labels = bank_labels.to(device)
    k = min(k, bank.shape[0])
    starts = list(range(0, queries.shape[0], chunk))
    per_rank = -(-len(starts) // distributed.world_size())
    mine = starts[distributed.rank() * per_rank : (distributed.rank() + 1) * per_rank]
    scores = [torch.zeros(0, num_classes, device=device)]
    for start in mine:
        part = queries[start : start + chunk].to(device)
        similarity = F.normalize(part, dim=1) @ bank.T  # (q, N)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (q, k)
        votes = torch.zeros(similarity.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        scores.append(votes)
    counts = [
        sum(min(chunk, queries.shape[0] - s) for s in starts[r * per_rank : (r + 1) * per_rank])
        for r in range(distributed.world_size())
    ]
    return distributed.gather_rows(torch.cat(scores), counts).cpu()


@dataclass
class LinearProbe:
    """A fitted logistic regression on standardised features (mean/std of the training features)."""

    weight: Tensor  # (C, D)
    bias: Tensor  # (C,)
    mean: Tensor  # (D,)
    std: Tensor  # (D,)

    def __call__(self, features: Tensor) -> Tensor:
        return ((features - self.mean) / self.std) @ self.weight.T + self.bias


def fit_linear_lbfgs(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 300,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Multinomial logistic regression with an L2 penalty ``l2 * ||W||^2 / 2``, fitted by L-BFGS
    in float64 on ``device``; the probe comes back on the CPU."""
    features, labels = features.to(device, torch.float64), labels.to(device)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = (weight.detach(), bias.detach(), mean, std)
    return LinearProbe(*(t.float().cpu() for t in fitted))


def fit_linear_sgd(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> LinearProbe:
    """SimCLR's linear evaluation on cached features: SGD, Nesterov momentum 0.9, cosine decay, no decay."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(linear.parameters(), lr=lr, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, -(-x.shape[0] // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(linear(x[idx]), labels[idx]).backward()
            optimizer.step()
            scheduler.step()
    return LinearProbe(linear.weight.detach(), linear.bias.detach(), mean, std)
