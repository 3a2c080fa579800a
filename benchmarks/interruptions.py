"""What an interruption costs: how fast SIGTERM stops ``simclrv2 pretrain``, and what one checkpoint
costs to write and, on resume, to verify and load.

- SIGTERM: a real ``simclrv2 pretrain`` process (one CPU thread) gets SIGTERM once two checkpoints
  exist; printed are the seconds until its stop message (the rest of the step plus the checkpoint)
  and until the process has exited (plus the interpreter's shutdown). Cases: the tests' tiny model
  on 64 noise images, and the ``demo`` preset on the embedded data.
- Checkpoints: ``host_copy`` (the snapshot training waits for), ``save_checkpoint`` (what the
  background thread does) and ``load_latest`` (sha256 check + ``torch.load``) of a model's state
  with one momentum buffer per tensor, as LARS keeps, best of 3.

Run::

    python benchmarks/interruptions.py
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from simclrv2.checkpoint import host_copy, load_latest, save_checkpoint  # noqa: E402
from simclrv2.data.idx import write_idx  # noqa: E402
from simclrv2.models import build_encoder  # noqa: E402

TINY = ["model.arch=r18_0.125x_sk0", "pretrain.batch_size=16", "pretrain.epochs=50",
        "knn.k=5", "runtime.device=cpu"]  # fmt: skip


def sigterm(out: Path, args: list[str]) -> tuple[float, float]:
    """(seconds to the stop message, seconds to exit) after SIGTERM, once 2 checkpoints exist."""
    env = os.environ | {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "simclrv2", "pretrain", "--out", str(out), *args,
               "pretrain.checkpoint_every=1", "pretrain.knn_every=0"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    stopped: list[float] = []

    def watch() -> None:
        for line in process.stderr:
            if "resume with" in line:
                stopped.append(time.perf_counter())

    threading.Thread(target=watch, daemon=True).start()
    while len(list(out.glob("checkpoints/step-*"))) < 2:
        if process.poll() is not None:
            raise SystemExit(f"pretrain ended with status {process.returncode} before the signal")
        time.sleep(0.01)
    sent = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    exited = time.perf_counter()
    time.sleep(0.1)
    assert status == 0 and stopped, status
    return stopped[0] - sent, exited - sent


def checkpoint_cost(arch: str, directory: Path) -> tuple[float, float, float, float]:
    """(MiB, seconds to snapshot to host memory (what training waits for), seconds to write (on
    the background thread), seconds to verify and load) of one checkpoint, best of 3."""
    weights = build_encoder(arch).state_dict()
    state = {
        "modules": {"model": weights},
        "optimizer": {"state": {k: {"momentum_buffer": v.clone()} for k, v in weights.items()}},
        "position": {"epoch": 0, "batch": 0, "step": 0},
    }
    snapshots, writes, reads = [], [], []
    for step in range(3):
        started = time.perf_counter()
        copied = host_copy(state)
        snapshots.append(time.perf_counter() - started)
        started = time.perf_counter()
        newest = save_checkpoint(directory, step, copied)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        load_latest(directory)
        reads.append(time.perf_counter() - started)
    size = (newest / "state.pt").stat().st_size / 2**20
    return size, min(snapshots), min(writes), min(reads)


def main() -> None:
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "data"
        data.mkdir()
        noise = torch.Generator().manual_seed(0)
        for stem, count in (("train", 64), ("t10k", 32)):
            images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=noise)
            write_idx(data / f"{stem}-images-idx3-ubyte", images.numpy())
            labels = (torch.arange(count) % 4).to(torch.uint8)
            write_idx(data / f"{stem}-labels-idx1-ubyte", labels.numpy())
        for name, args in (("tiny r18_0.125x", ["--data", str(data), *TINY]), ("demo preset", [])):
            message, exit_ = sigterm(root / name.replace(" ", "-"), args)
            print(
                f"SIGTERM, {name:16s}: stop message after {message:.2f} s, exit after {exit_:.2f} s"
            )
        for arch in ("r18_0.5x_sk0", "r50_1x_sk0"):
            directory = root / arch
            size, snapshot, write, read = checkpoint_cost(arch, directory)
            shutil.rmtree(directory)
            print(
                f"checkpoint, {arch:13s}: {size:4.0f} MiB, snapshot {snapshot:.2f} s, "
                f"write {write:.2f} s (background), verify + load {read:.2f} s"
            )


if __name__ == "__main__":
    main()
