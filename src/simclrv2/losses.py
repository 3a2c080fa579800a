"""Losses as pure functions of tensors: NT-Xent (SimCLR), the distillation loss (SimCLRv2) and
the cross-entropy of partly labelled batches. None reads a value back to the host."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simclrv2 import distributed
from simclrv2.losses_tiled import cuda_dense_limit, tiled_contrastive_loss

# Logits (2n x (2N + K)) above which the tiled loss is used off CUDA: past the measured crossover
# (2N = 2048 on a CPU, benchmarks/memory.py): 2N above 4096 views in one process. On CUDA the
# dense loss is faster, and used while it fits in the free memory (cuda_dense_limit).
TILED_ABOVE = 1 << 24


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, negatives: Tensor | None = None) -> Tensor:
    r"""Normalised-temperature cross-entropy over the GLOBAL batch (SimCLR, Eq. 1).

    ``z1``, ``z2``: (n, d) projections of this process's n images under the two views. Under
    torch.distributed every process's views are gathered (with a gradient-summing backward), so
    for a global batch of N images each view has its twin as positive and the other 2N - 2 views as
    negatives; ``negatives`` (K, d), e.g. SimCLRv2's memory buffer, adds K more for every view.

    Reduction: the MEAN over this process's 2n views of -log softmax at the positive, i.e. the
    paper's mean over all 2N views once gradients are averaged across processes. The authors' code
    sums the two directions and averages over images, which is exactly 2x this value.

    Computed in fp32 (also under autocast). Above :data:`TILED_ABOVE` logits (on CUDA: above what
    fits in a quarter of the free memory), in row/column tiles that never hold the (2n, 2N + K)
    similarity matrix (:mod:`simclrv2.losses_tiled`).
    """
    with torch.autocast(z1.device.type, enabled=False):
        dtype = torch.promote_types(z1.dtype, torch.float32)
        z1, z2 = F.normalize(z1.to(dtype), dim=1), F.normalize(z2.to(dtype), dim=1)  # (n, d) each
        n = z1.shape[0]
        keys = [distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)]  # (N, d) each
        big_n = keys[0].shape[0]
        if negatives is not None:
            keys.append(F.normalize(negatives.to(dtype), dim=1))  # (K, d)
        keys = torch.cat(keys)  # (2N + K, d)
        queries = torch.cat([z1, z2])  # (2n, d)
        own = torch.arange(n, device=z1.device) + distributed.rank() * n  # global image index
        excluded = torch.cat([own, own + big_n])  # each view's own column: no self-pairs
        positives = torch.cat([own + big_n, own])
        if queries.shape[0] * keys.shape[0] > _dense_limit(queries.device):
            return tiled_contrastive_loss(queries, keys, positives, excluded, temperature)
        logits = queries @ keys.T / temperature  # (2n, 2N + K)
        logits = logits.scatter(1, excluded[:, None], float("-inf"))  # no self-pairs
        return F.cross_entropy(logits, positives)


def _dense_limit(device: torch.device) -> int:
    """The most logits the dense NT-Xent computes on ``device`` before it tiles."""
    return cuda_dense_limit(device) if device.type == "cuda" else TILED_ABOVE


def labelled_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (M, K) over the rows whose target (M,) is a class; -1 marks
    an unlabelled row, and a batch without labels gives 0 (not the NaN of an empty mean).

    Every row is computed and the unlabelled ones weigh 0, so the shapes do not depend on the
    labels: selecting the labelled rows by a boolean mask would read the mask back to the host.
    """
    known = targets >= 0
    losses = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")  # (M,)
    return torch.where(known, losses, 0).sum() / known.sum().clamp(min=1)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, scale_by_t2: bool = False
) -> Tensor:
    r"""SimCLRv2 Eq. 3: -sum_y P_T(y|x; tau) log P_S(y|x; tau), mean over the batch.

    Both softmaxes at ``temperature`` (0.1 for self-distillation, 1.0 big-to-small in the paper); the
    teacher is not differentiated. ``scale_by_t2`` multiplies by tau^2, as the authors' colab does.
    """
    teacher = torch.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_student = torch.log_softmax(student_logits.float() / temperature, dim=1)
    loss = -(teacher * log_student).sum(dim=1).mean()
    return loss * temperature**2 if scale_by_t2 else loss
