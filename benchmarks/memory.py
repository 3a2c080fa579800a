"""Peak memory of pretraining against the batch size, with and without gradient caching, and of the
dense against the tiled NT-Xent, on this CPU.

Every figure comes from a fresh process, single-threaded (a busy second core then changes the
timings little), which reports the peak of its resident memory (VmHWM) above its resident memory
just before the measured work, and the work's wall time:

- ``--steps``: one optimiser step of the real ``pretrain`` stage (augmentation, encoder and head,
  NT-Xent, LARS, the checkpoint and the export) on a data set of exactly one batch of random
  32 px RGB images, with the cifar10-v1 preset and ``--arch``.
- ``--losses``: NT-Xent forward and backward on 2N random embeddings of dimension 128, dense and
  tiled; dense is skipped where its (2N)^2 logits would need more than ``--dense-limit-gib``.

    python benchmarks/memory.py [--steps] [--losses] [--arch r18_0.25x_sk0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

STEP_RUNS = [(256, 0), (512, 0), (1024, 0), (1024, 128), (2048, 128), (4096, 128), (4096, 64)]
VIEWS = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
DENSE_COPIES = 3  # fp32 (2N)^2 matrices at the dense loss's peak (measured: 3.0 at 2N = 16,384)


def _resident_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024  # KiB -> MiB


def _report(start_mib: float, seconds: float) -> None:
    peak = _resident_mib("VmHWM")
    print(json.dumps({"peak_mib": peak, "above_start_mib": peak - start_mib, "seconds": seconds}))


def child_step(arch: str, batch: int, chunk: int) -> None:
    from simclrv2.config import load_config
    from simclrv2.data import ImageDataset
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.pretrain import pretrain

    setup_logging(None, enabled=False)
    config = load_config("cifar10-v1", overrides=[
        f"model.arch={arch}", f"pretrain.batch_size={batch}", f"pretrain.chunk_size={chunk}",
        "pretrain.epochs=1", "runtime.device=cpu",
    ])  # fmt: skip
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    data = ImageDataset(images)  # unlabelled: no online classifier, no kNN monitor
    runtime = resolve_runtime(config.runtime)
    with tempfile.TemporaryDirectory() as directory:
        start_mib, started = _resident_mib("VmRSS"), time.perf_counter()
        pretrain(config, Path(directory), data, {}, runtime)
        _report(start_mib, time.perf_counter() - started)


def child_loss(views: int, tiled: bool) -> None:
    from simclrv2 import losses

    losses.TILED_ABOVE = 0 if tiled else 1 << 62
    z = torch.randn(views, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    start_mib, started = _resident_mib("VmRSS"), time.perf_counter()
    losses.nt_xent(*z.chunk(2), temperature=0.1).backward()
    _report(start_mib, time.perf_counter() - started)


def _measure(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def steps(arch: str) -> None:
    print(f"pretraining step, {arch} at 32 px (cifar10-v1 preset), 1 thread")
    print(f"{'batch':>6} {'chunk':>6} {'peak MiB':>9} {'above start':>12} {'seconds':>8}")
    above = {}
    for batch, chunk in STEP_RUNS:
        result = _measure("step", arch, str(batch), str(chunk))
        above[batch, chunk] = result["above_start_mib"]
        print(
            f"{batch:>6} {chunk or '-':>6} {result['peak_mib']:>9.0f} "
            f"{result['above_start_mib']:>12.0f} {result['seconds']:>8.1f}",
            flush=True,
        )
    big, small = above[4096, 128], above[256, 0]
    print(
        f"batch 4096 in chunks of 128 views: {big:.0f} MiB above start, "
        f"{'within' if big <= small else 'ABOVE'} batch 256 unchunked ({small:.0f} MiB)\n"
    )


def loss_table(dense_limit_gib: float) -> None:
    print("NT-Xent forward + backward, d = 128, 1 thread")
    print(f"{'2N':>6} {'dense MiB':>10} {'dense s':>8} {'tiled MiB':>10} {'tiled s':>8}")
    for views in VIEWS:
        need_gib = DENSE_COPIES * views**2 * 4 / 2**30
        if need_gib <= dense_limit_gib:
            dense = _measure("loss", str(views), "dense")
            dense_text = f"{dense['above_start_mib']:>10.0f} {dense['seconds']:>8.2f}"
        else:
            dense_text = f"{f'~{need_gib * 1024:.0f}':>10} {'skipped':>8}"
        tiled = _measure("loss", str(views), "tiled")
        print(
            f"{views:>6} {dense_text} {tiled['above_start_mib']:>10.0f} {tiled['seconds']:>8.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", action="store_true", help="only the pretraining steps")
    parser.add_argument("--losses", action="store_true", help="only dense vs tiled NT-Xent")
    parser.add_argument("--arch", default="r18_0.25x_sk0", help="encoder of the steps")
    parser.add_argument("--dense-limit-gib", type=float, default=6.0)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        kind, *values = args.child
        if kind == "step":
            child_step(values[0], int(values[1]), int(values[2]))
        else:
            child_loss(int(values[0]), values[1] == "tiled")
        return
    both = not (args.steps or args.losses)
    if args.steps or both:
        steps(args.arch)
    if args.losses or both:
        loss_table(args.dense_limit_gib)


if __name__ == "__main__":
    main()
