"""Pipeline variants side by side over seeds: the sweeps behind a preset, read on validation.

Each variant is a name and KEY=VALUE overrides of the preset; each runs ``simclrv2 pipeline`` once
per seed (``runtime.seed`` and ``finetune.label_seed`` both take it, so the labels drawn change
too; the validation split stays the same). A run whose ``results.json`` exists under ``--out`` is
read, not run again, so an interrupted sweep continues. Prints, per variant, every method and
label fraction's top-1 on ``--split`` as the mean and min-max over seeds, and the run's minutes.

    PYTHONPATH=src python benchmarks/preset_sweep.py --out /tmp/sweep --seeds 0 \\
        --variant stem7:model.cifar_stem=false --variant stem3:model.cifar_stem=true,pretrain.epochs=15

Choose on ``validation`` (the default); ``--split test`` reports a chosen variant, once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from simclrv2.tables import format_table  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:K=V,K=V`` (or bare ``NAME`` for the preset as it is) as (name, overrides)."""
    name, _, overrides = text.partition(":")
    return name, [item for item in overrides.split(",") if item]


def run_once(out: Path, preset: str, overrides: list[str], seed: int) -> tuple[list[dict], float]:
    """The pipeline's table rows and wall minutes for one seed (read back if it finished)."""
    results, timing = out / "results.json", out / "wall_minutes.txt"
    if not results.exists():
        command = [sys.executable, "-m", "simclrv2", "pipeline", "--preset", preset]
        command += ["--out", str(out), *overrides]
        command += [f"runtime.seed={seed}", f"finetune.label_seed={seed}"]
        print(" ".join(command[1:]), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        timing.write_text(f"{(time.perf_counter() - start) / 60:.2f}\n")
    minutes = float(timing.read_text()) if timing.exists() else float("nan")
    return json.loads(results.read_text()), minutes


def spread(values: list[float]) -> str:
    """``mean (min-max)``, or the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    parser.add_argument("--variant", action="append", required=True, help="NAME[:K=V,K=V]")
    parser.add_argument("--split", default="validation", help="validation (choose) or test")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    table = []
    for name, overrides in map(parse_variant, args.variant):
        top1: dict[tuple[str, str], list[float]] = defaultdict(list)
        minutes = []
        for seed in seeds:
            rows, wall = run_once(args.out / f"{name}-s{seed}", args.preset, overrides, seed)
            minutes.append(wall)
            for row in rows:
                if row["split"] == args.split:
                    top1[row["method"], row["labels"]].append(row["top1"])
        for (method, labels), values in top1.items():
            table.append(
                {
                    "variant": name,
                    "method": method,
                    "labels": labels,
                    f"{args.split} top1": spread(values),
                    "wall minutes": spread(minutes),
                }
            )
    print(f"\npreset {args.preset}, seeds {args.seeds}, split {args.split}\n")
    print(format_table(table, list(table[0]), markdown=True))


if __name__ == "__main__":
    main()
