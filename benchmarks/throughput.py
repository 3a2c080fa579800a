"""Images/s of a full SimCLR pretraining step, each part's share of it, and the FLOP/s it achieves
against two ceilings measured in the same run.

The step is the library's own (what ``simclrv2 pretrain`` runs, less the data loader and logging):
two views of a uint8 batch by ``SimCLRAugment.reference`` (CIFAR-10 recipe at 32 px, ImageNet
recipe with blur at 224 px), the encoder and the 3-layer projection head on both views at once,
``nt_xent``, backward, and the LARS optimiser over the library's parameter groups, through the
``Runtime`` a run resolves (channels_last; bf16 autocast where the device has native bf16, as
this CPU and CUDA GPUs, else fp32; ``--precision`` overrides it).

Cases: ResNet-18 at widths 0.25 and 1 at 32 px (CIFAR stem, the authors' rule for 32 px), and
ResNet-50 at 224 px (standard stem) with a small batch. For each:

- ``img_s``: images per second of the whole step (each image gives two views);
- ``augment``/``forward``/``backward``/``optimizer``: each part's share of the step's time;
- ``GFLOP``: forward + backward FLOPs of the network and loss for one step, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add; elementwise ops, the
  augmentation and the optimiser are not counted, so this is the useful work);
- ``step_GFLOP_s``: those FLOPs over the whole step's time;
- ``bare_GFLOP_s``: a bare forward + backward of the same encoder on the same number of
  random float views (no augmentation, head, loss or optimiser), its FLOPs over its time;
- ``matmul_GFLOP_s``: a square 4096 matrix product in the step's precision, the machine's dense peak
  as PyTorch reaches it;
- ``of_bare``, ``of_matmul``: step_GFLOP_s over those two.

Times are medians of ``--repeats`` steps after one warm-up step (CUDA: with synchronisation
around each part). On CUDA the same table is printed again for the GPU, with larger batches.

Run::

    python benchmarks/throughput.py [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
# (arch, image side, batch on the CPU, batch on CUDA)
CASES = (
    ("r18_0.25x_sk0", 32, 256, 1024),
    ("r18_1x_sk0", 32, 128, 512),
    ("r50_1x_sk0", 224, 8, 128),
)
PARTS = ("augment", "forward", "backward", "optimizer")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    n = 4096
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats, device)


def counted_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Step:
    """One pretraining step of the library, split into its four timed parts."""

    def __init__(self, arch: str, size: int, batch: int, runtime) -> None:
        from simclrv2.augment import SimCLRAugment
        from simclrv2.models import ContrastiveModel, ProjectionHead, build_encoder
        from simclrv2.optim import build_optimizer

        self.runtime = runtime
        encoder = build_encoder(arch, image_size=size)
        self.model = runtime.module(ContrastiveModel(encoder, ProjectionHead(encoder.out_dim, 3)))
        self.optimizer = build_optimizer("lars", self.model, lr=0.1, weight_decay=1e-6)
        self.augment = SimCLRAugment.reference(size)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(
            0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator
        )
        self.images = self.images.to(runtime.device)
        self.generator = runtime.generator(0)

    def views(self) -> torch.Tensor:
        views = torch.cat(
            [self.augment(self.images, self.generator), self.augment(self.images, self.generator)]
        )
        return self.runtime.images(views)  # (2B, 3, S, S)

    def loss(self, views: torch.Tensor) -> torch.Tensor:
        from simclrv2.losses import nt_xent

        with self.runtime.autocast():
            _, z = self.model(views)
            return nt_xent(*z.chunk(2), temperature=0.5)

    def timed(self) -> dict[str, float]:
        """Seconds of each part of one step."""
        device, seconds = self.runtime.device, {}

        def part(name: str, fn: Callable[[], object]) -> object:
            synchronize(device)
            start = time.perf_counter()
            result = fn()
            synchronize(device)
            seconds[name] = time.perf_counter() - start
            return result

        views = part("augment", self.views)
        loss = part("forward", lambda: self.loss(views))
        self.optimizer.zero_grad(set_to_none=True)
        part("backward", loss.backward)
        part("optimizer", self.optimizer.step)
        return seconds

    def flops(self) -> int:
        views = self.views()
        return counted_flops(lambda: self.loss(views).backward())


def bare_encoder(arch: str, size: int, views: int, runtime, repeats: int) -> tuple[int, float]:
    """(FLOPs, seconds) of a bare forward + backward of the encoder on ``views`` random images."""
    from simclrv2.models import build_encoder

    encoder = runtime.module(build_encoder(arch, image_size=size))
    x = runtime.images(torch.rand(views, 3, size, size, device=runtime.device))

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        with runtime.autocast():
            out = encoder(x)
        out.float().sum().backward()

    return counted_flops(step), median_seconds(step, repeats, runtime.device)


def measure(device: str, precision: str, repeats: int) -> list[dict]:
    from simclrv2.config import RuntimeConfig
    from simclrv2.runtime import resolve_runtime

    runtime = resolve_runtime(RuntimeConfig(device=device, precision=precision))
    dtype = runtime.autocast_dtype or torch.float32
    matmul = matmul_flops_per_s(runtime.device, dtype, repeats)
    rows = []
    for arch, size, cpu_batch, cuda_batch in CASES:
        batch = cuda_batch if runtime.device.type == "cuda" else cpu_batch
        step = Step(arch, size, batch, runtime)
        step.timed()  # warm-up
        runs = [step.timed() for _ in range(repeats)]
        seconds = {name: statistics.median(r[name] for r in runs) for name in PARTS}
        total = statistics.median(sum(r.values()) for r in runs)
        flops = step.flops()
        bare_flops, bare_seconds = bare_encoder(arch, size, 2 * batch, runtime, repeats)
        achieved, bare = flops / total, bare_flops / bare_seconds
        rows.append(
            {
                "device": runtime.device.type,
                "precision": "bf16" if runtime.autocast_dtype else "fp32",
                "model": arch,
                "px": size,
                "batch": batch,
                "img_s": round(batch / total, 1),
                "step_ms": round(1000 * total),
                **{f"{name}_%": round(100 * seconds[name] / total, 1) for name in PARTS},
                "GFLOP": round(flops / 1e9, 1),
                "step_GFLOP_s": round(achieved / 1e9, 1),
                "bare_GFLOP_s": round(bare / 1e9, 1),
                "matmul_GFLOP_s": round(matmul / 1e9, 1),
                "of_bare": round(achieved / bare, 2),
                "of_matmul": round(achieved / matmul, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from simclrv2.tables import format_table

    cpu = cpu_model()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu}, {os.cpu_count()} cores{gpu}, "
        f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}"
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        rows = measure(device, args.precision, args.repeats)
        print(f"\n{device}:\n" + format_table(rows, markdown=True))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
