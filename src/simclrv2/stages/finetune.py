"""Stage 2: supervised fine-tuning on the few labels (SimCLRv2 Sec. 2), and the supervised baseline.

The whole network is trained, starting from the pretrained encoder plus the projection head up to
``model.head_input`` (v2: its first layer; v1: none, i.e. from h), with a new linear classifier on
top; only random crop and horizontal flip augment the images. With no pretrained model the same
function trains the supervised-from-scratch baseline: the same encoder architecture, no head, the
same labelled images and the same budget, with the ``supervised`` optimiser settings.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclrv2 import build, distributed
from simclrv2.augment import crop_flip
from simclrv2.config import Config
from simclrv2.data import Batch, ImageDataset
from simclrv2.data.splits import balanced_oversample
from simclrv2.evaluation import classifier_scores, top1_summary
from simclrv2.export import ExportedModel, match_channels
from simclrv2.metrics import LOG
from simclrv2.models import Classifier, LinearClassifier
from simclrv2.runtime import Runtime
from simclrv2.training import Stage, StageResult, data_info, fit


def finetune(
    config: Config,
    directory: Path,
    labelled: ImageDataset,
    evaluation: dict[str, ImageDataset],
    runtime: Runtime,
    init: ExportedModel | None,
) -> StageResult:
    """Fine-tune ``init`` (or train from scratch when None) on ``labelled``, its classes as
    they are (or oversampled to balance, ``finetune.balanced_sampling``); score it on each of the
    ``evaluation`` splits."""
    name = "finetune" if init is not None else "supervised"
    if init is not None:
        channels = init.encoder.spec.in_channels
        labelled, *checked = match_channels(channels, labelled, *evaluation.values())
        evaluation = dict(zip(evaluation, checked))
    stage = Stage.open(name, directory, runtime, config.runtime.seed)
    size, classes = labelled.image_size, labelled.num_classes
    if init is None:
        encoder = build.encoder(config.model, config.model.arch, labelled)
        projection_head, head_input, settings = None, 0, config.supervised
    else:
        encoder, projection_head, settings = init.encoder, init.projection_head, config.finetune
        head_input = config.model.head_input if projection_head is not None else 0
        if head_input != config.model.head_input:
            LOG.warning("%s: the initial model has no projection head; fine-tuning from h", name)
    if projection_head is None:
        model = Classifier(encoder, nn.Sequential(), LinearClassifier(encoder.out_dim, classes))
    else:
        model = Classifier.from_pretrained(encoder, projection_head, head_input, classes)
    model = runtime.module(model)
    trained_on = labelled
    if config.finetune.balanced_sampling:
        seed = config.finetune.label_seed
        trained_on = labelled.subset(balanced_oversample(labelled.labels, seed))

    batch_size = _batch_size(len(trained_on), config.finetune.batch_size)
    # fine-tuning follows the authors (head_supervised outside LARS); from scratch, it is a layer
    optimizer, schedule = build.optimizer_and_schedule(
        settings,
        model,
        config.finetune.epochs,
        batch_size,
        len(trained_on),
        classifiers=(model.linear,) if init is not None else (),
        drop_last=False,
    )

    def step(batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        views = crop_flip(batch.images, size, generator, extents=batch.extents)
        return {"loss": F.cross_entropy(model(runtime.images(views)), batch.labels)}

    fit(
        stage,
        step,
        {"model": model},
        optimizer,
        schedule,
        trained_on,
        batch_size=batch_size,
        epochs=config.finetune.epochs,
        seed=config.runtime.seed,
        drop_last=False,  # few labels: every one of them each epoch
    )
    metrics = classifier_scores(model, evaluation, runtime, size)
    metrics |= {"labelled_images": len(labelled)}
    splits = {"train": labelled.describe()} | {n: d.describe() for n, d in evaluation.items()}
    info = {
        "stage": name,
        "labels": len(labelled),
        "data": data_info(config, labelled, splits),
        "classes": labelled.classes,
    }
    exported = ExportedModel(encoder, projection_head, model.linear, head_input, info)
    summary = f"{top1_summary(metrics)} with {len(labelled)} labels"
    return stage.finish(exported, metrics, summary, config)


def _batch_size(images: int, wanted: int) -> int:
    """The fine-tuning batch: ``wanted``, at most ``images`` (1% can be under one batch), one
    process-count smaller while an epoch's short last batch would leave a process one image
    (BatchNorm trains on two or more per channel)."""
    world = distributed.world_size()
    size = min(wanted, images)
    while size > 2 * world and 0 < images % size <= world:
        size -= world
    return size
