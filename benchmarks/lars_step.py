"""Time of one optimiser step on the ``r50_1x_sk1`` encoder: the foreach LARS against the previous
per-tensor LARS and foreach SGD.

The encoder's parameters are split by :func:`simclrv2.optim.parameter_groups` (weight decay 1e-4)
and given random gradients once; each optimiser then steps on them. After ``--warmup`` untimed
steps each (which also create the momentum buffers), the optimisers take ``--steps`` timed steps in
turn, one step each at a time, so that a load change on the shared cores hits all of them alike.
``mean_ms`` and ``median_ms`` are over those steps; ``vs_sgd`` is ``mean_ms`` over foreach SGD's.

    python benchmarks/lars_step.py [--threads 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
ARCH, IMAGE_SIZE, LR, WEIGHT_DECAY = "r50_1x_sk1", 224, 0.1, 1e-4


def previous_lars_step(optimizer: torch.optim.Optimizer) -> None:
    """The previous implementation of ``LARS.step``, kept here only for the comparison: a Python
    loop over the tensors with a learning-rate tensor built for each (a host-device copy on CUDA)."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                scaled_lr = torch.tensor(group["lr"], device=p.device)
                if group["lars"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0
                    )
                    scaled_lr = scaled_lr * trust
                state = optimizer.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                velocity = state["momentum_buffer"]
                velocity.mul_(group["momentum"]).add_(grad * scaled_lr)
                p.sub_(velocity)


def step_ms(step) -> float:
    started = time.perf_counter()
    step()
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimiser")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per optimiser")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from simclrv2.models import build_encoder
    from simclrv2.optim import LARS, parameter_groups
    from simclrv2.tables import format_table

    torch.manual_seed(0)
    encoder = build_encoder(ARCH, image_size=IMAGE_SIZE)
    for p in encoder.parameters():
        p.grad = torch.randn_like(p)
    lars = LARS(parameter_groups(encoder, WEIGHT_DECAY), lr=LR)
    previous = LARS(parameter_groups(encoder, WEIGHT_DECAY), lr=LR)
    sgd = torch.optim.SGD(
        parameter_groups(encoder, WEIGHT_DECAY), lr=LR, momentum=0.9, foreach=True
    )
    steps = {
        "LARS (foreach)": lars.step,
        "LARS (previous, per tensor)": lambda: previous_lars_step(previous),
        "SGD (foreach, momentum 0.9)": sgd.step,
    }
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, {ARCH} "
        f"({sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M values in "
        f"{len(list(encoder.parameters()))} tensors), load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(step_ms(step))
    mean = {name: statistics.mean(ms) for name, ms in times.items()}
    sgd_ms = mean["SGD (foreach, momentum 0.9)"]
    rows = [
        {
            "optimizer": name,
            "mean_ms": round(mean[name], 1),
            "median_ms": round(statistics.median(ms), 1),
            "vs_sgd": round(mean[name] / sgd_ms, 2),
        }
        for name, ms in times.items()
    ]
    print(format_table(rows, markdown=True))
    print(f"LARS / SGD: {mean['LARS (foreach)'] / sgd_ms:.2f} (goal: at most 1.5)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # measure this checkout, not an installed copy
    main()
