"""Evaluation of a trained encoder's representation h: linear evaluation and weighted kNN, on
features of the frozen encoder cached once (:mod:`simclrv2.evaluation` holds the protocols)."""

from __future__ import annotations

from torch import Tensor

from simclrv2.config import Config
from simclrv2.data import ImageDataset
from simclrv2.evaluation import (
    extract,
    fit_linear_lbfgs,
    fit_linear_sgd,
    knn_accuracy,
    topk_accuracy,
)
from simclrv2.export import ExportedModel, match_channels
from simclrv2.optim import scaled_learning_rate
from simclrv2.runtime import Runtime


def _labelled_features(
    exported: ExportedModel, train: ImageDataset, test: ImageDataset, runtime: Runtime
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """h and labels of the labelled training and test images (frozen encoder, evaluation crop at
    the training images' size)."""
    train, test = match_channels(exported.encoder.spec.in_channels, train, test)
    encoder = runtime.module(exported.encoder).eval()

    def labelled(data: ImageDataset) -> tuple[Tensor, Tensor]:
        features, labels = extract(encoder, data, runtime, train.image_size)
        known = labels >= 0
        return features[known], labels[known]

    return *labelled(train), *labelled(test)


def linear_eval(
    config: Config,
    exported: ExportedModel,
    train: ImageDataset,
    test: ImageDataset,
    runtime: Runtime,
) -> dict:
    """Linear evaluation on all labelled training images, reported on ``test``."""
    train_h, train_y, test_h, test_y = _labelled_features(exported, train, test, runtime)
    settings = config.linear
    if settings.method == "lbfgs":
        probe = fit_linear_lbfgs(train_h, train_y, train.num_classes, settings.l2)
    else:
        lr = scaled_learning_rate(settings.base_lr, settings.batch_size, settings.lr_scaling)
        probe = fit_linear_sgd(
            train_h,
            train_y,
            train.num_classes,
            settings.epochs,
            settings.batch_size,
            lr,
            config.runtime.seed,
        )
    return topk_accuracy(probe(test_h), test_y) | {
        "method": settings.method,
        "train_images": len(train_y),
    }


def knn_eval(
    config: Config,
    exported: ExportedModel,
    train: ImageDataset,
    test: ImageDataset,
    runtime: Runtime,
) -> dict:
    """Weighted kNN accuracy of h with the labelled training images as the bank."""
    bank, bank_y, queries, labels = _labelled_features(exported, train, test, runtime)
    k, temperature = config.knn.k, config.knn.temperature
    scores = knn_accuracy(bank, bank_y, queries, labels, train.num_classes, k, temperature)
    return scores | {"k": k}
