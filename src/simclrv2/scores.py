"""Scores of a classifier on a labelled split, for uneven classes as well as balanced ones.

Top-k accuracy, balanced accuracy (the mean of the per-class recalls), macro-F1, per-class
precision, recall and F1, the confusion matrix (rows: true class, columns: predicted) and, for two
classes, the area under the ROC curve. Accuracies, precision, recall and F1 are in percent; AUROC
is in [0, 1]. A class absent from the split has no recall and is left out of the means; a class
never predicted has precision 0 (scikit-learn's ``zero_division=0``).

A run's results give every number with the split it comes from: :func:`by_split` keeps the scores
of each split and repeats those of the reported one (test when there is one, else validation) at
the top level.
"""

from __future__ import annotations

import torch
from torch import Tensor

VALIDATION, TEST = "validation", "test"


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent of class ``scores`` (N, C) against ``labels`` (N,)."""
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (N, k)
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    flat = torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of ``scores`` (N,) for the boolean ``positive`` (N,): the chance
    that a random positive scores above a random negative, ties counting half (Mann-Whitney U)."""
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based; a tie group shares its mean
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = ranks[positive].sum().item() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def classification_scores(logits: Tensor, labels: Tensor, classes: list[str]) -> dict:
    """Every score of the module docstring for ``logits`` (N, C) against ``labels`` (N,) in
    0..C-1; ``per_class`` and the confusion matrix are keyed and ordered by ``classes``."""
    num_classes = logits.shape[1]
    names = classes if len(classes) == num_classes else [str(k) for k in range(num_classes)]
    confusion = confusion_matrix(logits.argmax(1), labels, num_classes)
    hits = confusion.diagonal().double()
    support, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    recall = 100 * hits / support.clamp(min=1)
    precision = 100 * hits / predicted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = support > 0
    scored = present | (predicted > 0)
    scores = topk_accuracy(logits, labels) | {
        "balanced_accuracy": recall[present].mean().item(),
        "macro_f1": f1[scored].mean().item(),
        "per_class": {
            name: {
                "precision": precision[k].item(),
                "recall": recall[k].item() if present[k] else None,
                "f1": f1[k].item(),
                "support": int(support[k]),
            }
            for k, name in enumerate(names)
        },
        "confusion": confusion.tolist(),
    }
    if num_classes == 2:
        margin = logits[:, 1].double() - logits[:, 0].double()  # monotone in P(class 1)
        scores["auroc"] = auroc(margin, labels == 1)
    return scores


def reported_split(per_split: dict[str, dict]) -> str:
    """The split a run reports: test when there is one, else validation."""
    return TEST if TEST in per_split else next(iter(per_split))


def by_split(per_split: dict[str, dict]) -> dict:
    """``{"splits": per_split, "split": the reported one, **its scores}`` (nothing if empty)."""
    if not per_split:
        return {}
    name = reported_split(per_split)
    return {"split": name, **per_split[name], "splits": per_split}


def headline(metrics: dict) -> dict:
    """``metrics`` without the per-class scores, the confusion matrix and the other splits:
    what a line of a table or a printed summary shows."""
    return {k: v for k, v in metrics.items() if k not in ("confusion", "per_class", "splits")}
