"""Images/s of the library's pretraining step on one CUDA GPU (bf16 autocast, channels_last) against
a bare forward + backward of the same network, the share of a step the GPU sits idle, and how often
a step makes the host wait for the GPU; with ``--memory``, the peak GPU memory of SimCLRv2's largest
encoder pretraining with gradient caching.

Cases: ResNet-18 with the CIFAR stem at 32 px, batch 512 (the cifar10-v1 recipe), and ResNet-50
(``r50_1x_sk0``) at 224 px, batch 256 (the imagenet-v2 recipe). For each:

- ``step_img_s``: images per second of the step ``simclrv2 pretrain`` runs, less the data loader
  and logging: two views of a uint8 batch already on the GPU by the preset's augmentation
  (``build.pretrain_augment``), the model of ``build.contrastive_model`` on both views at once,
  NT-Xent, backward, and LARS (``optim.build_optimizer``);
- ``bare_img_s``: a forward + backward of the same encoder and head on float views made beforehand
  (no augmentation, loss or optimiser), the ceiling; ``of_bare``: step_img_s over bare_img_s;
- ``gpu_idle_%``: the share of the wall time of 3 steps in which no kernel, copy or memset runs,
  from ``torch.profiler`` (whose own overhead on the host adds a little);
- ``syncs_per_step``: operations that make the host wait for the GPU, counted over 3 steps with
  ``torch.cuda.set_sync_debug_mode("warn")``; the lines that cause them are listed below the table.

Timing: 3 warm-up steps, then up to ``--steps`` steps (fewer when a step is slow, so that each
case stays within about a minute) between two ``torch.cuda.synchronize``.

``--memory``: one step each of ``r152_3x_sk1`` (795M parameters) at 224 px, batch 512, in chunks
of 64 and 128 views (``pretrain.chunk_size``, :mod:`simclrv2.gradcache`), after a small step that
creates the optimiser state: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, and the memory allocated when the step starts (weights, gradients,
LARS momentum).

On a machine without CUDA it says so and exits 0. Run::

    python benchmarks/gpu_throughput.py [--steps 10]
    python benchmarks/gpu_throughput.py --memory
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CASES = (  # (preset, arch, image side, batch of images)
    ("cifar10-v1", "r18_1x_sk0", 32, 512),
    ("imagenet-v2", "r50_1x_sk0", 224, 256),
)
WARMUP = 3
PROBED = 3  # steps under the profiler, and steps whose host syncs are counted
CASE_SECONDS = 15.0  # timed steps of each loop: at most this long
MEMORY_ARCH, MEMORY_SIZE, MEMORY_BATCH, MEMORY_CHUNKS = "r152_3x_sk1", 224, 512, (64, 128)
GIB = 2**30


class PretrainStep:
    """The library's pretraining step (as ``stages.pretrain`` builds it) for a preset, an
    architecture and a batch of random uint8 images on the GPU."""

    def __init__(self, preset: str, arch: str, size: int, batch: int) -> None:
        from simclrv2 import build
        from simclrv2.config import RuntimeConfig, load_config
        from simclrv2.data import ImageDataset
        from simclrv2.optim import build_optimizer, scaled_learning_rate
        from simclrv2.runtime import resolve_runtime

        self.config = load_config(preset, overrides=[f"model.arch={arch}"])
        self.runtime = resolve_runtime(RuntimeConfig(device="cuda", precision="bf16"))
        device = self.runtime.device
        self.generator = self.runtime.generator(0)
        self.images = torch.randint(
            0,
            256,
            (batch, 3, size, size),
            dtype=torch.uint8,
            device=device,
            generator=self.generator,
        )
        like = ImageDataset(torch.zeros((1, 3, size, size), dtype=torch.uint8))  # side, channels
        with device:  # weights made on the GPU: seconds instead of a minute for r152_3x_sk1
            self.model = self.runtime.module(build.contrastive_model(self.config, like))
        settings = self.config.pretrain
        lr = scaled_learning_rate(settings.base_lr, batch, settings.lr_scaling)
        self.optimizer = build_optimizer("lars", self.model, lr, settings.weight_decay)
        self.augment = build.pretrain_augment(self.config.augment, size)

    def __call__(self, chunk: int = 0, count: int | None = None) -> None:
        """One step on the first ``count`` images (all by default), ``chunk`` views at a time
        with gradient caching (0: the whole batch at once)."""
        from simclrv2.gradcache import chunked_forward
        from simclrv2.losses import nt_xent

        images = self.images[:count]
        encode = partial(chunked_forward, self.model, chunk_size=chunk) if chunk else self.model
        with self.runtime.autocast():  # as training.fit runs a stage's step
            views = torch.cat([self.augment(images, self.generator) for _ in range(2)])
            _, z = encode(self.runtime.images(views))
            loss = nt_xent(*z.chunk(2), self.config.pretrain.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def bare(self) -> Callable[[], None]:
        """A forward + backward of the same model on float views made once, nothing else."""
        views = torch.rand(
            (2 * len(self.images), *self.images.shape[1:]), device=self.images.device
        )
        views = self.runtime.images(views)

        def step() -> None:
            self.model.zero_grad(set_to_none=True)
            with self.runtime.autocast():
                _, z = self.model(views)
            z.float().sum().backward()

        return step


def images_per_s(step: Callable[[], None], batch: int, most: int) -> float:
    """Images/s over up to ``most`` steps after the warm-up, fewer if the last warm-up step says
    that ``most`` would take more than CASE_SECONDS."""
    for _ in range(WARMUP - 1):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    step()
    torch.cuda.synchronize()
    steps = max(1, min(most, int(CASE_SECONDS / (time.perf_counter() - started))))
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started)


def gpu_idle_fraction(step: Callable[[], None]) -> float:
    """1 - (time in which some kernel, copy or memset runs) / (wall time), over PROBED steps."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        for _ in range(PROBED):
            step()
        torch.cuda.synchronize()
    events = profiler.events()
    wall = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    device = sorted(
        (e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA
    )
    if not device:  # the profiler saw no GPU activity (no CUPTI in this build?): no figure
        return float("nan")
    busy, reached = 0.0, float("-inf")
    for start, end in device:  # the union of the intervals: concurrent kernels count once
        busy += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return 1 - busy / wall


def host_syncs(step: Callable[[], None]) -> tuple[float, collections.Counter]:
    """Synchronising CUDA operations per step over PROBED steps, and the lines that call them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(PROBED):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
    lines = collections.Counter(f"{_short(w.filename)}:{w.lineno}" for w in syncs)
    return len(syncs) / PROBED, lines


def _short(filename: str) -> str:
    path = Path(filename).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def measure_case(preset: str, arch: str, size: int, batch: int, most_steps: int) -> dict:
    """One row of the table; its step (and its GPU memory) is gone when this returns."""
    step = PretrainStep(preset, arch, size, batch)
    full = images_per_s(step, batch, most_steps)
    bare = images_per_s(step.bare(), batch, most_steps)
    syncs, lines = host_syncs(step)
    return {
        "step_img_s": round(full, 1),
        "bare_img_s": round(bare, 1),
        "of_bare": round(full / bare, 3),
        "gpu_idle_%": round(100 * gpu_idle_fraction(step), 1),
        "syncs_per_step": round(syncs, 1),
        "lines": lines,
    }


def throughput(most_steps: int) -> None:
    from simclrv2.tables import format_table

    rows, sources = [], {}
    for preset, arch, size, batch in CASES:
        row, started = {"model": arch, "px": size, "batch": batch}, time.perf_counter()
        try:
            measured = measure_case(preset, arch, size, batch, most_steps)
        except torch.cuda.OutOfMemoryError:
            measured = {"step_img_s": "out of memory", "lines": None}
        torch.cuda.empty_cache()
        sources[f"{arch} at {size} px"] = measured.pop("lines")
        rows.append(row | measured)
        print(f"{arch}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows, markdown=True))
    for case, lines in sources.items():
        if lines is not None:
            where = ", ".join(f"{line} x{n / PROBED:g}" for line, n in lines.most_common(8))
            print(f"\nhost syncs per step of {case}, by line: {where or 'none'}")


def memory() -> None:
    from simclrv2.tables import format_table

    step = PretrainStep("imagenet-v2", MEMORY_ARCH, MEMORY_SIZE, MEMORY_BATCH)
    parameters = sum(p.numel() for p in step.model.parameters())
    step(chunk=8, count=8)  # creates the LARS state, so each measured step starts alike
    rows = []
    for chunk in MEMORY_CHUNKS:
        row = {"model": MEMORY_ARCH, "px": MEMORY_SIZE, "batch": MEMORY_BATCH, "chunk": chunk}
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        started = time.perf_counter()
        try:
            step(chunk=chunk)
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            rows.append(row | {"peak_GiB": "out of memory"})
            torch.cuda.empty_cache()
            continue
        rows.append(
            row
            | {
                "params_M": round(parameters / 1e6, 1),
                "start_GiB": round(start / GIB, 2),
                "peak_GiB": round(torch.cuda.max_memory_allocated() / GIB, 2),
                "peak_reserved_GiB": round(torch.cuda.max_memory_reserved() / GIB, 2),
                "step_s": round(time.perf_counter() - started, 2),
            }
        )
    print(format_table(rows, markdown=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop, at most")
    parser.add_argument("--memory", action="store_true", help="the r152_3x_sk1 memory table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_throughput: no CUDA GPU visible to torch {torch.__version__}; nothing measured")
        return
    gpu = torch.cuda.get_device_properties(0)
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, "
        f"{gpu.name} ({gpu.total_memory / GIB:.0f} GiB), torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"cudnn.benchmark {torch.backends.cudnn.benchmark}, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    if args.memory:
        memory()
    else:
        throughput(args.steps)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
