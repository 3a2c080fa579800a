"""SimCLRv2's claims on the full Fashion-MNIST (60,000 training images without their labels, 10,000
test images), within a stated CPU budget, driven through the CLI a user types:

- pretrain, then the kNN monitor and linear evaluation of h on all labels;
- fine-tuning at 1% and 10% labels (class-balanced) against the supervised-from-scratch baseline on
  the same labels with the same budget (same epochs and batch size);
- a fully supervised run on all 60,000 labels;
- the v1 head (fine-tune from h) against the v2 head (from the first projection-head layer) at 1%;
- distillation of the 1% teacher on the unlabelled images: into the same architecture (self) and
  into a smaller student;
- a second encoder size: pretrain, kNN, linear, fine-tune at 1%.

Every run is a ``python -m simclrv2 ...`` subprocess in its own folder under ``--out``; a finished
run (``results.json`` present) is reused and an interrupted one is resumed, so the script can be
stopped and started again. It prints one table (and writes ``summary.json`` and ``summary.md``
under ``--out``) with each figure's exact command, wall time and the load average around it.

Budgets (``--budget``): ``hour`` fits a shared 2-core CPU in about an hour at one thread (the
figures in RESULTS.md), ``long`` (4x its pretraining and distillation) in about 40 minutes on
the quiet CPU at two threads, ``quick`` in about 15 minutes; ``preset`` runs the ``fashion-mnist``
preset's own epochs (30 pretraining epochs of ResNet-18 0.5x: several hours on that CPU). Each
budget's overrides are printed and recorded with the results. Two more fine-tuning runs use the
supervised baseline's optimiser, to tell the pretrained weights' effect from the optimiser's.

Run::

    python benchmarks/fashion_mnist.py --data /work/shared/data/fashion-mnist --out /tmp/fmnist
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]

# Overrides per budget, on top of the fashion-mnist preset. "quick" (15 min at one thread): ResNet-18
# at a quarter width, batch 256 (lr 1.0*B/256 by the preset's linear scaling) so that 2 epochs are
# 468 optimiser steps; the preset's warm-up is 1 of 30 epochs, kept as the same share (0.07 epochs);
# fine-tuning for 60 epochs at 1% and 10 at 10% (SimCLRv2 fine-tunes 1% for twice as many epochs
# as 10%), one distillation epoch. "hour": the same at 5x the pretraining, 3x the fine-tuning at
# 10%, 3x the distillation, with the kNN and online linear monitors every 2 epochs.
BUDGETS: dict[str, dict[str, list[str]]] = {
    "hour": {
        "model": ["model.arch=r18_0.25x_sk0"],
        "model_small": ["model.arch=r18_0.125x_sk0"],
        "pretrain": [
            "pretrain.epochs=10",
            "pretrain.batch_size=256",
            "pretrain.warmup=0.33",
            "pretrain.knn_every=2",
        ],
        "finetune_1": ["finetune.epochs=60"],
        "finetune_10": ["finetune.epochs=30"],
        "full_supervised": ["finetune.epochs=10", "finetune.batch_size=256"],
        "distill": ["distill.epochs=3", "distill.batch_size=256"],
    },
    "long": {  # "hour" with 4x the pretraining and distillation: about 40 min on a quiet CPU
        "model": ["model.arch=r18_0.25x_sk0"],
        "model_small": ["model.arch=r18_0.125x_sk0"],
        "pretrain": [
            "pretrain.epochs=40",
            "pretrain.batch_size=256",
            "pretrain.warmup=1",
            "pretrain.knn_every=5",
        ],
        "finetune_1": ["finetune.epochs=60"],
        "finetune_10": ["finetune.epochs=30"],
        "full_supervised": ["finetune.epochs=10", "finetune.batch_size=256"],
        "distill": ["distill.epochs=10", "distill.batch_size=256"],
    },
    "quick": {
        "model": ["model.arch=r18_0.25x_sk0"],
        "model_small": ["model.arch=r18_0.125x_sk0"],
        "pretrain": ["pretrain.epochs=2", "pretrain.batch_size=256", "pretrain.warmup=0.07"],
        "finetune_1": ["finetune.epochs=60"],
        "finetune_10": ["finetune.epochs=10"],
        "full_supervised": ["finetune.epochs=3", "finetune.batch_size=256"],
        "distill": ["distill.epochs=1", "distill.batch_size=256"],
    },
    "preset": {
        "model": [],  # r18_0.5x_sk0
        "model_small": ["model.arch=r18_0.25x_sk0"],
        "pretrain": [],  # 30 epochs, batch 512
        "finetune_1": [],  # 100 epochs, batch 64
        "finetune_10": ["finetune.epochs=30"],
        "full_supervised": ["finetune.epochs=30", "finetune.batch_size=256"],
        "distill": [],  # 10 epochs, batch 512
    },
}
# Fine-tuning with the supervised baseline's optimiser (the preset's tuned SGD), to separate the
# value of the pretrained weights from that of the optimiser settings.
BASELINE_OPTIMIZER = [
    "finetune.optimizer=sgd", "finetune.base_lr=0.4", "finetune.lr_scaling=linear",
    "finetune.weight_decay=5e-4",
]  # fmt: skip


@dataclass
class Run:
    name: str  # folder under --out
    what: str  # the row's description
    labels: str
    argv: list[str]  # after `python -m simclrv2`
    saves_run_dir: bool = True  # False: `linear`, which prints its results instead
    results: dict = field(default_factory=dict)


def plan(data: str, budget: dict[str, list[str]], out: Path, extra: list[str]) -> list[Run]:
    """The runs in the order they execute (each only needs runs before it); ``extra`` overrides
    come last in every command."""
    base = ["--preset", "fashion-mnist", "--data", data]
    small = budget["model_small"]
    model = budget["model"]
    pretrained, pretrained_small = out / "pretrain" / "model", out / "pretrain-small" / "model"
    teacher = out / "finetune-v2-1%" / "model"
    student = "r18_0.125x_sk0" if small[0].endswith("r18_0.125x_sk0") else "r18_0.25x_sk0"
    ft1, ft10, dist = budget["finetune_1"], budget["finetune_10"], budget["distill"]
    runs = [
        Run("pretrain", "SimCLR pretrain; kNN (k=200) on h", "100%", ["pretrain", *base, *model, *budget["pretrain"]]),
        Run("linear", "SimCLR + linear eval on h", "100%", ["linear", "--init", str(pretrained), *base, *model], saves_run_dir=False),
        Run("finetune-v2-1%", "fine-tune from head layer 1 (v2)", "1%", ["finetune", "--init", str(pretrained), "--labels", "1%", *base, *model, *ft1]),
        Run("supervised-1%", "supervised from scratch", "1%", ["finetune", "--labels", "1%", *base, *model, *ft1]),
        Run("finetune-v1-1%", "fine-tune from h (v1)", "1%", ["finetune", "--init", str(pretrained), "--labels", "1%", *base, *model, *ft1, "model.head_input=0"]),
        Run("distill-self-1%", "distilled into the same arch (tau 0.1)", "1%", ["distill", "--teacher", str(teacher), *base, *model, *dist]),
        Run("distill-small-1%", f"distilled into {student} (tau 1.0)", "1%", ["distill", "--teacher", str(teacher), *base, *model, *dist, f"distill.student_arch={student}", "distill.temperature=1.0"]),
        Run("finetune-v2-10%", "fine-tune from head layer 1 (v2)", "10%", ["finetune", "--init", str(pretrained), "--labels", "10%", *base, *model, *ft10]),
        Run("supervised-10%", "supervised from scratch", "10%", ["finetune", "--labels", "10%", *base, *model, *ft10]),
        Run("finetune-v2-1%-sgd", "fine-tune (v2), the baseline's optimiser", "1%", ["finetune", "--init", str(pretrained), "--labels", "1%", *base, *model, *ft1, *BASELINE_OPTIMIZER]),
        Run("finetune-v2-10%-sgd", "fine-tune (v2), the baseline's optimiser", "10%", ["finetune", "--init", str(pretrained), "--labels", "10%", *base, *model, *ft10, *BASELINE_OPTIMIZER]),
        Run("supervised-100%", "supervised from scratch, all labels", "100%", ["finetune", "--labels", "100%", *base, *model, *budget["full_supervised"]]),
        Run("pretrain-small", "smaller encoder: pretrain; kNN on h", "100%", ["pretrain", *base, *small, *budget["pretrain"]]),
        Run("linear-small", "smaller encoder: linear eval on h", "100%", ["linear", "--init", str(pretrained_small), *base, *small], saves_run_dir=False),
        Run("finetune-small-1%", "smaller encoder: fine-tune (v2)", "1%", ["finetune", "--init", str(pretrained_small), "--labels", "1%", *base, *small, *ft1]),
    ]  # fmt: skip
    for run in runs:
        run.argv += extra
    return runs


def cli(argv: list[str], threads: int, capture: bool) -> subprocess.CompletedProcess:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO / "src"), os.environ.get("PYTHONPATH")))),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "simclrv2", *argv], env=env, check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )  # fmt: skip


def execute(run: Run, out: Path, threads: int) -> dict:
    """Run (or resume, or reuse) one run; returns its record (results, wall time, load)."""
    folder = out / run.name
    record_path = folder / "benchmark.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    argv = list(run.argv)
    if run.saves_run_dir:
        resuming = (folder / "config.yaml").exists()
        argv = [argv[0], "--resume", str(folder)] if resuming else [*argv, "--out", str(folder)]
    command = "simclrv2 " + shlex.join(
        run.argv + ([] if not run.saves_run_dir else ["--out", str(folder)])
    )
    print(f"\n=== {run.name}: {command}", flush=True)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    completed = cli(argv, threads, capture=not run.saves_run_dir)
    seconds = time.perf_counter() - started
    if run.saves_run_dir:
        results = json.loads((folder / "results.json").read_text())
    else:
        results = json.loads(completed.stdout)
    results.pop("confusion", None)
    record = {
        "name": run.name, "what": run.what, "labels": run.labels, "command": command,
        "wall_s": round(seconds, 1), "load_before": load_before, "load_after": os.getloadavg()[0],
        "finished": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "results": results,
    }  # fmt: skip
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def rows_of(records: list[dict]) -> list[dict]:
    """Table rows: one per accuracy (the pretrain runs give the kNN figure)."""
    rows = []
    for record in records:
        results = record["results"]
        prefix = "knn_" if record["name"].startswith("pretrain") else ""
        rows.append(
            {
                "run": record["name"],
                "what": record["what"],
                "labels": record["labels"],
                "top1": results.get(f"{prefix}top1"),
                "top5": results.get(f"{prefix}top5"),
                "wall_min": round(record["wall_s"] / 60, 1),
                "load": f"{record['load_before']:.1f}-{record['load_after']:.1f}",
            }
        )
    return rows


def machine() -> str:
    import torch

    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="IDX folder")
    parser.add_argument("--out", default="runs/fashion-mnist-benchmark", help="folder of the runs")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="hour")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of each run (1: on a busy 2-core CPU, 2 threads ran up to 70x slower)",
    )  # fmt: skip
    parser.add_argument("--only", nargs="*", help="run names to run (default: all, in order)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="extra overrides for every run, e.g. a smoke test: pretrain.epochs=1 finetune.epochs=1",
    )  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = BUDGETS[args.budget]
    runs = plan(args.data, budget, out, args.set)
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {machine()}, {args.threads} threads, seed 0")
    print(f"budget {args.budget!r}: " + json.dumps(budget))
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    records = []
    for run in runs:
        if args.only and run.name not in args.only:
            continue
        records.append(execute(run, out, args.threads))

    sys.path.insert(0, str(REPO / "src"))
    from simclrv2.tables import format_table

    rows = rows_of(records)
    table = format_table(rows, markdown=True)
    commands = "\n".join(f"- `{r['name']}`: `{r['command']}`" for r in records)
    total = sum(r["wall_s"] for r in records) / 60
    print("\n" + table + f"\n\ntotal wall time {total:.0f} min\n\n" + commands)
    (out / "summary.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "summary.md").write_text(table + "\n\n" + commands + "\n")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
