"""Evaluation of a trained encoder's representation h: linear evaluation and weighted kNN, on
features of the frozen encoder cached once (:mod:`simclrv2.evaluation` holds the protocols)."""

from __future__ import annotations

from torch import Tensor

from simclrv2 import distributed
from simclrv2.config import Config
from simclrv2.data import ImageDataset
from simclrv2.errors import UserError
from simclrv2.evaluation import LinearProbe, extract, fit_linear_lbfgs, fit_linear_sgd, knn_scores
from simclrv2.export import ExportedModel, match_channels
from simclrv2.optim import scaled_learning_rate
from simclrv2.runtime import Runtime
from simclrv2.scores import VALIDATION, by_split, classification_scores


def _labelled_features(
    exported: ExportedModel, splits: dict[str, ImageDataset], runtime: Runtime, image_size: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """h and labels of the labelled images of each split (frozen encoder, evaluation crop at
    ``image_size``, the training images' size)."""
    splits = dict(zip(splits, match_channels(exported.encoder.spec.in_channels, *splits.values())))
    encoder = runtime.module(exported.encoder).eval()
    features = {}
    for name, data in splits.items():
        h, labels = extract(encoder, data, runtime, image_size)
        known = labels >= 0
        features[name] = h[known], labels[known]
    return features


def _fit(
    config: Config, h: Tensor, y: Tensor, num_classes: int, l2: float, runtime: Runtime
) -> LinearProbe:
    settings = config.linear
    if settings.method == "lbfgs":
        return fit_linear_lbfgs(h, y, num_classes, l2, device=runtime.device)
    lr = scaled_learning_rate(settings.base_lr, settings.batch_size, settings.lr_scaling)
    return fit_linear_sgd(
        h, y, num_classes, settings.epochs, settings.batch_size, lr, config.runtime.seed
    )


def linear_eval(
    config: Config,
    exported: ExportedModel,
    train: ImageDataset,
    evaluation: dict[str, ImageDataset],
    runtime: Runtime,
) -> dict:
    """Linear evaluation: a probe on the labelled ``train`` images per L2 penalty of
    ``linear.l2`` (L-BFGS), the one with the best validation top-1 kept (the first without a
    validation split); its scores on each ``evaluation`` split."""
    settings = config.linear
    if not settings.l2:
        raise UserError("linear.l2 is empty; give at least one L2 penalty, e.g. [1e-4]")
    features = _labelled_features(
        exported, {"train": train} | evaluation, runtime, train.image_size
    )
    train_h, train_y = features.pop("train")
    penalties = settings.l2 if settings.method == "lbfgs" else settings.l2[:1]
    probes = distributed.computed_once(  # one fit per penalty, on rank 0, for every process
        lambda: {
            l2: _fit(config, train_h, train_y, train.num_classes, l2, runtime) for l2 in penalties
        }
    )
    chosen, by_penalty = penalties[0], {}
    if VALIDATION in features and len(penalties) > 1:
        val_h, val_y = features[VALIDATION]
        by_penalty = {
            l2: (probe(val_h).argmax(1) == val_y).double().mean().item() * 100
            for l2, probe in probes.items()
        }
        chosen = max(by_penalty, key=by_penalty.get)  # the first of equals: the smaller penalty
    probe = probes[chosen]
    per_split = {
        name: classification_scores(probe(h), y, train.classes) for name, (h, y) in features.items()
    }
    choice = {"l2": chosen, "chosen_on": VALIDATION if by_penalty else None}
    if by_penalty:
        choice["validation_top1_by_l2"] = {f"{l2:g}": top1 for l2, top1 in by_penalty.items()}
    return by_split(per_split) | choice | {"method": settings.method, "train_images": len(train_y)}


def knn_eval(
    config: Config,
    exported: ExportedModel,
    train: ImageDataset,
    evaluation: dict[str, ImageDataset],
    runtime: Runtime,
) -> dict:
    """Weighted kNN of h with the labelled ``train`` images as the bank, scored on each
    ``evaluation`` split."""
    features = _labelled_features(
        exported, {"train": train} | evaluation, runtime, train.image_size
    )
    bank, bank_y = features.pop("train")
    k, temperature = config.knn.k, config.knn.temperature
    per_split = {
        name: classification_scores(
            knn_scores(bank, bank_y, h, train.num_classes, k, temperature, device=runtime.device),
            y,
            train.classes,
        )
        for name, (h, y) in features.items()
    }
    return by_split(per_split) | {"k": k}
