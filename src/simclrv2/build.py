"""From a config to the objects a stage trains with: the data, the encoder and the contrastive
model, the pretraining augmentation, the optimiser and its schedule.

The one place where config sections meet the building blocks, so that the blocks (data, models,
augment, optim) never see a config and the stages never repeat how a block is made.
"""

from __future__ import annotations

import torch
from torch import nn

from simclrv2 import distributed
from simclrv2.augment import SimCLRAugment
from simclrv2.config import AugmentConfig, Config, DataConfig, ModelConfig, OptimizerConfig
from simclrv2.data import ImageDataset, batches_per_epoch, load_dataset
from simclrv2.metrics import LOG
from simclrv2.models import ContrastiveModel, ProjectionHead, ResNet, arch_name, build_encoder
from simclrv2.optim import WarmupCosine, build_optimizer, scaled_learning_rate


def decoding(settings: DataConfig) -> dict:
    """How the data settings say to decode a source: :func:`load_dataset`'s keywords but the size."""
    return {
        "strict": settings.strict,
        "cache_dir": settings.cache_dir,
        "workers": settings.num_workers,
        "depth": settings.depth_scaling,
        "stored_side": settings.stored_side,
    }


def dataset(settings: DataConfig, split: str) -> ImageDataset:
    """One split of the configured data source, at the configured image size."""
    return load_dataset(
        settings.source, split, image_size=settings.image_size, **decoding(settings)
    )


def encoder(settings: ModelConfig, arch: str, data: ImageDataset) -> ResNet:
    """An encoder ``arch`` for these images: their channels and size (the stem rule), the
    configured stem and initialisation."""
    return build_encoder(
        arch, data.image_size, data.channels, settings.cifar_stem, settings.zero_init_residual
    )


def contrastive_model(
    config: Config,
    data: ImageDataset,
    init: tuple[ResNet, ProjectionHead | None] | None = None,
) -> ContrastiveModel:
    """The configured encoder f with its projection head g, for pretraining on ``data``; from
    ``init`` (continued pretraining: an initial model's encoder and head), its encoder, and its
    head where it has the configured shape, else a new head (the log says which)."""
    settings = config.model
    f, given = init if init is not None else (encoder(settings, settings.arch, data), None)
    g = ProjectionHead(f.out_dim, settings.head_layers, settings.head_hidden_dim, settings.proj_dim)
    if init is None:
        return ContrastiveModel(f, g)
    arch = arch_name(f.spec)
    if given is not None and _shapes(given) == _shapes(g):
        LOG.info("pretrain: from the initial model's %s encoder and its projection head", arch)
        return ContrastiveModel(f, given)
    why = "it has none" if given is None else f"its head, {_layout(given)}, is not {_layout(g)}"
    LOG.info("pretrain: from the initial model's %s encoder, a new projection head (%s)", arch, why)
    return ContrastiveModel(f, g)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _layout(head: ProjectionHead) -> str:
    return f"{head.num_layers} layers {head.in_dim} -> {head.hidden_dim} -> {head.out_dim}"


def pretrain_augment(settings: AugmentConfig, size: int) -> SimCLRAugment:
    """The pretraining views ``settings`` ask for, at ``augment.size`` px, else ``size`` px."""
    return SimCLRAugment(
        size=settings.size or size,
        crop_scale=(settings.crop_min_area, settings.crop_max_area),
        vflip_p=settings.vflip,
        rot90=settings.rot90,
        jitter_strength=settings.jitter_strength,
        jitter_p=settings.jitter_p,
        jitter_ops=tuple(settings.jitter_ops),
        brightness=settings.brightness,
        grayscale_p=settings.grayscale_p,
        blur=settings.blur,
    )


def optimizer_and_schedule(
    settings: OptimizerConfig,
    model: nn.Module,
    epochs: int,
    batch_size: int,
    dataset_size: int,
    classifiers: tuple[nn.Module, ...] = (),
    drop_last: bool = True,
    classifier_lr: float | None = None,
) -> tuple[torch.optim.Optimizer, WarmupCosine]:
    """The optimiser over ``model``'s parameter groups, and warm-up + cosine over the whole run
    (epochs of ``dataset_size`` images, the last short batch counted unless ``drop_last``, as
    :func:`simclrv2.training.fit` trains them), with the learning rate scaled by the global batch
    size; ``classifiers`` peak at ``classifier_lr`` (not scaled) when given, else at the rest's."""
    peak = scaled_learning_rate(settings.base_lr, batch_size, settings.lr_scaling)
    steps = batches_per_epoch(
        dataset_size, batch_size, drop_last=drop_last, world_size=distributed.world_size()
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
        classifier_lr_scale=classifier_lr / peak if classifier_lr is not None and peak else 1.0,
    )
    return optimizer, schedule
