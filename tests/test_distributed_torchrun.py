"""The unchanged ``simclrv2 pretrain`` command under torchrun: two "nodes" on 127.0.0.1 (two
launchers, ``--nnodes 2``, one process each, c10d rendezvous)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import simclrv2
from multiprocess import free_port

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
