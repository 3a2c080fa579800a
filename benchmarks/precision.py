"""bf16 autocast and channels_last against fp32 on this CPU: time of a SimCLR step and how far the
gradients move.

One SimCLR step (encoder, projection head, NT-Xent, backward) of ResNet-18 with the CIFAR stem at
32 px (the cifar10-v1 preset's network with ``--arch``) on a fixed random batch, in every
combination of precision and memory format. Configurations are timed in interleaved rounds (best
of ``--rounds``), so that a load change on the shared cores hits them alike. The gradient of every
configuration at initialisation is compared with fp32 NCHW by the cosine of the flattened
gradients and the relative difference of the loss.

    python benchmarks/precision.py [--arch r18_1x_sk0] [--images 64] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from simclrv2.config import load_config
from simclrv2.data import ImageDataset
from simclrv2.losses import nt_xent
from simclrv2.runtime import Runtime
from simclrv2.stages.pretrain import build_contrastive_model

CONFIGURATIONS = {
    "fp32": (None, False),
    "fp32 channels_last": (None, True),
    "bf16": (torch.bfloat16, False),
    "bf16 channels_last": (torch.bfloat16, True),
}


def step(
    model: torch.nn.Module, runtime: Runtime, views: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """One forward and backward; returns the loss and the flattened parameter gradient."""
    model.zero_grad(set_to_none=True)
    with runtime.autocast():
        _, z = model(runtime.images(views))
        loss = nt_xent(*z.chunk(2), temperature=0.5)
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="r18_1x_sk0")
    parser.add_argument("--images", type=int, default=64, help="images per step (2x views)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config("cifar10-v1", overrides=[f"model.arch={args.arch}"])
    images = torch.zeros(args.images, 3, 32, 32, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(2 * args.images, 3, 32, 32, generator=gen)  # (2N, 3, 32, 32)

    torch.manual_seed(0)
    reference = build_contrastive_model(config, ImageDataset(images), 32).state_dict()
    models, runtimes = {}, {}
    for name, (dtype, channels_last) in CONFIGURATIONS.items():
        runtimes[name] = Runtime(torch.device("cpu"), dtype, channels_last)
        model = build_contrastive_model(config, ImageDataset(images), 32)
        model.load_state_dict(reference)
        models[name] = runtimes[name].module(model)

    results = {name: step(models[name], runtimes[name], views) for name in CONFIGURATIONS}
    seconds = {name: float("inf") for name in CONFIGURATIONS}
    for _ in range(args.rounds):
        for name in CONFIGURATIONS:
            started = time.perf_counter()
            step(models[name], runtimes[name], views)
            seconds[name] = min(seconds[name], time.perf_counter() - started)

    base_loss, base_grad = results["fp32"]
    print(
        f"SimCLR step, {args.arch} at 32 px, {2 * args.images} views, {args.threads} thread(s), "
        f"best of {args.rounds}; gradients at initialisation against fp32"
    )
    print(
        f"{'configuration':<20} {'seconds':>8} {'speed-up':>9} {'grad cosine':>12} {'loss diff':>10}"
    )
    for name, (loss, grad) in results.items():
        cosine = torch.nn.functional.cosine_similarity(grad.double(), base_grad.double(), dim=0)
        print(
            f"{name:<20} {seconds[name]:>8.2f} {seconds['fp32'] / seconds[name]:>8.2f}x "
            f"{cosine.item():>12.4f} {abs(loss - base_loss) / base_loss:>10.1e}"
        )


if __name__ == "__main__":
    main()
