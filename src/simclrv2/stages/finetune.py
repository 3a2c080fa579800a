"""Stage 2: supervised fine-tuning on the few labels (SimCLRv2 Sec. 2), and the supervised baseline.

The whole network is trained, starting from the pretrained encoder plus the projection head up to
``model.head_selector`` (v2: its first layer; v1: none, i.e. from h), with a new linear classifier on
top; only random crop and horizontal flip augment the images. With no pretrained model the same
function trains the supervised-from-scratch baseline: the same encoder architecture, no head, the
same labelled images and the same budget, with the ``supervised`` optimiser settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclrv2.augment import crop_flip
from simclrv2.config import Config
from simclrv2.data import ImageDataset
from simclrv2.export import ExportedModel
from simclrv2.metrics import LOG
from simclrv2.models import Classifier, LinearClassifier
from simclrv2.runtime import Runtime
from simclrv2.stages.common import (
    build_stage_encoder,
    classifier_accuracy,
    export,
    open_stage,
    optimizer_and_schedule,
    train_image_size,
    write_results,
)
from simclrv2.training import fit


@dataclass
class ClassifierResult:
    model: Classifier
    exported: ExportedModel
    metrics: dict


def finetune(
    config: Config, directory: Path, labelled: ImageDataset, test: ImageDataset, runtime: Runtime,
    init: ExportedModel | None,
) -> ClassifierResult:  # fmt: skip
    """Fine-tune ``init`` (or train from scratch when None) on ``labelled``; evaluate on ``test``."""
    started = time.perf_counter()
    name = "finetune" if init is not None else "supervised"
    stage = open_stage(name, directory, runtime, config.runtime.seed)
    size = train_image_size(config.data.image_size, labelled)
    if init is None:
        encoder = build_stage_encoder(config.model, config.model.arch, labelled, size)
        projection_head, selector, settings = None, 0, config.supervised
    else:
        encoder, projection_head, selector, settings = (
            init.encoder,
            init.projection_head,
            config.model.head_selector,
            config.finetune,
        )
        if projection_head is None and selector != 0:
            LOG.warning(
                "%s: the initial model has no projection head; fine-tuning from h (selector 0)",
                name,
            )
            selector = 0
    head = projection_head.prefix(selector) if projection_head is not None else nn.Sequential()
    width = projection_head.output_dim(selector) if projection_head is not None else encoder.out_dim
    model = runtime.module(Classifier(encoder, head, LinearClassifier(width, labelled.num_classes)))

    batch_size = min(
        config.finetune.batch_size, len(labelled)
    )  # a 1% subset can be smaller than a batch
    optimizer, schedule = optimizer_and_schedule(
        settings,
        model,
        config.finetune.epochs,
        batch_size,
        len(labelled),
        # fine-tuning follows the authors (head_supervised outside LARS); from scratch, it is a layer
        classifiers=(model.linear,) if init is not None else (),
    )

    def step(images: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        logits = model(runtime.images(crop_flip(images, size, generator)))
        return {"loss": F.cross_entropy(logits, labels)}

    fit(
        stage, step, {"model": model}, optimizer, schedule, labelled, batch_size=batch_size,
        epochs=config.finetune.epochs, seed=config.runtime.seed,
    )  # fmt: skip
    metrics = classifier_accuracy(model, test, runtime, size) | {"labelled_images": len(labelled)}
    metrics["seconds"] = (
        time.perf_counter() - started
    )  # this invocation (a resumed run counts its own part)
    exported = ExportedModel(
        encoder,
        projection_head,
        model.linear,
        selector,
        info={"stage": name, "labels": len(labelled)},
    )
    export(exported, directory / "model")
    write_results(directory, metrics)
    LOG.info("%s on %d labels: top-1 %.2f%%", name, len(labelled), metrics["top1"])
    return ClassifierResult(model, exported, metrics)
