"""SIGTERM and SIGINT during training: the step finishes, a checkpoint is written, the command prints
how to resume and exits 0; the resumed run ends with the same bits as an uninterrupted one."""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from simclrv2 import training
from simclrv2.cli import main
from simclrv2.stages import pretrain as pretrain_stage
from tiny_runs import (
    STEPS_PER_EPOCH,
    assert_same_training,
    newest_step,
    pretrain_args,
    start_cli,
    write_tiny_idx,
)

SIGNALS = [signal.SIGTERM, signal.SIGINT]


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT with Python's own handler, as in a terminal: a job a shell starts in the background
    inherits SIGINT ignored, and Python then leaves it ignored (these tests failed so)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def send_to_main_thread(signum: int) -> None:
    """Deliver ``signum`` to the main thread, whose Python handler then runs before this returns.
    (``os.kill`` to the process lets the kernel pick any thread: the handler then runs a little
    later, possibly after the code the test means to interrupt, which a loaded machine showed.)"""
    signal.pthread_kill(threading.main_thread().ident, signum)
    time.sleep(0)  # a bytecode boundary in this thread, where the pending handler runs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_idx(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["pretrain", "--out", str(run), *pretrain_args(data)]) == 0
    return run


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_mid_step_checkpoints_that_step_and_exits_0(
    signum, data, reference, tmp_path, monkeypatch, capsys
):
    run, arrives_in = tmp_path / "run", STEPS_PER_EPOCH + 2  # mid-epoch 1
    real_set_lr, steps = training.set_learning_rate, []

    def set_lr_then_signal(optimizer, lr):  # called at the start of every step
        steps.append(lr)
        if len(steps) == arrives_in:
            send_to_main_thread(signum)  # the real signal, handled in this (main) thread
        real_set_lr(optimizer, lr)

    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    with monkeypatch.context() as patch:
        patch.setattr(training, "set_learning_rate", set_lr_then_signal)
        assert main(["pretrain", "--out", str(run), *pretrain_args(data)]) == 0
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers  # restored after training
    assert len(steps) == arrives_in and newest_step(run) == arrives_in  # that step, then stop
    assert not (run / "model").exists()
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (
        f"simclrv2: stopped at step {arrives_in}; checkpoint written in {run}; "
        f"resume with: simclrv2 pretrain --resume {run}"
    )
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert f"resumed at epoch 1, batch 2, step {arrives_in}" in (run / "log.txt").read_text()
    assert_same_training(reference, run)


@pytest.mark.slow
def test_sigterm_to_a_cli_process_checkpoints_exits_0_and_the_run_resumes(
    data, reference, tmp_path
):
    run = tmp_path / "run"
    process = start_cli("pretrain", "--out", str(run), *pretrain_args(data))
    while newest_step(run) < 2:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    hint = re.search(r"resume with: (simclrv2 pretrain --resume \S+)$", process.stderr.read())
    assert hint and hint.group(1) == f"simclrv2 pretrain --resume {run}"
    stopped = newest_step(run)
    assert stopped >= 2 and not (run / "model").exists()  # stopped early, not at the end

    process = start_cli(*hint.group(1).split()[1:])
    assert process.wait() == 0, process.stderr.read()
    assert f"step {stopped}" in (run / "log.txt").read_text().split("resumed at")[-1]
    assert_same_training(reference, run)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_during_the_epoch_end_monitor_stops_at_that_epochs_checkpoint(
    signum, data, reference, tmp_path, monkeypatch, capsys
):
    run, real_monitor = tmp_path / "run", pretrain_stage.evaluate_representation

    def signal_then_monitor(*args, **kwargs):
        send_to_main_thread(signum)
        return real_monitor(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_stage, "evaluate_representation", signal_then_monitor)
        assert main(["pretrain", "--out", str(run), *pretrain_args(data)]) == 0
    assert newest_step(run) == STEPS_PER_EPOCH  # no step of the next epoch was taken
    assert f"stopped at step {STEPS_PER_EPOCH};" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert_same_training(reference, run)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_after_training_stops_at_once_and_the_resume_finishes(
    signum, data, reference, tmp_path, monkeypatch, capsys
):
    """Outside the training loop (here: writing the export) there is no step to finish: the
    command stops at once, exits 0 with the resume hint, and nothing half-written stays."""
    run = tmp_path / "run"

    def signal_instead(*args, **kwargs):
        send_to_main_thread(signum)

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_exported", signal_instead)
        assert main(["pretrain", "--out", str(run), *pretrain_args(data)]) == 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"simclrv2: stopped; resume with: simclrv2 pretrain --resume {run}"
    assert not (run / "model").exists() and not (run / "results.json").exists()
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert_same_training(reference, run)
