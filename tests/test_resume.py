"""Exact resume: a run that dies at any moment and is resumed ends with the same bits as a run that
was never interrupted (same seed, same CPU thread count; see README "Interruptions and resume").

The fast test kills the run in-process (an exception instead of the k-th checkpoint write); the slow
ones SIGKILL real CLI processes at seeded random moments, mid-epoch and mid-checkpoint-write
included, and resume a whole pipeline.
"""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from simclrv2 import training
from simclrv2.cli import main
from tiny_runs import (
    STEPS_PER_EPOCH,
    assert_identical,
    assert_same_training,
    newest_step,
    pretrain_args,
    start_cli,
    write_tiny_idx,
)


class Died(Exception):  # noqa: N818 (an event, not an error)
    """Stands for the process dying: nothing after it runs, nothing is cleaned up."""


def _results(run) -> dict:
    values = json.loads((run / "results.json").read_text())
    values.pop("seconds")  # wall time of the invocation, the one value allowed to differ
    return values


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_idx(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run (in this process, with the test session's thread count)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["pretrain", "--out", str(run), *pretrain_args(data, **{"pretrain.checkpoint_every": 3})]) == 0  # fmt: skip
    return run


def test_a_run_that_dies_mid_epoch_resumes_to_the_same_bits(data, reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = training.save_checkpoint
    written = []

    def save_or_die(directory, step, state, *args, **kwargs):
        if step == STEPS_PER_EPOCH:  # the epoch-end checkpoint: the newest one on disk is step 3
            raise Died
        written.append(step)
        return real_save(directory, step, state, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_checkpoint", save_or_die)
        with pytest.raises(Died):
            main(["pretrain", "--out", str(run), *pretrain_args(data, **{"pretrain.checkpoint_every": 3})])  # fmt: skip
    assert written == [3]
    assert newest_step(run) == 3  # position: epoch 0, batch 3 of 4
    torch.manual_seed(1234)  # a different global generator than the dead process had
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert "resumed at epoch 0, batch 3, step 3" in (run / "log.txt").read_text()
    assert_same_training(reference, run)
    assert _results(run) == _results(reference)


# A child that SIGKILLs itself at its n-th fsync: in a resumed pretraining run every fsync is part
# of a checkpoint write (state.pt, manifest.json, the directory after the rename), so this kills
# the writer mid-write at a chosen point. The run's files are written only by a new run.
DIE_AT_FSYNC = """
import os, signal, sys
from simclrv2.cli import main
die_at, calls, real_fsync = int(sys.argv[1]), [], os.fsync
def fsync(fd):
    calls.append(fd)
    if len(calls) == die_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
sys.exit(main(sys.argv[2:]))
"""


def _kill_after_step(process, run, step: int, delay: float) -> None:
    """SIGKILL ``process`` ``delay`` seconds after checkpoint ``step`` appeared: inside a later step
    or checkpoint write."""
    while newest_step(run) < step:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_moments_then_resume_gives_the_same_bits(data, tmp_path, seed):
    """Five kills, each a few steps on (at most ~4 with these delays): 24 steps leave room."""
    rng, epochs = random.Random(seed), 6
    args = pretrain_args(data, **{"pretrain.epochs": epochs})
    total = epochs * STEPS_PER_EPOCH
    reference = tmp_path / "reference"
    process = start_cli("pretrain", "--out", str(reference), *args)
    assert process.wait() == 0, process.stderr.read()

    run = tmp_path / "run"
    process = start_cli("pretrain", "--out", str(run), *args)
    _kill_after_step(process, run, rng.randrange(1, STEPS_PER_EPOCH - 1), rng.uniform(0, 0.03))
    kills = ["from outside, mid-epoch"]
    while len(kills) < 5:
        done = newest_step(run)
        assert done < total - 3, "the schedule below needs steps left"
        if len(kills) % 2:  # inside the checkpoint writer: 3 fsyncs per checkpoint
            fsync = rng.randrange(1, 3 * 3 + 1)
            process = start_cli(str(fsync), "pretrain", "--resume", str(run), code=DIE_AT_FSYNC)
            kills.append(
                f"in checkpoint {done + 1 + (fsync - 1) // 3}, fsync {(fsync - 1) % 3 + 1}"
            )
        else:
            process = start_cli("pretrain", "--resume", str(run))
            target = rng.randrange(done + 1, done + 3)
            _kill_after_step(process, run, target, rng.uniform(0, 0.03))
            kills.append(f"from outside after step {target}")
        assert process.wait() == -signal.SIGKILL, (kills, process.stderr.read())
    process = start_cli("pretrain", "--resume", str(run))
    assert process.wait() == 0, process.stderr.read()

    assert not list((run / "checkpoints").glob(".tmp-*")), "a killed writer's staging is left"
    assert_same_training(reference, run)
    assert _results(run) == _results(reference)


PIPELINE = {
    "finetune.label_fractions": "[0.5]",
    "finetune.batch_size": 16,
    "finetune.epochs": 3,
    "distill.batch_size": 16,
    "distill.epochs": 1,
    "linear.method": "lbfgs",
}


@pytest.mark.slow
def test_a_killed_pipeline_resumes_reusing_finished_stages(data, tmp_path):
    args = [
        *pretrain_args(data, **{"pretrain.epochs": 1}),
        *(f"{k}={v}" for k, v in PIPELINE.items()),
    ]
    reference = tmp_path / "reference"
    process = start_cli("pipeline", "--out", str(reference), *args)
    assert process.wait() == 0, process.stderr.read()

    run = tmp_path / "run"
    process = start_cli("pipeline", "--out", str(run), *args)
    _kill_after_step(process, run / "finetune-50%", 2, 0.05)  # fine-tuning: 6 steps
    assert process.wait() == -signal.SIGKILL
    pretrained = (run / "pretrain" / "model" / "model.safetensors").stat()
    process = start_cli("pipeline", "--resume", str(run))
    assert process.wait() == 0, process.stderr.read()

    again = (run / "pretrain" / "model" / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (pretrained.st_ino, pretrained.st_mtime_ns)
    assert "finetune: resumed at" in (run / "log.txt").read_text()
    for stage in ("pretrain", "finetune-50%", "supervised-50%", "distill-50%"):
        assert_identical(
            load_file(reference / stage / "model" / "model.safetensors"),
            load_file(run / stage / "model" / "model.safetensors"),
            stage,
        )
    rows = [json.loads((r / "results.json").read_text()) for r in (reference, run)]
    for row in rows:
        for entry in row:
            entry.pop("minutes")
    assert rows[0] == rows[1]
