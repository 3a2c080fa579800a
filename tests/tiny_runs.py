"""Tiny training runs for the reliability tests: a 4-class IDX data set the test writes, CPU
overrides that pretrain in a few seconds, the CLI as a subprocess, and bitwise comparisons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from simclrv2.checkpoint import load_latest
from simclrv2.data.idx import write_idx

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS_PER_EPOCH = 4  # 64 training images, batch 16
EPOCHS = 3


def write_tiny_idx(directory: Path, train: int = 64, test: int = 32) -> Path:
    """An MNIST-style folder: 28 px noise images of 4 classes, ``train`` + ``test`` of them."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_idx(directory / f"{stem}-images-idx3-ubyte", images)
        write_idx(directory / f"{stem}-labels-idx1-ubyte", (np.arange(count) % 4).astype(np.uint8))
    return directory


def pretrain_args(data: Path, **overrides: object) -> list[str]:
    """``--data`` and the overrides of a 12-step CPU pretraining (a checkpoint after every step,
    the kNN monitor and online classifier at every epoch end), then ``overrides``."""
    settings = {
        "model.arch": "r18_0.125x_sk0",
        "pretrain.batch_size": 16,
        "pretrain.epochs": EPOCHS,
        "pretrain.checkpoint_every": 1,
        "pretrain.knn_every": 1,
        "knn.k": 5,
        "runtime.device": "cpu",
    } | overrides
    return ["--data", str(data), *(f"{key}={value}" for key, value in settings.items())]


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's sources, one CPU thread (a fixed
    thread count keeps the CPU kernels' reductions, and so the weights, bitwise reproducible)."""
    path = os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))
    return os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_cli(*args: str, code: str | None = None) -> subprocess.Popen:
    """``python -m simclrv2 ARGS`` (or ``python -c CODE ARGS``) in the background, stderr piped."""
    command = ["-c", code] if code is not None else ["-m", "simclrv2"]
    return subprocess.Popen(
        [sys.executable, *command, *args], env=cli_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def newest_step(run: Path) -> int:
    """The step of the newest checkpoint directory of a run, -1 if there is none."""
    found = sorted((run / "checkpoints").glob("step-*"))
    return int(found[-1].name.removeprefix("step-")) if found else -1


def assert_identical(a: object, b: object, where: str = "state") -> None:
    """``a`` and ``b`` hold the same values bit for bit: tensors (dtype and bits), nested dicts,
    lists and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training(reference: Path, run: Path) -> None:
    """Two stage directories end with the same exported weights and the same last checkpoint
    (modules, optimiser, random generators, position), bit for bit."""
    assert_identical(
        load_file(reference / "model" / "model.safetensors"),
        load_file(run / "model" / "model.safetensors"),
        "export",
    )
    assert_identical(
        load_latest(reference / "checkpoints"), load_latest(run / "checkpoints"), "checkpoint"
    )


def stop_at_check(check: int, base: type) -> type:
    """A training stop signal (subclass of ``base``) that asks to stop at its ``check``-th query:
    an interruption at a chosen step without sending a real signal."""

    class StopAtCheck(base):
        calls = 0

        @property
        def requested(self) -> bool:
            StopAtCheck.calls += 1
            return StopAtCheck.calls == check

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    return StopAtCheck


def assert_stage_contract(folder: Path) -> dict:
    """What every finished training stage leaves in its folder: ``results.json`` (accuracies in
    percent and the seconds it took), an exported ``model/`` that loads, ``metrics.csv`` with a
    finite loss curve over increasing steps, TensorBoard events and its checkpoints. Returns the
    results."""
    import json

    from simclrv2 import load_exported
    from simclrv2.metrics import read_metrics

    results = json.loads((folder / "results.json").read_text())
    assert results["seconds"] > 0
    top1, top5 = (results.get(k, results.get(f"knn_{k}")) for k in ("top1", "top5"))
    assert 0 <= top1 <= top5 <= 100
    load_exported(folder / "model")
    losses = [
        (r["step"], r["value"]) for r in read_metrics(folder / "metrics.csv") if r["name"] == "loss"
    ]
    steps = [step for step, _ in losses]
    assert losses and steps == sorted(steps) and np.isfinite([v for _, v in losses]).all()
    assert any(folder.glob("events.out.tfevents.*"))
    assert newest_step(folder) == steps[-1]  # the last checkpoint is the end of training
    return results
