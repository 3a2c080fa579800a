"""Which 100 images to label: k-centre suggestions on h against random and class-balanced picks.

On the embedded Fashion-MNIST (10,000 training images, 2,000 test images) and one pretrained
encoder (``--model``, a pretrain export), fine-tune on 100 labels chosen three ways, each with three
seeds: k-centre greedy on h (``simclrv2.curation.suggest_labels``, what ``simclrv2 suggest-labels``
runs; the seed picks the first centre), a seeded random draw, and the class-balanced draw of
``--labels 10-per-class``. Fine-tuning is the ``demo`` preset's (``simclrv2.stages.finetune``) with
``runtime.seed`` set to the same seed, so the spread is that of the pick and of the training
together; KEY=VALUE overrides (e.g. ``finetune.epochs=50``) change the budget and are printed in
the table's header. Prints one row per run (method, seed, test top-1, the classes among the 100
labels and the images of the largest one, minutes) and the mean and min-max per method.

Run::

    PYTHONPATH=src python -m simclrv2 pretrain --out /tmp/curation-pre pretrain.epochs=5
    PYTHONPATH=src python benchmarks/suggest_labels.py --model /tmp/curation-pre/model
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
LABELS = 100
METHODS = ("k-centre", "random", "class-balanced")


def pick(method: str, train, model: Path, seed: int, runtime) -> torch.Tensor:
    """The indices of the LABELS training images that ``method`` chooses with ``seed``."""
    from simclrv2.curation import suggest_labels
    from simclrv2.data import labelled_indices
    from simclrv2.export import load_exported

    if method == "k-centre":
        empty = torch.empty(0, dtype=torch.int64)
        return suggest_labels(load_exported(model), train, runtime, LABELS, empty, seed)
    if method == "random":
        return torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:LABELS]
    return labelled_indices(train, f"{LABELS // train.num_classes}-per-class", seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a pretrain export (model/)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. finetune.epochs=50")
    args = parser.parse_args()

    from simclrv2.config import load_config
    from simclrv2.data import load_dataset
    from simclrv2.export import load_exported
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.finetune import finetune
    from simclrv2.tables import format_table

    train, test = load_dataset(None, "train"), load_dataset(None, "test")
    base = load_config("demo", overrides=args.overrides)
    runtime = resolve_runtime(base.runtime)
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {runtime.device}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    overrides = " ".join(args.overrides) or "none"
    print(
        f"{LABELS} labels of {len(train)} embedded Fashion-MNIST images, model {args.model}; "
        f"demo fine-tuning ({base.finetune.epochs} epochs, batch {base.finetune.batch_size}), "
        f"overrides: {overrides}; test top-1 on {len(test)} images\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in METHODS:
            for seed in range(args.seeds):
                started = time.perf_counter()
                config = load_config("demo", overrides=[*args.overrides, f"runtime.seed={seed}"])
                chosen = pick(method, train, args.model, seed, runtime)
                labelled = train.subset(chosen)
                directory = Path(scratch) / f"{method}-{seed}"
                init = load_exported(args.model)
                result = finetune(config, directory, labelled, {"test": test}, runtime, init)
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "top1": result.metrics["top1"],
                        "classes": len(torch.unique(labelled.labels)),
                        "largest class": int(torch.bincount(labelled.labels).max()),
                        "minutes": (time.perf_counter() - started) / 60,
                    }
                )
                print(
                    ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in rows[-1].items()
                    ),
                    flush=True,
                )
    print("\n" + format_table(rows, markdown=True))
    summary = []
    for method in METHODS:
        top1 = [row["top1"] for row in rows if row["method"] == method]
        summary.append(
            {
                "method": method,
                "runs": len(top1),
                "mean top1": statistics.mean(top1),
                "min": min(top1),
                "max": max(top1),
            }
        )
    print("\n" + format_table(summary, markdown=True))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
