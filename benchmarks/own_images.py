"""The semi-supervised job on a user's own folders: Fashion-MNIST written out as one.

The embedded Fashion-MNIST subset becomes what a user has: a flat folder of unlabelled PNGs (every
training image not labelled), a few labelled images in class folders (``--variant even``: 10 per
class; ``uneven``: 30, 20, 15, 10, 8, 6, 4, 3, 2, 2, the same 100 in all), and a labelled test
folder (the 2,000 test images). Then, as a user types them, ``simclrv2 pipeline --labelled
--unlabelled --test`` (the ``demo`` preset, every label, validation held out of the labelled
images) and ``simclrv2 predict`` on the test folder. Prints the table (each number with its
split), the wall time of each command and the head of the predictions CSV with its agreement with
the test folders' classes.

Run::

    PYTHONPATH=src python benchmarks/own_images.py --variant even --out /tmp/own-even
    PYTHONPATH=src python benchmarks/own_images.py --variant uneven --out /tmp/own-uneven
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = {"even": [10] * 10, "uneven": [30, 20, 15, 10, 8, 6, 4, 3, 2, 2]}


def write_folders(root: Path, counts: list[int]) -> dict[str, Path]:
    """``root/pool/*.png``, ``root/labelled/<class>/*.png`` (``counts[k]`` of class k, the first
    of that class in the embedded order) and ``root/test/<class>/*.png``."""
    from simclrv2.data import load_dataset

    train, test = load_dataset(None, "train"), load_dataset(None, "test")
    folder_name = [name.replace("/", "-") for name in train.classes]
    seen = [0] * train.num_classes
    for i, (image, label) in enumerate(zip(train.images, train.labels.tolist())):
        if seen[label] < counts[label]:
            path = root / "labelled" / folder_name[label] / f"{i:05d}.png"
            seen[label] += 1
        else:
            path = root / "pool" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(path)
    for i, (image, label) in enumerate(zip(test.images, test.labels.tolist())):
        path = root / "test" / folder_name[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(path)
    return {name: root / name for name in ("labelled", "pool", "test")}


def simclrv2(*args: str) -> tuple[str, float]:
    """Run ``simclrv2 ARGS`` as a user would; (its standard output, seconds)."""
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "simclrv2", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"simclrv2 {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=tuple(PER_CLASS), default="even")
    parser.add_argument("--out", required=True, type=Path, help="folder for the images and run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. pretrain.epochs=5")
    args = parser.parse_args()

    counts = PER_CLASS[args.variant]
    folders = write_folders(args.out / "images", counts)
    run = args.out / "run"
    roles = ["--labelled", str(folders["labelled"]), "--unlabelled", str(folders["pool"])]
    table, pipeline_seconds = simclrv2(
        "pipeline", *roles, "--test", str(folders["test"]), "--out", str(run), *args.overrides
    )
    predictions = args.out / "predictions.csv"
    printed, predict_seconds = simclrv2(
        "predict", "--model", str(run), "--data", str(folders["test"]), "--out", str(predictions)
    )
    with open(predictions, newline="") as file:
        rows = list(csv.DictReader(file))
    agree = sum(row["predicted"] == row["label"] for row in rows)

    print(f"# own folders, {args.variant} labels: {counts} per class ({sum(counts)} in all)")
    print(f"# {datetime.date.today()}, {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"# simclrv2 pipeline {' '.join(roles)} --test TEST {' '.join(args.overrides)}")
    print(table.rstrip())
    print(f"\npipeline wall time: {pipeline_seconds / 60:.1f} min")
    print(f"predict wall time: {predict_seconds:.1f} s\n{printed.rstrip()}")
    print(f"\nhead of {predictions.name}:")
    print("\n".join(predictions.read_text().splitlines()[:4]))
    print(
        f"predicted class = test folder's class: {agree} of {len(rows)} ({100 * agree / len(rows):.2f}%)"
    )


if __name__ == "__main__":
    main()
