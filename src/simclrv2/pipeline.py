"""The whole of SimCLRv2 in one call: pretrain, evaluate the representation, then for each label
fraction fine-tune, train the supervised-from-scratch baseline on the same labels with the same
budget, and distil the fine-tuned teacher into a student with the unlabelled images; one table.

Each stage writes its own folder; a stage whose ``results.json`` exists is reused from its files,
so ``--resume`` after an interruption continues where the run stopped.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

from simclrv2 import distributed
from simclrv2.atomic import write_text
from simclrv2.config import Config
from simclrv2.data import ImageDataset, labelled_indices, save_indices
from simclrv2.metrics import LOG
from simclrv2.run import Run
from simclrv2.stages.distill import distill
from simclrv2.stages.evaluate import linear_eval
from simclrv2.stages.finetune import finetune
from simclrv2.stages.pretrain import pretrain
from simclrv2.tables import format_table
from simclrv2.training import RESULTS, StageResult, finished_result

TABLE_COLUMNS = ("method", "labels", "top1", "top5", "minutes")


def _finished_or_run(directory: Path, stage: Callable[..., StageResult], *args) -> StageResult:
    """The stage's result: read from its folder if it finished there, else ``stage(*args)``."""
    return finished_result(directory) or stage(*args)


def _linear(config: Config, run: Run, pretrained: StageResult, train, test) -> dict:
    """Linear evaluation of the pretrained h, once: its folder holds only ``results.json``."""
    directory = run.directory / "linear"
    path = directory / RESULTS
    if path.exists():
        return json.loads(path.read_text())
    results = linear_eval(config, pretrained.exported, train, test, run.runtime)
    if distributed.rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(results, indent=2) + "\n")
    distributed.barrier()
    return results


def percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def run_pipeline(config: Config, run: Run, train: ImageDataset, test: ImageDataset) -> list[dict]:
    """Run (or resume) every stage under ``run.directory`` on the ``train`` and ``test`` splits of
    ``config.data``; returns the rows of the results table (also ``results.json``/``.md``)."""
    LOG.info(
        "data: %d training images (%d classes), %d test images",
        len(train),
        train.num_classes,
        len(test),
    )
    runtime, directory = run.runtime, run.directory
    pre_dir = directory / "pretrain"
    pretrained = _finished_or_run(pre_dir, pretrain, config, pre_dir, train, test, runtime)
    pre, linear = pretrained.metrics, _linear(config, run, pretrained, train, test)
    rows = [
        {
            "method": f"SimCLR + kNN (k={config.knn.k})",
            "labels": "100%",
            "top1": pre["knn_top1"],
            "top5": pre["knn_top5"],
            "minutes": pre["seconds"] / 60,
        },
        {
            "method": "SimCLR + linear eval",
            "labels": "100%",
            "top1": linear["top1"],
            "top5": linear["top5"],
            "minutes": None,
        },
    ]
    for fraction in config.finetune.label_fractions:
        name = percent(fraction)
        indices = labelled_indices(train, fraction, config.finetune.label_seed)
        if distributed.rank() == 0:
            save_indices(directory / f"labels-{name}.txt", indices)
        labelled = train.subset(indices)
        ft_dir, sup_dir, dist_dir = (
            directory / f"{stage}-{name}" for stage in ("finetune", "supervised", "distill")
        )
        init = copy.deepcopy(pretrained.exported)  # each fraction starts from the same weights
        teacher = _finished_or_run(ft_dir, finetune, config, ft_dir, labelled, test, runtime, init)
        baseline = _finished_or_run(
            sup_dir, finetune, config, sup_dir, labelled, test, runtime, None
        )
        student = _finished_or_run(
            dist_dir,
            distill,
            config,
            dist_dir,
            train,
            labelled,
            test,
            runtime,
            teacher.exported.classifier_model(),
        )
        rows += [
            {
                "method": f"SimCLR + fine-tune (from head layer {config.model.head_input})",
                "labels": name,
                **_scores(teacher.metrics),
            },
            {"method": "supervised from scratch", "labels": name, **_scores(baseline.metrics)},
            {
                "method": f"distilled into {student.metrics['student']}",
                "labels": name,
                **_scores(student.metrics),
            },
        ]
    if distributed.rank() == 0:
        write_text(directory / "results.json", json.dumps(rows, indent=2) + "\n")
        write_text(
            directory / "results.md", format_table(rows, TABLE_COLUMNS, markdown=True) + "\n"
        )
    return rows


def _scores(results: dict) -> dict:
    return {"top1": results["top1"], "top5": results["top5"], "minutes": results["seconds"] / 60}
