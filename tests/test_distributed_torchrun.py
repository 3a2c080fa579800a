"""The unchanged ``simclrv2 pretrain`` command under torchrun: two "nodes" on 127.0.0.1 (two
launchers, ``--nnodes 2``, one process each, c10d rendezvous), and a run killed whole, then
started again with the same command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import simclrv2
from multiprocess import free_port
from tiny_runs import (
    EPOCHS,
    STEPS_PER_EPOCH,
    assert_same_training,
    cli_env,
    newest_step,
    pretrain_args,
    write_tiny_idx,
)

SRC = Path(simclrv2.__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_torchrun_nodes_run_the_pretrain_command_and_rank_0_writes_one_checkpoint(
    tmp_path, tiny_data
):
    launcher = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "test",
    ]  # fmt: skip
    command = [
        "-m", "simclrv2", "pretrain", "--data", str(tiny_data), "model.arch=r18_0.125x_sk0",
        "pretrain.batch_size=32", "pretrain.epochs=1", "pretrain.knn_every=0", "runtime.device=cpu",
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            launcher + command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    (run,) = (tmp_path / "runs").iterdir()  # one run directory, named by rank 0 for both
    model_lines = [out.count(f"model: {run.relative_to(tmp_path) / 'model'}") for out, _ in outputs]
    assert sorted(model_lines) == [0, 1]  # the outcome is printed once, by rank 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000005"]  # 160 images / 32
    assert (run / "model" / "model.safetensors").is_file()
    assert '"world_size": 2' in (run / "environment.json").read_text()
    log = (run / "log.txt").read_text()
    assert log.count("pretrain: knn_top1") == 1  # rank 0 alone logs


def _torchrun(out: Path, data: Path) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 -m simclrv2 pretrain --out OUT ...``: the tiny
    run of 12 steps, a checkpoint after each."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "simclrv2", "pretrain", "--out", str(out), *pretrain_args(data),
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )  # fmt: skip


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (torchrun's workers, each in a session of its own)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(child) for task in tasks for child in (task / "children").read_text().split()]


@pytest.mark.slow
def test_a_sigkilled_torchrun_run_restarted_with_the_same_command_ends_as_an_uninterrupted_one(
    tmp_path,
):
    data = write_tiny_idx(tmp_path / "data")
    reference = _torchrun(tmp_path / "reference", data)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]
    run = tmp_path / "run"
    launcher = _torchrun(run, data)
    while newest_step(run) < STEPS_PER_EPOCH + 1:  # inside the second epoch
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        time.sleep(0.01)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    for pid in [launcher.pid, *workers]:  # the launcher and both workers, at once
        os.kill(pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 60
    while any(map(_running, workers)):
        assert time.monotonic() < deadline, "a killed worker is still running"
        time.sleep(0.01)
    killed_at = newest_step(run)
    assert killed_at < EPOCHS * STEPS_PER_EPOCH
    again = _torchrun(run, data)  # the same command line
    assert again.wait(timeout=600) == 0, again.stderr.read()[-3000:]
    log = (run / "log.txt").read_text()
    assert f"step {killed_at}" in log.split("resumed at", 1)[1].splitlines()[0]
    assert_same_training(tmp_path / "reference", run)
