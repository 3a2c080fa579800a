"""What ``runtime.retain_freed_memory`` buys on this CPU: a SimCLR step on glibc's default heap
against the same step with freed blocks kept for reuse, with the page faults each one takes.

One SimCLR step (ResNet-18 with the CIFAR stem at 32 px and the 2-layer head of the cifar10-v1
preset, NT-Xent, backward, an SGD update) on a fixed random batch, for two widths in fp32 and bf16
autocast, channels_last. The heap setting is process-wide, so each (network, precision, heap) runs
in its own process; the processes alternate in ``--rounds`` rounds and each keeps its best round,
so that a load change on the shared cores hits both heaps alike. ``faults_per_step`` are the minor
page faults (``getrusage``) of one step after warm-up.

    python benchmarks/heap.py [--images 128] [--threads 2] [--steps 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CASES = [(arch, precision) for arch in ("r18_1x_sk0", "r18_0.25x_sk0") for precision in ("fp32", "bf16")]  # fmt: skip


def worker(arch: str, precision: str, retained: bool, images: int, steps: int) -> dict:
    """Best seconds per step over ``steps`` steps after one warm-up, and faults per step."""
    from simclrv2.build import contrastive_model
    from simclrv2.config import load_config
    from simclrv2.data import ImageDataset
    from simclrv2.losses import nt_xent
    from simclrv2.runtime import Runtime, retain_freed_memory

    if retained:
        retain_freed_memory()
    config = load_config("cifar10-v1", overrides=[f"model.arch={arch}", "model.head_layers=2"])
    runtime = Runtime(torch.device("cpu"), torch.bfloat16 if precision == "bf16" else None, True)
    torch.manual_seed(0)
    blank = ImageDataset(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    model = runtime.module(contrastive_model(config, blank))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    views = torch.rand(2 * images, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with runtime.autocast():
            _, z = model(runtime.images(views))
        nt_xent(*z.float().chunk(2), temperature=0.5).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    seconds, faults = [], []
    for _ in range(steps):
        before, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"seconds": min(seconds), "faults": min(faults)}


def in_its_own_process(arch: str, precision: str, retained: bool, args: argparse.Namespace) -> dict:
    """:func:`worker` in a fresh interpreter (the heap setting cannot be undone in this one)."""
    command = [sys.executable, __file__, "--worker", arch, precision, str(int(retained))]
    command += ["--images", str(args.images), "--threads", str(args.threads)]
    command += ["--steps", str(args.steps)]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images per step (2x views)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", nargs=3, metavar=("ARCH", "PRECISION", "RETAINED"), help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        arch, precision, retained = args.worker
        print(json.dumps(worker(arch, precision, retained == "1", args.images, args.steps)))
        return

    from simclrv2.tables import format_table

    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, {args.images} images per step, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    best: dict[tuple[str, str, bool], dict] = {}
    for _ in range(args.rounds):
        for key in [(*case, retained) for case in CASES for retained in (False, True)]:
            result = in_its_own_process(*key, args)
            if key not in best or result["seconds"] < best[key]["seconds"]:
                best[key] = result
    rows = []
    for (arch, precision, retained), result in best.items():
        default = best[(arch, precision, False)]
        rows.append(
            {
                "arch": arch,
                "precision": precision,
                "heap": "retained" if retained else "default",
                "img_s": round(args.images / result["seconds"], 1),
                "faults_per_step": result["faults"],
                "speedup": round(default["seconds"] / result["seconds"], 2),
            }
        )
    print(format_table(rows, markdown=True))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
