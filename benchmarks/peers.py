"""The same SimCLR job run by simclrv2 and by lightly (the most used PyTorch peer), side by side in
one invocation: same images, same batch, same epochs, same network shape; images/s of the whole
training loop, peak memory, and kNN accuracy after that budget, with the ratios.

- Data: Fashion-MNIST as 32 px RGB (28 px padded by 2 black pixels, the grey channel repeated),
  ``--train`` images (class-balanced, labels unused in training) and ``--test`` images for kNN.
- Network: ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool), a 2-layer
  projection head 512 -> 512 -> 128, NT-Xent at temperature 0.5.
- lightly, written as its docs show it (examples/pytorch/simclr.py): ``SimCLRTransform`` (here
  with the CIFAR-10 recipe: ``input_size=32, cj_strength=0.5, gaussian_blur=0.0``) in a
  ``torch.utils.data.DataLoader`` (``--workers`` processes, default: one per core), torchvision's
  ``resnet18`` with its stem replaced by the CIFAR one, ``SimCLRProjectionHead(512, 512, 128)``,
  ``NTXentLoss``, SGD lr 0.06, the two views through the network one after the other.
- simclrv2: the library's own pretraining stage (``simclrv2.stages.pretrain.pretrain``) with the
  ``cifar10-v1`` preset (LARS, warm-up + cosine, batched augmentation of the same recipe),
  ``model.arch=r18_1x_sk0 model.head_layers=2``, and the learning rate of the library's
  short-budget ``demo`` preset, LARS 3.0*B/256 (the authors' 1.0*B/256 is for 1,000 epochs; the
  demo's sweep found 3.0 better than 0.3, 1.0 and 10; ``--variant pretrain.base_lr=1.0`` runs
  the authors'), at the runtime's defaults (bf16 autocast where the CPU has native bf16, the
  retained heap), on the same images without their labels; its timing includes what the stage
  does besides training (building the model, a checkpoint per epoch, the export at the end), so
  it is a conservative figure.
- kNN: weighted kNN (k = 200, tau 0.1, cosine) on h of the unaugmented images, the training
  images as the bank, computed by the same function for both; ``knn_top1_init`` is the same for
  the job's network before training (each library's own initialisation, outside the timing), to
  tell what training added from what the initialisation gives.
- Peak memory: the maximum resident set size of each job's process, plus that of its largest
  data-loader worker (lightly).

Each job runs in its own process with ``--threads`` torch threads: simclrv2 with this Python,
lightly in its own virtual environment (never the project's). Create it once (it pulls a CUDA
build of torch, several GB; it runs on the CPU here)::

    python -m venv benchmarks/.venvs/lightly && benchmarks/.venvs/lightly/bin/pip install lightly

Run (never part of CI)::

    python benchmarks/peers.py --data /work/shared/data/fashion-mnist [--epochs 6] [--seeds 0 1]

Single runs differ by one to two kNN points between seeds (and between thread counts, whose
arithmetic differs), so a difference between jobs means something only beyond the spread of
``--seeds``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "test")
LIGHTLY_PYTHON = REPO / "benchmarks" / ".venvs" / "lightly" / "bin" / "python"


# ----------------------------------------------------------------------------------------------
# Shared by both jobs (each imports this file in its own environment)


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, labels: torch.Tensor, k: int = 200, temperature: float = 0.1) -> float:  # fmt: skip
    """Weighted kNN top-1 in percent: the k most cosine-similar bank rows vote exp(sim / tau)."""
    bank = torch.nn.functional.normalize(bank, dim=1)
    queries = torch.nn.functional.normalize(queries, dim=1)
    top_sim, top_idx = (queries @ bank.T).topk(min(k, len(bank)), dim=1)  # (Q, k)
    votes = torch.zeros(len(queries), int(bank_labels.max()) + 1)
    votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
    return 100.0 * (votes.argmax(1) == labels).float().mean().item()


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus its largest finished child (a loader worker)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # kB on Linux


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


# ----------------------------------------------------------------------------------------------
# The lightly job (runs in lightly's environment)


def lightly_job(
    arrays: dict[str, np.ndarray], batch: int, epochs: int, workers: int, seed: int
) -> dict:
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.utils import IMAGENET_NORMALIZE
    from PIL import Image
    from torch import nn

    class Images(torch.utils.data.Dataset):
        """PIL images and labels, as torchvision's CIFAR10 dataset gives them."""

        def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
            self.images, self.labels, self.transform = images, labels, transform

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, index: int):
            image = Image.fromarray(self.images[index].transpose(1, 2, 0))
            return self.transform(image), int(self.labels[index])

    class SimCLR(nn.Module):
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(512, 512, 128)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    evaluate = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(**IMAGENET_NORMALIZE)]
    )

    @torch.no_grad()
    def features(images: np.ndarray) -> torch.Tensor:
        x = torch.stack([evaluate(Image.fromarray(i.transpose(1, 2, 0))) for i in images])
        return torch.cat([backbone(part).flatten(1) for part in x.split(512)])

    torch.manual_seed(seed)
    resnet = torchvision.models.resnet18()
    resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem
    resnet.maxpool = nn.Identity()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    model = SimCLR(backbone)
    at_init = {f"{split}_features_init": features(arrays[f"{split}_images"]) for split in SPLITS}
    started = time.perf_counter()
    backbone.train()
    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    dataset = Images(arrays["train_images"], arrays["train_labels"], transform)
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers
    )
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    steps = 0
    for _ in range(epochs):
        for views, _ in dataloader:
            x0, x1 = views
            z0, z1 = model(x0), model(x1)
            loss = criterion(z0, z1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
    seconds = time.perf_counter() - started
    backbone.eval()
    return at_init | {
        "seconds": seconds, "steps": steps, "loss": loss.item(), "peak_rss_MB": peak_rss_mb(),
        "train_features": features(arrays["train_images"]), "test_features": features(arrays["test_images"]),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The simclrv2 job (runs with the project's Python and this checkout's sources)


def simclrv2_job(
    arrays: dict[str, np.ndarray], batch: int, epochs: int, seed: int, extra: list[str]
) -> dict:
    from simclrv2.build import encoder as stage_encoder
    from simclrv2.config import load_config
    from simclrv2.data import ImageDataset
    from simclrv2.evaluation import extract
    from simclrv2.metrics import setup_logging
    from simclrv2.runtime import resolve_runtime
    from simclrv2.stages.pretrain import pretrain

    setup_logging(None, enabled=False)
    config = load_config(
        "cifar10-v1",
        overrides=[
            "model.arch=r18_1x_sk0", "model.head_layers=2", "data.image_size=32",
            f"pretrain.batch_size={batch}", f"pretrain.epochs={epochs}", "pretrain.warmup=0.1",
            "pretrain.warmup_unit=fraction", "pretrain.base_lr=3.0", "runtime.device=cpu",
            f"runtime.seed={seed}", *extra,
        ],
    )  # fmt: skip
    runtime = resolve_runtime(config.runtime)
    train = ImageDataset(torch.from_numpy(arrays["train_images"]))  # no labels: SimCLR alone
    test = ImageDataset(torch.from_numpy(arrays["test_images"]))
    torch.manual_seed(config.runtime.seed)  # the stage's own seeding: its initial encoder
    initial = runtime.module(stage_encoder(config.model, config.model.arch, train)).eval()
    at_init = {f"{split}_features_init": extract(initial, data, runtime, 32)[0] for split, data in (("train", train), ("test", test))}  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        result = pretrain(config, Path(directory), train, {}, runtime)
        seconds = time.perf_counter() - started
    encoder = runtime.module(result.model.encoder).eval()
    steps = epochs * (len(train) // batch)
    return at_init | {
        "seconds": seconds, "steps": steps, "peak_rss_MB": peak_rss_mb(),
        "train_features": extract(encoder, train, runtime, 32)[0],
        "test_features": extract(encoder, test, runtime, 32)[0],
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The driver


def fashion_mnist_rgb32(source: str, train: int, test: int, path: Path) -> None:
    """Class-balanced subsets of Fashion-MNIST as uint8 (N, 3, 32, 32) arrays in ``path``."""
    from simclrv2.data import class_balanced_indices, load_dataset

    arrays = {}
    for split, count in (("train", train), ("test", test)):
        data = load_dataset(source, split)
        keep = class_balanced_indices(data.labels, per_class=count // data.num_classes, seed=0)
        images = torch.nn.functional.pad(data.images[keep], (2, 2, 2, 2)).expand(-1, 3, -1, -1)
        arrays[f"{split}_images"] = images.contiguous().numpy()
        arrays[f"{split}_labels"] = data.labels[keep].numpy()
    np.savez(path, **arrays)


def run_job(
    name: str, args: argparse.Namespace, data: Path, seed: int, extra: list[str] = ()
) -> dict:
    """One job (``simclrv2`` or ``lightly``) in a fresh process with its own Python (``extra``:
    simclrv2 overrides); returns its figures and kNN accuracy."""
    python = args.lightly_python if name == "lightly" else Path(sys.executable)
    env = os.environ | {
        "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
        "PYTHONPATH": str(REPO / "src") if name == "simclrv2" else "",
    }  # fmt: skip
    out = data.with_name("job.pt")
    command = [str(python), __file__, "--job", name, "--job-data", str(data), "--job-out", str(out)]
    command += ["--job-seed", str(seed), "--threads", str(args.threads), "--batch", str(args.batch)]
    command += ["--epochs", str(args.epochs), "--workers", str(args.workers)]
    command += ["--job-set", *extra] if extra else []
    load = os.getloadavg()[0]
    subprocess.run(command, env=env, check=True)
    result = torch.load(out, weights_only=True)
    arrays = load_arrays(data)
    for when in ("", "_init"):  # after training, and the same network before it
        result[f"knn_top1{when}"] = knn_top1(
            result.pop(f"train_features{when}"), torch.from_numpy(arrays["train_labels"]),
            result.pop(f"test_features{when}"), torch.from_numpy(arrays["test_labels"]),
        )  # fmt: skip
    result["load_before"] = load
    return result


def summary_row(name: str, runs: list[dict], batch: int) -> dict:
    """One job's row: rates and accuracies averaged over its seeds, each seed's kNN listed (the
    spread between seeds is the noise any difference between jobs must clear)."""
    knn = [run["knn_top1"] for run in runs]
    return {
        "job": name,
        "steps": runs[0]["steps"],
        "seconds": round(float(np.mean([run["seconds"] for run in runs])), 1),
        "img_s": round(float(np.mean([run["steps"] * batch / run["seconds"] for run in runs])), 1),
        "peak_rss_MB": round(max(run["peak_rss_MB"] for run in runs)),
        "knn_top1_init": round(float(np.mean([run["knn_top1_init"] for run in runs])), 2),
        "knn_top1": round(float(np.mean(knn)), 2),
        "knn_per_seed": " / ".join(f"{value:.2f}" for value in knn),
        "load_before": round(runs[0]["load_before"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="IDX folder")
    parser.add_argument("--train", type=int, default=2560, help="training images (class-balanced)")
    parser.add_argument("--test", type=int, default=1000, help="test images for kNN")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="lightly's loader")
    parser.add_argument("--lightly-python", type=Path, default=LIGHTLY_PYTHON)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="run every job once per seed (default: 0)"
    )
    parser.add_argument("--job", choices=("simclrv2", "lightly"), help=argparse.SUPPRESS)
    parser.add_argument("--job-data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job-set", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar="KEY=VALUE",
        help="also run simclrv2 with these overrides, e.g. runtime.precision=fp32 (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.job:  # inside one job's process
        arrays = load_arrays(args.job_data)
        if args.job == "lightly":
            result = lightly_job(arrays, args.batch, args.epochs, args.workers, args.job_seed)
        else:
            result = simclrv2_job(arrays, args.batch, args.epochs, args.job_seed, args.job_set)
        torch.save(result, args.job_out)
        return

    if not args.lightly_python.exists():
        sys.exit(f"{args.lightly_python} is missing; create lightly's environment (see --help)")
    from simclrv2.tables import format_table

    version = subprocess.run(
        [str(args.lightly_python), "-c", "import lightly, torch; print(lightly.__version__, torch.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    cpu = cpu_model()
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu}, {os.cpu_count()} cores, "
        f"{args.threads} threads; simclrv2 on torch {torch.__version__}, lightly {version[0]} on "
        f"torch {version[1]} ({args.workers} loader workers); {args.train} training images, "
        f"batch {args.batch}, {args.epochs} epochs; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    jobs = [("simclrv2", "simclrv2", []), (f"lightly {version[0]}", "lightly", [])]
    jobs += [("simclrv2 " + " ".join(variant), "simclrv2", variant) for variant in args.variant]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "fashion-mnist-rgb32.npz"
        fashion_mnist_rgb32(args.data, args.train, args.test, data)
        for title, name, extra in jobs:
            runs = [run_job(name, args, data, seed, extra) for seed in args.seeds]
            rows.append(summary_row(title, runs, args.batch))
    theirs = rows[1]
    print(format_table(rows, markdown=True) + "\n")
    for ours in rows[:1] + rows[2:]:
        print(
            f"{ours['job']} / {theirs['job']}: throughput {ours['img_s'] / theirs['img_s']:.2f}x, "
            f"peak memory {ours['peak_rss_MB'] / theirs['peak_rss_MB']:.2f}x, kNN top-1 "
            f"{ours['knn_top1'] - theirs['knn_top1']:+.2f} points (mean over seeds)"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))  # this checkout (the lightly job never imports it)
    main()
