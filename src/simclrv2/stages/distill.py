"""Stage 3: distillation with the unlabelled images (SimCLRv2 Sec. 2, Eq. 3).

The fine-tuned network is a frozen teacher (eval mode); a student, of the same architecture
(self-distillation) or a smaller one, is trained from scratch (the paper; or from the teacher's
encoder for self-distillation, ``distill.student_init``) to match the teacher's class
distribution at temperature tau on the unlabelled images, optionally mixed with the labelled
cross-entropy: alpha * L_distill + (1 - alpha) * L_label. The student is the encoder plus a linear
classifier (no projection head, as in the paper); only crop and flip augment the images, and the
teacher sees the same view as the student.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclrv2 import build
from simclrv2.augment import crop_flip
from simclrv2.config import Config
from simclrv2.data import Batch, ImageDataset
from simclrv2.errors import UserError
from simclrv2.evaluation import classifier_scores, top1_summary
from simclrv2.export import ExportedModel, match_channels
from simclrv2.losses import distillation_loss
from simclrv2.models import Classifier, LinearClassifier, arch_name
from simclrv2.runtime import Runtime
from simclrv2.training import Stage, StageResult, data_info, fit


def distill(
    config: Config,
    directory: Path,
    unlabelled: ImageDataset,
    labelled: ImageDataset | None,
    evaluation: dict[str, ImageDataset],
    runtime: Runtime,
    teacher: Classifier,
) -> StageResult:
    """Train a student on ``unlabelled`` (every image; labels unread) to match ``teacher`` (and
    on ``labelled`` when ``distill.alpha`` < 1); score it on each of the ``evaluation`` splits."""
    settings = config.distill
    arch = settings.student_arch or arch_name(teacher.encoder.spec)
    if settings.student_init == "teacher" and arch != arch_name(teacher.encoder.spec):
        raise UserError(
            f"distill.student_init=teacher needs the teacher's architecture, "
            f"{arch_name(teacher.encoder.spec)}, not distill.student_arch={arch}; "
            "leave student_arch unset or use student_init=scratch"
        )
    channels = teacher.encoder.spec.in_channels  # the student takes what the teacher takes
    unlabelled, labelled, *checked = match_channels(
        channels, unlabelled, labelled, *evaluation.values()
    )
    evaluation = dict(zip(evaluation, checked))
    stage = Stage.open("distill", directory, runtime, config.runtime.seed)
    size = unlabelled.image_size
    if settings.student_init == "teacher":  # a trainable copy, before the teacher is frozen
        encoder = copy.deepcopy(teacher.encoder).requires_grad_(True)
    else:
        encoder = build.encoder(config.model, arch, unlabelled)
    teacher = runtime.module(teacher).eval().requires_grad_(False)
    num_classes = teacher.linear.out_features
    student = runtime.module(
        Classifier(encoder, nn.Sequential(), LinearClassifier(encoder.out_dim, num_classes))
    )
    # the student's classifier is new: it is adapted by LARS like every layer
    optimizer, schedule = build.optimizer_and_schedule(
        settings, student, settings.epochs, settings.batch_size, len(unlabelled)
    )
    mix_labels = settings.alpha < 1 and labelled is not None

    def step(batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x = runtime.images(crop_flip(batch.images, size, generator, extents=batch.extents))
        with torch.no_grad():
            teacher_logits = teacher(x)
        tau = settings.temperature
        loss = distillation_loss(student(x), teacher_logits, tau, settings.scale_by_t2)
        # logged as Eq. 3 reads, with or without tau^2: ln(classes) for a student knowing nothing
        values = {"distill_loss": loss.detach() / (tau**2 if settings.scale_by_t2 else 1.0)}
        if mix_labels:  # a labelled batch of the same size, drawn with the run's generator
            pick = torch.randint(
                len(labelled), (len(x),), generator=generator, device=generator.device
            ).cpu()
            images, targets, extents = (tensor.to(runtime.device) for tensor in labelled.rows(pick))
            x_labelled = runtime.images(crop_flip(images, size, generator, extents=extents))
            supervised = F.cross_entropy(student(x_labelled), targets)
            loss = settings.alpha * loss + (1 - settings.alpha) * supervised
            values["label_loss"] = supervised.detach()
        return values | {"loss": loss}

    fit(
        stage,
        step,
        {"student": student},
        optimizer,
        schedule,
        unlabelled,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        seed=config.runtime.seed,
    )
    metrics = classifier_scores(student, evaluation, runtime, size) | {"student": arch}
    splits = {"train": unlabelled.describe(labels=False)}
    splits |= {n: d.describe() for n, d in evaluation.items()}
    if mix_labels:
        splits["train, labelled subset"] = labelled.describe()
    info = {
        "stage": "distill",
        "student": arch,
        "data": data_info(config, unlabelled, splits),
        "classes": _class_names(teacher, (unlabelled, labelled, *evaluation.values())),
    }
    exported = ExportedModel(encoder, None, student.linear, 0, info)
    summary = f"{arch} student, {top1_summary(metrics)}"
    return stage.finish(exported, metrics, summary, config)


def _class_names(teacher: Classifier, candidates: tuple[ImageDataset | None, ...]) -> list[str]:
    """The names of the teacher's classes: those of the first data set with as many classes."""
    for data in candidates:
        if data is not None and data.num_classes == teacher.linear.out_features:
            return data.classes
    return []
