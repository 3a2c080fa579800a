"""The label-efficiency curve: test top-1 against the labels per class, SimCLR against scratch.

From one pretrained export (``--model``) on the embedded Fashion-MNIST (the ``demo`` preset's data:
9,000 labelled training images after the validation hold-out, 1,000 validation, 2,000 test), at
each count of ``--counts`` labels per class (default 1, 2, 5, 10, 25, 50, 100 and ``all``) and
each of ``--seeds`` seeds (the class-balanced draw and ``runtime.seed`` both take it): fine-tune
the export and train the same architecture from scratch (``simclrv2.stages.finetune``, the
pipeline's two calls), and fit the linear probe on its h (``simclrv2.stages.evaluate.linear_eval``,
L2 chosen on validation). KEY=VALUE overrides change the preset (e.g. ``finetune.epochs=50``) and
are printed in the header. Prints one line per run, then the mean and min-max test top-1 per count
and method, and writes the curve as ``--png`` (``simclrv2.report.plot_label_efficiency``).

Run (the full curve, 8 counts x 3 seeds x 2 trainings: hours on a 2-core CPU)::

    PYTHONPATH=src python -m simclrv2 pretrain --preset demo --out /tmp/le-pre
    PYTHONPATH=src python benchmarks/label_efficiency.py --model /tmp/le-pre/model

and a quick check that it works::

    PYTHONPATH=src python benchmarks/label_efficiency.py --model /tmp/le-pre/model \\
        --counts 1,10 --seeds 1 finetune.epochs=2
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
COUNTS = "1,2,5,10,25,50,100,all"
METHODS = ("SimCLR + fine-tune", "SimCLR + linear eval", "supervised from scratch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a pretrain export (model/)")
    parser.add_argument("--counts", default=COUNTS, help=f"labels per class (default {COUNTS})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--png", type=Path, default=Path("label-efficiency.png"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. finetune.epochs=50")
    args = parser.parse_args()

    from simclrv2.config import load_config
    from simclrv2.data import labelled_indices
    from simclrv2.export import load_exported
    from simclrv2.report import plot_label_efficiency
    from simclrv2.run_data import load_run_data
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.evaluate import linear_eval
    from simclrv2.stages.finetune import finetune
    from simclrv2.tables import format_table

    base = load_config("demo", overrides=args.overrides)
    data = load_run_data(base.data)
    train, evaluation = data.labelled(), data.evaluation
    runtime = resolve_runtime(base.runtime)
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {runtime.device}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"model {args.model}; {data.summary()}; demo fine-tuning ({base.finetune.epochs} epochs, "
        f"batch {base.finetune.batch_size}), overrides: {' '.join(args.overrides) or 'none'}\n"
    )
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.counts.split(","):
            spec = "all" if count == "all" else f"{int(count)}-per-class"
            for seed in range(args.seeds):
                config = load_config("demo", overrides=[*args.overrides, f"runtime.seed={seed}"])
                labelled = train.subset(labelled_indices(train, spec, seed))
                for method in METHODS:
                    started = time.perf_counter()
                    directory = Path(scratch) / f"{count}-{seed}-{len(runs)}"
                    init = load_exported(args.model)
                    if method == "SimCLR + linear eval":
                        scores = linear_eval(config, init, labelled, evaluation, runtime)
                    else:
                        init = init if method == "SimCLR + fine-tune" else None
                        scores = finetune(
                            config, directory, labelled, evaluation, runtime, init
                        ).metrics
                    runs.append(
                        {
                            "labels": len(labelled),
                            "per class": count,
                            "method": method,
                            "seed": seed,
                            "validation top1": scores["splits"]["validation"]["top1"],
                            "test top1": scores["splits"]["test"]["top1"],
                            "minutes": (time.perf_counter() - started) / 60,
                        }
                    )
                    print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in runs[-1].items()), flush=True)  # fmt: skip
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        curves[run["method"]][run["labels"]].append(run["test top1"])
    summary = [
        {
            "per class": next(r["per class"] for r in runs if r["labels"] == labels),
            "labels": labels,
            "method": method,
            "seeds": len(top1),
            "mean test top1": statistics.mean(top1),
            "min": min(top1),
            "max": max(top1),
        }
        for method, points in curves.items()
        for labels, top1 in sorted(points.items())
    ]
    summary.sort(key=lambda row: (row["labels"], METHODS.index(row["method"])))
    print("\n" + format_table(summary, markdown=True))
    title = f"embedded Fashion-MNIST, {args.seeds} seed(s): mean and min-max"
    plot_label_efficiency(curves, args.png, "test", title)
    print(f"\nwrote {args.png}; load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
