"""Stage 1: contrastive pretraining without labels (SimCLR Alg. 1; SimCLRv2 Sec. 2).

For a batch of N images: two independently augmented views each, the encoder gives h and the
projection head z for all 2N views in one pass (so BatchNorm sees both views, as in the reference),
and NT-Xent on z with negatives from the global batch: the run's loss. When labels exist, a linear
classifier on stop-gradient h is trained alongside (``pretrain.online_linear``; it cannot change
the encoder) at its own rate (``pretrain.online_lr``), its loss logged apart (``online_loss``), and
it and a weighted kNN monitor are scored on the evaluation splits at epoch ends.

Over several processes BatchNorm is global (``pretrain.global_bn``). ``pretrain.chunk_size`` runs
the network in chunks with gradient caching (:mod:`simclrv2.gradcache`, where the BatchNorm rule is);
``pretrain.memory_size`` adds SimCLRv2's queue of EMA embeddings as negatives (:mod:`simclrv2.memory`).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from simclrv2 import build, distributed
from simclrv2.config import Config
from simclrv2.data import Batch, ImageDataset
from simclrv2.evaluation import extract, knn_scores
from simclrv2.export import ExportedModel, match_channels
from simclrv2.gradcache import check_chunk_size, chunked_forward
from simclrv2.losses import labelled_cross_entropy, nt_xent
from simclrv2.memory import EmbeddingQueue, MovingAverage
from simclrv2.models import LinearClassifier
from simclrv2.runtime import Runtime
from simclrv2.scores import SUMMARY, by_split, classification_scores, topk_accuracy
from simclrv2.training import Stage, StageResult, data_info, fit


def pretrain(
    config: Config,
    directory: Path,
    train: ImageDataset,
    evaluation: dict[str, ImageDataset],
    runtime: Runtime,
    init: ExportedModel | None = None,
) -> StageResult:
    """SimCLR on ``train`` (its labels, if any, feed only the online classifier and the kNN bank);
    the monitors read the ``evaluation`` splits (by role: validation, test). From ``init``'s
    weights (an export) when given: continued pretraining, e.g. of the authors' ImageNet model on
    another domain."""
    settings = config.pretrain
    if init is not None:
        channels = init.encoder.spec.in_channels
        train, *checked = match_channels(channels, train, *evaluation.values())
        evaluation = dict(zip(evaluation, checked))
    stage = Stage.open("pretrain", directory, runtime, config.runtime.seed)
    initial = None if init is None else (init.encoder, init.projection_head)
    model = runtime.module(build.contrastive_model(config, train, initial))
    labelled = bool((train.labels >= 0).any())
    online = (
        runtime.module(LinearClassifier(model.encoder.out_dim, train.num_classes))
        if labelled and settings.online_linear
        else None
    )
    trained = nn.ModuleDict({"model": model} | ({"online": online} if online else {}))
    optimizer, schedule = build.optimizer_and_schedule(
        settings,
        trained,
        settings.epochs,
        settings.batch_size,
        len(train),
        classifiers=(online,) if online else (),
        classifier_lr=settings.online_lr,
    )
    augment = build.pretrain_augment(config.augment, train.image_size)
    size = augment.size  # the side of the views, and of the monitors' centre crops
    chunk = settings.chunk_size
    check_chunk_size(chunk, settings.batch_size // distributed.world_size())
    encode = partial(chunked_forward, model, chunk_size=chunk) if chunk else model
    queue, ema = None, None
    if settings.memory_size:
        queue = runtime.module(EmbeddingQueue(settings.memory_size, config.model.proj_dim))
        ema = MovingAverage(model, settings.memory_momentum)

    def remember(first_views: Tensor) -> None:
        """Push the EMA network's z of this step's first views, gathered from every process."""
        ema.update(model)
        parts = runtime.images(first_views).split(chunk or len(first_views))
        queue.push(distributed.gather_with_grad(torch.cat([ema(part)[1] for part in parts])))

    def step(batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        images, labels, extents = batch
        views = torch.cat([augment(images, generator, extents) for _ in range(2)])  # (2n, C, S, S)
        h, z = encode(runtime.images(views))
        z1, z2 = z.chunk(2)  # (n, d) each
        negatives = queue.negatives() if queue is not None else None  # (K, d), from past steps
        contrastive = nt_xent(z1, z2, settings.temperature, negatives)
        if queue is not None:
            remember(views[: len(images)])
        if online is None:
            return {"loss": contrastive}
        logits = online(h.detach())  # stop-gradient: the classifier cannot shape h
        targets = labels.repeat(2)  # both views, as the reference; -1: unlabelled
        supervised = labelled_cross_entropy(logits, targets)
        # the run's loss is the contrastive one; the monitor's is trained alongside, shown apart
        return {
            "loss": contrastive,
            "online_loss": supervised.detach(),
            "objective": contrastive + supervised,
        }

    def monitor(splits: dict[str, ImageDataset]) -> dict[str, dict[str, float]]:
        if not labelled or not splits:
            return {}
        knn = config.knn
        return evaluate_representation(
            model.encoder, online, train, splits, runtime, size, knn.k, knn.temperature
        )

    def monitor_during(epoch: int) -> dict[str, float]:
        """The monitors every ``knn_every`` epochs; the last epoch's run once, after training."""
        every = settings.knn_every
        if not (every and epoch % every == 0 and epoch < settings.epochs and evaluation):
            return {}
        first = next(iter(evaluation))
        return monitor({first: evaluation[first]}).get(first, {})

    saved = dict(trained.items())  # what checkpoints hold
    if queue is not None:
        saved["memory"] = nn.ModuleDict({"queue": queue, "ema": ema})
    with distributed.global_batchnorm(model) if settings.global_bn else nullcontext():
        position = fit(
            stage,
            step,
            saved,
            optimizer,
            schedule,
            train,
            batch_size=settings.batch_size,
            epochs=settings.epochs,
            seed=config.runtime.seed,
            end_of_epoch=monitor_during,
            checkpoint_every=settings.checkpoint_every,
        )
    per_split = monitor(evaluation)
    if per_split:  # the curve's last point: the split monitored during training
        stage.metrics.write(position.step, settings.epochs, next(iter(per_split.values())))
    metrics = by_split(per_split)
    splits = {"train": train.describe()} | {n: d.describe() for n, d in evaluation.items()}
    info = {
        "stage": "pretrain",
        "preset": config.preset,
        "data": data_info(config, train, splits),
        "classes": train.classes,
    }
    exported = ExportedModel(model.encoder, model.projection_head, online, head_input=0, info=info)
    reported = per_split.get(metrics.get("split"), {})
    summary = ", ".join(f"{k} {v:.2f}" for k, v in reported.items()) or "done"
    return stage.finish(exported, metrics, summary, config)


def evaluate_representation(
    encoder: nn.Module,
    online: nn.Module | None,
    train: ImageDataset,
    splits: dict[str, ImageDataset],
    runtime: Runtime,
    image_size: int,
    k: int,
    temperature: float,
) -> dict[str, dict[str, float]]:
    """Per split: kNN accuracy of h (the labelled ``train`` images as the bank) and the online
    classifier's accuracy, on the labelled images of each of ``splits``."""
    encoder.eval()
    known = (train.labels >= 0).nonzero().squeeze(1)
    # a pool of mostly unlabelled images: extract the labelled ones alone
    bank_data = train if 2 * len(known) > len(train) else train.subset(known)
    bank, bank_labels = extract(encoder, bank_data, runtime, image_size)
    bank, bank_labels = bank[bank_labels >= 0], bank_labels[bank_labels >= 0]
    scores = {}
    for name, data in splits.items():
        queries, labels = extract(encoder, data, runtime, image_size)
        votes = knn_scores(
            bank, bank_labels, queries, train.num_classes, k, temperature, device=runtime.device
        )
        knn = classification_scores(votes, labels, train.classes)
        values = {f"knn_{key}": knn[key] for key in SUMMARY}
        if online is not None:
            online.eval()
            with torch.no_grad():
                logits = online(queries.to(runtime.device)).float().cpu()
            values |= {f"online_linear_{n}": v for n, v in topk_accuracy(logits, labels).items()}
        scores[name] = values
    return scores
