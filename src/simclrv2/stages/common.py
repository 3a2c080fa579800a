"""What every stage needs: its directory and metrics, the training image size, the schedule, and
the accuracy of a classifier on the test set."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from simclrv2 import distributed
from simclrv2.augment import SimCLRAugment
from simclrv2.config import AugmentConfig, DataConfig, ModelConfig, OptimizerConfig
from simclrv2.data import ImageDataset, batches_per_epoch, load_dataset
from simclrv2.evaluation import extract, topk_accuracy
from simclrv2.export import ExportedModel, save_exported
from simclrv2.metrics import MetricsWriter
from simclrv2.models import ResNet, build_encoder
from simclrv2.optim import WarmupCosine, build_optimizer, scaled_learning_rate
from simclrv2.rundir import write_atomically
from simclrv2.runtime import Runtime
from simclrv2.training import Stage

RESULTS = "results.json"


def open_stage(name: str, directory: Path, runtime: Runtime, seed: int) -> Stage:
    """The stage's folder and metrics; seeds the global generator, so that the networks the stage
    builds next start from the same weights on every run (and every process) with this seed."""
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    writer = MetricsWriter(directory / "metrics.csv", name, enabled=distributed.rank() == 0)
    return Stage(name, directory, runtime, writer)


def pretrain_augment(settings: AugmentConfig, size: int) -> SimCLRAugment:
    """The pretraining views ``settings`` ask for, at ``size`` px (pretraining, report, CLI grid)."""
    return SimCLRAugment(
        size=size,
        jitter_strength=settings.jitter_strength,
        blur=settings.blur,
        brightness=settings.brightness,
        crop_scale=(settings.crop_min_area, 1.0),
    )


def optimizer_and_schedule(
    settings: OptimizerConfig, model: nn.Module, epochs: int, batch_size: int, dataset_size: int,
    classifiers: tuple[nn.Module, ...] = (),
) -> tuple[torch.optim.Optimizer, WarmupCosine]:  # fmt: skip
    """The optimiser over ``model``'s parameter groups, and warm-up + cosine over the whole run, with
    the learning rate scaled by the global batch size."""
    peak = scaled_learning_rate(settings.base_lr, batch_size, settings.lr_scaling)
    steps = batches_per_epoch(
        dataset_size, batch_size, drop_last=True, world_size=distributed.world_size()
    )
    schedule = WarmupCosine.from_warmup(
        peak, epochs * steps, settings.warmup, settings.warmup_unit, steps
    )
    optimizer = build_optimizer(
        settings.optimizer,
        model,
        peak,
        settings.weight_decay,
        settings.momentum,
        classifiers=classifiers,
    )
    return optimizer, schedule


@torch.no_grad()
def classifier_accuracy(
    model: nn.Module, test: ImageDataset, runtime: Runtime, image_size: int
) -> dict:
    """Top-1/top-5 in percent of a classifier on centre-cropped test images, and its confusion matrix
    (rows: true class, columns: predicted)."""
    model.eval()
    logits, labels = extract(model, test, runtime, image_size)
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep]
    classes = logits.shape[1]
    confusion = torch.bincount(labels * classes + logits.argmax(1), minlength=classes * classes)
    return topk_accuracy(logits, labels) | {
        "confusion": confusion.reshape(classes, classes).tolist()
    }


def write_results(directory: Path, results: dict) -> None:
    """Rank 0 writes ``results.json``; every process returns once it is there."""
    if distributed.rank() == 0:
        write_atomically(directory / RESULTS, json.dumps(results, indent=2) + "\n")
    distributed.barrier()


def export(model: ExportedModel, directory: Path) -> None:
    """Rank 0 writes the stage's exported model; every process returns once it is complete."""
    if distributed.rank() == 0:
        save_exported(model, directory, overwrite=True)
    distributed.barrier()


def read_results(directory: Path) -> dict | None:
    path = directory / RESULTS
    return json.loads(path.read_text()) if path.exists() else None


def train_image_size(configured: int | None, data: ImageDataset) -> int:
    """The side the networks see: the configured size, else the data's own."""
    return configured or data.image_size


def load_split(settings: DataConfig, split: str) -> ImageDataset:
    """One split of the configured data source."""
    return load_dataset(
        settings.source, split, image_size=settings.image_size, strict=settings.strict,
        cache_dir=settings.cache_dir, workers=settings.num_workers,
    )  # fmt: skip


def build_stage_encoder(
    settings: ModelConfig, arch: str, data: ImageDataset, image_size: int
) -> ResNet:
    """An encoder ``arch`` for these images: their channels, the configured stem and init."""
    return build_encoder(
        arch, image_size, data.channels, settings.cifar_stem, settings.zero_init_residual
    )
