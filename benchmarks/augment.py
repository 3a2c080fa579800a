"""Images/s of SimCLR's pretraining augmentation on this CPU, three ways, in one table:

- simclrv2: ``SimCLRAugment.reference(size)`` on the whole batch (the library's hot path);
- kornia 0.9: the equivalent ``kornia.augmentation`` pipeline (RandomResizedCrop bicubic,
  RandomHorizontalFlip, ColorJiggle 0.8s/0.8s/0.8s/0.2s with p 0.8, RandomGrayscale 0.2,
  RandomGaussianBlur 0.5 with zero padding where the recipe blurs), run in its own virtual
  environment as a subprocess of this script;
- per-image loop: the same ``SimCLRAugment`` called on one image at a time, as a per-sample
  data-loader transform would.

Cases: 32 px at batch 512 (CIFAR-10 recipe: s = 0.5, no blur) and 224 px at batch 128 (ImageNet
recipe: s = 1.0, blur), random uint8 RGB inputs at the output size. Then the time two views of a
512-image batch take at 32 px, as a share of one forward + backward step of
``resnet18(cifar_stem=True)`` on 512 images of 32 px (a SimCLR step feeds it both views, 1024
images, so the true share is about half of this).

``--retained-heap`` gives both processes (this one and kornia's) the heap setting the library's
runtime applies on the CPU (``runtime.retain_freed_memory``, see ``simclrv2.runtime``); without
it both run on glibc's default heap, which returns large freed blocks to the OS.

Each time is the median of ``--repeats`` calls after a warm-up, as wall time (img/s) and as this
process's CPU time (img/CPU-s). On a machine shared with other jobs the CPU time is the steadier
measure at one thread; with more threads it also counts the time threads spin waiting for a
descheduled sibling.

Set up kornia once (it reuses the installed torch, so no CUDA build is pulled)::

    python -m venv --system-site-packages benchmarks/.venvs/kornia
    benchmarks/.venvs/kornia/bin/pip install kornia==0.9.0

Run::

    python benchmarks/augment.py [--threads N] [--repeats 5] [--retained-heap]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
KORNIA_PYTHON = REPO / "benchmarks" / ".venvs" / "kornia" / "bin" / "python"
CASES = ((32, 512), (224, 128))  # (image side, batch)


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def inputs(size: int, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(size)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def kornia_seconds(repeats: int) -> dict[int, tuple[float, float]]:
    """(wall, CPU) seconds per batch of kornia's pipeline; runs in the kornia environment."""
    import kornia.augmentation as K

    from simclrv2.augment import SimCLRAugment, blur_kernel_size

    seconds = {}
    for size, batch in CASES:
        recipe = SimCLRAugment.reference(size)
        s = recipe.jitter_strength
        ops = [
            K.RandomResizedCrop(
                (size, size), scale=recipe.crop_scale, ratio=recipe.crop_ratio, resample="BICUBIC"
            ),
            K.RandomHorizontalFlip(p=recipe.flip_p),
            K.ColorJiggle(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=recipe.jitter_p),
            K.RandomGrayscale(p=recipe.grayscale_p),
        ]
        if recipe.blur:
            k = blur_kernel_size(size)
            ops.append(
                K.RandomGaussianBlur((k, k), recipe.blur_sigma, border_type="constant", p=0.5)
            )
        pipeline = torch.nn.Sequential(*ops)
        images = inputs(size, batch)

        def run(pipeline=pipeline, images=images) -> torch.Tensor:
            with torch.no_grad():
                return pipeline(images.float() / 255).clamp(0, 1)

        seconds[size] = median_seconds(run, repeats)
    return seconds


def kornia_in_its_venv(
    threads: int, repeats: int, retained_heap: bool
) -> dict[int, tuple[float, float]] | None:
    if not KORNIA_PYTHON.exists():
        print(f"(kornia skipped: {KORNIA_PYTHON} missing; see this script's docstring)")
        return None
    command = [str(KORNIA_PYTHON), __file__, "--kornia-worker"]
    command += ["--threads", str(threads), "--repeats", str(repeats)]
    command += ["--retained-heap"] if retained_heap else []
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return {int(k): tuple(v) for k, v in json.loads(result.stdout.splitlines()[-1]).items()}


def simclrv2_seconds(size: int, batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per batch: SimCLRAugment on the whole batch, and one image at a time."""
    from simclrv2.augment import SimCLRAugment

    augment, images = SimCLRAugment.reference(size), inputs(size, batch)
    generator = torch.Generator().manual_seed(0)
    return {
        "simclrv2": median_seconds(lambda: augment(images, generator), repeats),
        "per-image loop": median_seconds(
            lambda: [augment(image[None], generator) for image in images], max(1, repeats // 2)
        ),
    }


def two_views_seconds(repeats: int) -> tuple[float, float]:
    """Two views of 512 images of 32 px (CIFAR-10 recipe), as a pretraining step makes them."""
    from simclrv2.augment import SimCLRAugment

    augment, images = SimCLRAugment.reference(32), inputs(32, 512)
    generator = torch.Generator().manual_seed(0)
    return median_seconds(lambda: (augment(images, generator), augment(images, generator)), repeats)


def resnet18_step_seconds(repeats: int) -> tuple[float, float]:
    """Forward + backward of resnet18 (CIFAR stem) on 512 images of 32 px."""
    from simclrv2.models import resnet18

    model = resnet18(cifar_stem=True)
    images = torch.rand(512, 3, 32, 32)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(images).square().mean().backward()

    return median_seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-repeats", type=int, default=2, help="ResNet-18 steps timed")
    parser.add_argument("--retained-heap", action="store_true", help="see the docstring")
    parser.add_argument("--kornia-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.retained_heap:
        from simclrv2.runtime import retain_freed_memory

        retain_freed_memory()
    if args.kornia_worker:
        print(json.dumps(kornia_seconds(args.repeats)))
        return

    from simclrv2.tables import format_table

    cpu = cpu_model()
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f}, "
        f"{'retained' if args.retained_heap else 'default'} heap"
    )
    kornia = kornia_in_its_venv(args.threads, args.repeats, args.retained_heap)
    rows = []
    for size, batch in CASES:
        measured = simclrv2_seconds(size, batch, args.repeats)
        if kornia:
            measured["kornia 0.9.0"] = kornia[size]
        ours_wall, ours_cpu = measured["simclrv2"]
        for name, (wall, cpu_time) in measured.items():
            rows.append(
                {
                    "size_px": size,
                    "batch": batch,
                    "implementation": name,
                    "img_s": round(batch / wall),
                    "img_cpu_s": round(batch / cpu_time),
                    "simclrv2_speedup_wall": round(wall / ours_wall, 2),
                    "simclrv2_speedup_cpu": round(cpu_time / ours_cpu, 2),
                }
            )
    print(format_table(rows, markdown=True))

    (views_wall, views_cpu), (step_wall, step_cpu) = (
        two_views_seconds(args.repeats),
        resnet18_step_seconds(args.step_repeats),
    )
    print(
        f"\ntwo views of 512 images at 32 px: {views_wall * 1000:.0f} ms wall "
        f"({views_cpu * 1000:.0f} ms CPU) = {100 * views_wall / step_wall:.2f}% "
        f"({100 * views_cpu / step_cpu:.2f}% of CPU time) of a resnet18 (CIFAR stem) "
        f"forward+backward step on 512 images ({step_wall:.1f} s wall, {step_cpu:.1f} s CPU)"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
