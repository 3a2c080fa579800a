"""The whole of SimCLRv2 in one call: pretrain on every image, evaluate the representation, then
for each label spec fine-tune, train the supervised-from-scratch baseline on the same labels with
the same budget, and distil the fine-tuned teacher into a student on every image; one table, each
number on the split it names (validation; test when the run has one, reported, never chosen on).

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
from simclrv2.data import labelled_indices, save_indices
from simclrv2.run import Run
from simclrv2.run_data import RunData
from simclrv2.stages.distill import distill
from simclrv2.stages.evaluate import linear_eval
from simclrv2.stages.finetune import finetune
from simclrv2.stages.pretrain import pretrain
from simclrv2.tables import format_table
from simclrv2.training import RESULTS, StageResult, finished_result

TABLE_COLUMNS = (
    "method",
    "labels",
    "split",
    "top1",
    "top5",
    "balanced_accuracy",
    "macro_f1",
    "minutes",
)


def _finished_or_run(directory: Path, stage: Callable[..., StageResult], *args) -> StageResult:
    """The stage's result: read from its folder if it finished there, else ``stage(*args)``."""
    return finished_result(directory) or stage(*args)


def _linear(config: Config, run: Run, pretrained: StageResult, data: RunData) -> dict:
    """Linear evaluation of the pretrained h, once: its folder holds only ``results.json``."""
    directory = run.directory / "linear"
    path = directory / RESULTS
    if path.exists():
        return json.loads(path.read_text())
    results = linear_eval(
        config, pretrained.exported, data.labelled(), data.evaluation, run.runtime
    )
    if distributed.rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(results, indent=2) + "\n")
    distributed.barrier()
    return results


def label_name(spec: str | float) -> str:
    """A label spec as the table and the folder names say it: "1%", "all", "25-per-class", or
    a list file's stem."""
    if not isinstance(spec, str):
        return f"{100 * spec:g}%"
    return Path(spec).stem if Path(spec).is_file() else spec


def _rows(method: str, labels: str, results: dict, minutes: float | None) -> list[dict]:
    """One table row per split the results score, test last."""
    return [
        {
            "method": method,
            "labels": labels,
            "split": split,
            **{key: scores.get(key) for key in TABLE_COLUMNS[3:-1]},
            "minutes": minutes,
        }
        for split, scores in results.get("splits", {}).items()
    ]


def run_pipeline(
    config: Config, run: Run, data: RunData, label_specs: list[str | float] | None = None
) -> list[dict]:
    """Run (or resume) every stage under ``run.directory`` on the run's images, fine-tuning
    once per label spec (default: ``finetune.label_fractions`` for the benchmark, every label
    for your own images); returns the rows of the results table (also ``results.json``/``.md``),
    each naming the split its scores come from."""
    runtime, directory = run.runtime, run.directory
    train = data.labelled()
    if distributed.rank() == 0:
        data.save_validation_list(directory)
    pre_dir = directory / "pretrain"
    pretrained = _finished_or_run(
        pre_dir, pretrain, config, pre_dir, data.pool, data.evaluation, runtime
    )
    pre, linear = pretrained.metrics, _linear(config, run, pretrained, data)
    everything = f"all ({int((train.labels >= 0).sum())})"
    knn = {
        "splits": {
            split: {"top1": scores["knn_top1"], "top5": scores["knn_top5"]}
            for split, scores in pre.get("splits", {}).items()
        }
    }
    rows = _rows(f"SimCLR + kNN (k={config.knn.k})", everything, knn, pre["seconds"] / 60)
    rows += _rows("SimCLR + linear eval", everything, linear, None)
    if label_specs is None:
        label_specs = [data.default_labels] if data.own else config.finetune.label_fractions
    for spec in label_specs:
        name = label_name(spec)
        indices = labelled_indices(train, spec, config.finetune.label_seed, data.labelled_count)
        if distributed.rank() == 0:
            save_indices(directory / f"labels-{name}.txt", indices)
        labelled = train.subset(indices)
        labels = f"{name} ({len(labelled)})"
        ft_dir, sup_dir, dist_dir = (
            directory / f"{stage}-{name}" for stage in ("finetune", "supervised", "distill")
        )
        init = copy.deepcopy(pretrained.exported)  # each label spec starts from the same weights
        evaluation = data.evaluation
        teacher = _finished_or_run(
            ft_dir, finetune, config, ft_dir, labelled, evaluation, runtime, init
        )
        baseline = _finished_or_run(
            sup_dir, finetune, config, sup_dir, labelled, evaluation, runtime, None
        )
        student = _finished_or_run(
            dist_dir,
            distill,
            config,
            dist_dir,
            data.pool,
            labelled,
            evaluation,
            runtime,
            teacher.exported.classifier_model(),
        )
        head = config.model.head_input
        rows += _rows(f"SimCLR + fine-tune (from head layer {head})", labels, *_timed(teacher))
        rows += _rows("supervised from scratch", labels, *_timed(baseline))
        arch = student.metrics["student"]
        rows += _rows(f"distilled into {arch}", labels, *_timed(student))
    if distributed.rank() == 0:
        write_text(directory / "results.json", json.dumps(rows, indent=2) + "\n")
        write_text(
            directory / "results.md", format_table(rows, TABLE_COLUMNS, markdown=True) + "\n"
        )
    return rows


def _timed(result: StageResult) -> tuple[dict, float]:
    return result.metrics, result.metrics["seconds"] / 60
