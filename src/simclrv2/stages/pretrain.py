"""Stage 1: contrastive pretraining without labels (SimCLR Alg. 1; SimCLRv2 Sec. 2).

For a batch of N images: two independently augmented views each, the encoder gives h and the
projection head z for all 2N views in one pass (so BatchNorm sees both views, as in the reference),
and NT-Xent on z with negatives from the global batch. When labels exist, a linear classifier on
stop-gradient h is trained alongside (it cannot change the encoder) and a weighted kNN monitor on
the test split is logged, both at epoch ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclrv2.config import Config
from simclrv2.data import ImageDataset
from simclrv2.evaluation import extract, knn_accuracy, topk_accuracy
from simclrv2.export import ExportedModel, save_exported
from simclrv2.losses import nt_xent
from simclrv2.metrics import LOG
from simclrv2.models import ContrastiveModel, LinearClassifier, ProjectionHead
from simclrv2.runtime import Runtime
from simclrv2.stages.common import (
    build_stage_encoder,
    open_stage,
    optimizer_and_schedule,
    pretrain_augment,
    train_image_size,
    write_results,
)
from simclrv2.training import fit


@dataclass
class PretrainResult:
    model: ExportedModel
    metrics: dict[str, float]


def build_contrastive_model(
    config: Config, data: ImageDataset, image_size: int
) -> ContrastiveModel:
    encoder = build_stage_encoder(config.model, config.model.arch, data, image_size)
    m = config.model
    return ContrastiveModel(
        encoder, ProjectionHead(encoder.out_dim, m.head_layers, m.head_hidden_dim, m.proj_dim)
    )


def pretrain(
    config: Config,
    directory: Path,
    train: ImageDataset,
    test: ImageDataset | None,
    runtime: Runtime,
) -> PretrainResult:
    started = time.perf_counter()
    settings, stage = (
        config.pretrain,
        open_stage("pretrain", directory, runtime, config.runtime.seed),
    )
    size = train_image_size(config.data.image_size, train)
    model = runtime.module(build_contrastive_model(config, train, size))
    labelled = bool((train.labels >= 0).any())
    online = (
        runtime.module(LinearClassifier(model.encoder.out_dim, train.num_classes))
        if labelled
        else None
    )
    trained = nn.ModuleDict({"model": model} | ({"online": online} if online else {}))
    optimizer, schedule = optimizer_and_schedule(
        settings,
        trained,
        settings.epochs,
        settings.batch_size,
        len(train),
        classifiers=(online,) if online else (),
    )
    augment = pretrain_augment(config.augment, size)

    def step(images: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        views = torch.cat([augment(images, generator), augment(images, generator)])  # (2n, C, S, S)
        h, z = model(runtime.images(views))
        z1, z2 = z.chunk(2)  # (n, d) each
        contrastive = nt_xent(z1, z2, settings.temperature)
        values = {"loss": contrastive, "contrastive_loss": contrastive.detach()}
        if online is not None:
            targets = labels.repeat(2)  # both views, as the reference
            known = targets >= 0
            logits = online(h.detach()[known])  # stop-gradient: the classifier cannot shape h
            supervised = F.cross_entropy(logits, targets[known])
            values |= {"loss": contrastive + supervised, "online_loss": supervised.detach()}
        return values

    def monitor(epoch: int) -> dict[str, float]:
        if test is None or not labelled:
            return {}
        return evaluate_representation(
            model.encoder,
            online,
            train,
            test,
            runtime,
            size,
            settings.knn_k,
            settings.knn_temperature,
        )

    def monitor_during(epoch: int) -> dict[str, float]:  # the last epoch is evaluated once, below
        every = settings.knn_every
        return monitor(epoch) if every and epoch % every == 0 and epoch < settings.epochs else {}

    position = fit(
        stage, step, dict(trained.items()), optimizer, schedule, train, batch_size=settings.batch_size,
        epochs=settings.epochs, seed=config.runtime.seed, end_of_epoch=monitor_during,
        checkpoint_every=settings.checkpoint_every,
    )  # fmt: skip
    metrics = monitor(settings.epochs)
    metrics["seconds"] = (
        time.perf_counter() - started
    )  # this invocation (a resumed run counts its own part)
    stage.metrics.write(position.step, settings.epochs, metrics)
    exported = ExportedModel(
        model.encoder,
        model.projection_head,
        online,
        selector=0,
        info={"stage": "pretrain", "preset": config.preset},
    )
    save_exported(exported, directory / "model", overwrite=True)
    write_results(directory, metrics)
    LOG.info("pretrain: %s", ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) or "done")
    return PretrainResult(exported, metrics)


def evaluate_representation(
    encoder: nn.Module, online: nn.Module | None, train: ImageDataset, test: ImageDataset, runtime: Runtime,
    image_size: int, k: int, temperature: float,
) -> dict[str, float]:  # fmt: skip
    """kNN accuracy of h (train as the bank) and the online classifier's accuracy on the test split."""
    encoder.eval()
    bank, bank_labels = extract(encoder, train, runtime, image_size)
    queries, labels = extract(encoder, test, runtime, image_size)
    known = bank_labels >= 0
    knn = knn_accuracy(
        bank[known], bank_labels[known], queries, labels, train.num_classes, k, temperature
    )
    values = {"knn_top1": knn["top1"], "knn_top5": knn["top5"]}
    if online is not None:
        online.eval()
        with torch.no_grad():
            logits = online(queries.to(runtime.device)).float().cpu()
        values |= {f"online_linear_{name}": v for name, v in topk_accuracy(logits, labels).items()}
    return values
