"""The whole of SimCLRv2 in one call: pretrain, evaluate the representation, then for each label
fraction fine-tune, train the supervised-from-scratch baseline on the same labels with the same
budget, and distil the fine-tuned teacher into a student with the unlabelled images; one table.

Each stage writes its own folder; a stage whose ``results.json`` exists is reused, so
``--resume`` after an interruption continues where the run stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from simclrv2 import distributed
from simclrv2.config import Config
from simclrv2.data import ImageDataset, class_balanced_indices, save_indices
from simclrv2.export import ExportedModel, load_exported
from simclrv2.metrics import LOG
from simclrv2.rundir import write_atomically
from simclrv2.runtime import Runtime
from simclrv2.stages.common import read_results, write_results
from simclrv2.stages.distill import distill
from simclrv2.stages.evaluate import linear_eval
from simclrv2.stages.finetune import finetune
from simclrv2.stages.pretrain import pretrain
from simclrv2.tables import format_table

TABLE_COLUMNS = ("method", "labels", "top1", "top5", "minutes")


def _reuse_or_run(
    directory: Path, stage: Callable[..., object], *args: object
) -> tuple[ExportedModel, dict]:
    """The stage's exported model and results: from its folder if it finished, else by running
    ``stage(*args)``."""
    if read_results(directory) is None:
        stage(*args)
    return load_exported(directory / "model"), read_results(directory)


def percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def run_pipeline(
    config: Config, directory: Path, runtime: Runtime, train: ImageDataset, test: ImageDataset
) -> list[dict]:
    """Run (or resume) every stage under ``directory`` on the ``train`` and ``test`` splits of
    ``config.data``; returns the rows of the results table."""
    LOG.info(
        "data: %d training images (%d classes), %d test images",
        len(train),
        train.num_classes,
        len(test),
    )

    pre_dir = directory / "pretrain"
    pretrained, pre = _reuse_or_run(
        pre_dir, lambda: pretrain(config, pre_dir, train, test, runtime)
    )
    linear_dir = directory / "linear"
    if read_results(linear_dir) is None:
        linear_dir.mkdir(parents=True, exist_ok=True)
        write_results(linear_dir, linear_eval(config, pretrained, train, test, runtime))
    linear = read_results(linear_dir)
    rows = [
        {"method": f"SimCLR + kNN (k={config.pretrain.knn_k})", "labels": "100%", "top1": pre["knn_top1"], "top5": pre["knn_top5"], "minutes": pre["seconds"] / 60},
        {"method": "SimCLR + linear eval", "labels": "100%", "top1": linear["top1"], "top5": linear["top5"], "minutes": None},
    ]  # fmt: skip

    for fraction in config.finetune.label_fractions:
        name = percent(fraction)
        indices = class_balanced_indices(
            train.labels, fraction=fraction, seed=config.finetune.label_seed
        )
        if distributed.rank() == 0:
            save_indices(directory / f"labels-{name}.txt", indices)
        labelled = train.subset(indices)

        ft_dir, sup_dir, dist_dir = (
            directory / f"{stage}-{name}" for stage in ("finetune", "supervised", "distill")
        )
        fresh_pretrained = load_exported(
            pre_dir / "model"
        )  # each fraction starts from the same weights
        teacher, ft = _reuse_or_run(
            ft_dir, finetune, config, ft_dir, labelled, test, runtime, fresh_pretrained
        )
        _, sup = _reuse_or_run(sup_dir, finetune, config, sup_dir, labelled, test, runtime, None)
        _, dist = _reuse_or_run(
            dist_dir,
            distill,
            config,
            dist_dir,
            train,
            labelled,
            test,
            runtime,
            teacher.classifier_model(),
        )
        selector = config.model.head_selector
        rows += [
            {
                "method": f"SimCLR + fine-tune (from head layer {selector})",
                "labels": name,
                **_scores(ft),
            },
            {"method": "supervised from scratch", "labels": name, **_scores(sup)},
            {"method": f"distilled into {dist['student']}", "labels": name, **_scores(dist)},
        ]
    if distributed.rank() == 0:
        write_atomically(directory / "results.json", json.dumps(rows, indent=2) + "\n")
        write_atomically(
            directory / "results.md", format_table(rows, TABLE_COLUMNS, markdown=True) + "\n"
        )
    return rows


def _scores(results: dict) -> dict:
    return {"top1": results["top1"], "top5": results["top5"], "minutes": results["seconds"] / 60}
