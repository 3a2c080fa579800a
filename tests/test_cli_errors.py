"""What a user sees when the machine or the run goes wrong: an unwritable or full disk (reported
before training), a diverging loss, damaged or hostile checkpoints, a run resumed with the wrong
model. Each is one line on stderr with exit status 2, and nothing half-written is left behind."""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from simclrv2 import checkpoint as checkpoint_module
from simclrv2 import rundir
from simclrv2.checkpoint import checkpoints, load_latest, verify
from simclrv2.cli import main
from simclrv2.config import RuntimeConfig
from simclrv2.data import ImageDataset
from simclrv2.errors import UserError
from simclrv2.optim import WarmupCosine
from simclrv2.runtime import resolve_runtime
from simclrv2.training import Stage, fit
from tiny_runs import newest_step, pretrain_args, write_tiny_idx

SHORT = {"pretrain.epochs": 1}  # 4 steps, a checkpoint after each


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_idx(tmp_path_factory.mktemp("data"))


def _error(capsys) -> str:
    """The command's last stderr line, checked to be the one-line error (a progress bar may come
    before it on its own line); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("simclrv2: error: "), err
    return line


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return _error(capsys)


# ----------------------------------------------------------------------------------------------
# The run directory: reported before any training step, and nothing left behind


@pytest.mark.parametrize("where", ["out is a file", "a file above out"])
def test_a_file_in_the_way_of_out(where, data, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    out = blocker if where == "out is a file" else blocker / "run"
    message = _fails(["pretrain", "--out", str(out), *pretrain_args(data)], capsys)
    assert str(out) in message
    assert blocker.read_text() == "mine" and sorted(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_parent_of_out(data, tmp_path, capsys):
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o500)
    message = _fails(["pretrain", "--out", str(parent / "run"), *pretrain_args(data)], capsys)
    assert "cannot write to" in message and "Permission denied" in message
    assert list(parent.iterdir()) == []


def _free_space(monkeypatch, mib: int) -> None:
    """Make every disk report ``mib`` MiB free (``statvfs``, as the checks read it)."""
    real = os.statvfs

    def statvfs(path):
        disk = real(path)
        return os.statvfs_result(
            (disk.f_bsize, 4096, disk.f_blocks, 256 * mib, 256 * mib, *tuple(disk)[5:])
        )

    monkeypatch.setattr(rundir.os, "statvfs", statvfs)


def test_a_full_disk_is_reported_before_training(data, tmp_path, capsys, monkeypatch):
    _free_space(monkeypatch, 10)
    out = tmp_path / "deep" / "run"
    message = _fails(["pretrain", "--out", str(out), *pretrain_args(data)], capsys)
    assert "only 10 MiB free" in message and str(out) in message
    assert list(tmp_path.iterdir()) == []  # "deep" made for the run is removed again


def test_a_disk_too_small_for_the_models_checkpoints(data, tmp_path, capsys, monkeypatch):
    _free_space(monkeypatch, 200)  # enough for the run's files, not for a ResNet-50's checkpoints
    out = tmp_path / "run"
    argv = ["pretrain", "--out", str(out), *pretrain_args(data, **{"model.arch": "r50_1x_sk0"})]
    message = _fails(argv, capsys)
    assert "only 200 MiB free" in message and "MiB needed" in message
    assert not out.exists()  # the run never trained: nothing of it is kept


def test_a_disk_that_fills_during_training(data, tmp_path, capsys, monkeypatch):
    """The third checkpoint meets a full disk (``/dev/full``): one line, the earlier checkpoints
    stay as they were, no staging is left, and the run resumes once there is space again."""
    run, real_open, states = tmp_path / "run", builtins.open, []

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        if Path(path).name == checkpoint_module.STATE and "w" in mode:
            states.append(path)
            if len(states) == 3:
                return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "open", open_on_a_filling_disk, raising=False)
        message = _fails(["pretrain", "--out", str(run), *pretrain_args(data, **SHORT)], capsys)
    assert "cannot write checkpoint 3" in message and "No space left on device" in message
    assert [p.name for p in checkpoints(run / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert all(verify(p) is None for p in checkpoints(run / "checkpoints"))
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert newest_step(run) == 4 and (run / "model" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------
# Divergence: the step, the likely cause, the last good checkpoint kept


def test_a_diverging_loss_names_the_step_and_cause_and_keeps_the_last_good_checkpoint(
    data, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["pretrain", "--out", str(run), *pretrain_args(data, **{"pretrain.base_lr": 1e9})]
    message = _fails(argv, capsys)
    kept = newest_step(run)
    assert f"at step {kept + 1} " in message  # the step whose loss was not finite
    assert "learning rate is likely too high for batch size 16" in message
    assert "lower pretrain.base_lr" in message and f"step-{kept:08d}" in message
    assert kept >= 1 and verify(checkpoints(run / "checkpoints")[-1]) is None
    state = load_latest(run / "checkpoints")
    weights = [t for m in state["modules"].values() for t in m.values() if t.is_floating_point()]
    assert all(torch.isfinite(t).all() for t in weights)
    assert not (run / "model").exists()


def test_weights_gone_non_finite_are_never_checkpointed(tmp_path):
    """A step whose loss is finite but whose update breaks a weight (here a buffer) stops the run
    before that checkpoint is written."""
    runtime = resolve_runtime(RuntimeConfig(device="cpu", channels_last=False))
    stage = Stage.open("pretrain", tmp_path, runtime, seed=0)
    model = nn.Linear(1, 1)
    model.register_buffer("statistic", torch.zeros(1))
    steps = []

    def step(batch, generator):
        images = batch.images
        steps.append(1)
        if len(steps) == 3:
            model.statistic.fill_(float("inf"))
        return {"loss": model(images.float().mean().reshape(1, 1)).sum()}

    data = ImageDataset(torch.zeros((8, 1, 8, 8), dtype=torch.uint8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"model\.statistic became non-finite at step 3") as info:
        fit(
            stage, step, {"model": model}, optimizer, WarmupCosine(0.1, 8), data, batch_size=2,
            epochs=2, seed=0, checkpoint_every=1,
        )  # fmt: skip
    assert "step-00000002, is kept" in str(info.value)
    assert newest_step(tmp_path) == 2
    stage.metrics.close()


def test_a_loss_seen_non_finite_steps_later_is_named_at_its_own_step(tmp_path):
    """Without checkpoints the loss is read back only at the metric rows (here the epoch's end,
    step 4): the error still names step 2, and the epoch's checkpoint is never written."""
    runtime = resolve_runtime(RuntimeConfig(device="cpu", channels_last=False))
    stage = Stage.open("pretrain", tmp_path, runtime, seed=0)
    model = nn.Linear(1, 1)
    steps = []

    def step(batch, generator):
        images = batch.images
        steps.append(1)
        loss = model(images.float().mean().reshape(1, 1)).sum()
        return {"loss": loss * float("inf") if len(steps) == 2 else loss}

    data = ImageDataset(torch.zeros((8, 1, 8, 8), dtype=torch.uint8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"the loss became (-)?(inf|nan) at step 2 ") as info:
        fit(
            stage, step, {"model": model}, optimizer, WarmupCosine(0.1, 8), data, batch_size=2,
            epochs=2, seed=0,
        )  # fmt: skip
    assert len(steps) == 4 and "no checkpoint yet" in str(info.value)
    assert newest_step(tmp_path) == -1
    stage.metrics.close()


# ----------------------------------------------------------------------------------------------
# Resuming: damaged, hostile or mismatched checkpoints and configs


@pytest.fixture
def finished(data, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *pretrain_args(data, **SHORT)]) == 0
    return run


def test_resume_with_every_checkpoint_damaged(finished, capsys):
    for kept in checkpoints(finished / "checkpoints"):
        state = kept / "state.pt"
        state.write_bytes(state.read_bytes()[:100])  # truncated
    message = _fails(["pretrain", "--resume", str(finished)], capsys)
    assert "no usable checkpoint" in message and "truncated" in message


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_RESUME",))


def test_resume_refuses_a_malicious_checkpoint_with_a_valid_checksum(finished, capsys, monkeypatch):
    monkeypatch.chdir(finished)
    newest = checkpoints(finished / "checkpoints")[-1]
    state = load_latest(finished / "checkpoints")
    state["payload"] = _Exploit()
    torch.save(state, newest / "state.pt")
    data = (newest / "state.pt").read_bytes()
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (newest / "manifest.json").write_text(json.dumps(manifest))
    message = _fails(["pretrain", "--resume", str(finished)], capsys)
    assert "refers to 'posix.system'" in message and "nothing in it was run" in message
    assert not (finished / "PWNED_BY_RESUME").exists()


def test_resume_with_a_checkpoint_of_another_model(finished, capsys):
    config = yaml.safe_load((finished / "config.yaml").read_text())
    config["model"]["arch"] = "r18_0.25x_sk0"  # the saved config edited by hand
    (finished / "config.yaml").write_text(yaml.safe_dump(config))
    message = _fails(["pretrain", "--resume", str(finished)], capsys)
    assert "does not fit this pretrain model" in message


@pytest.mark.parametrize("damage", [b"pretrain: [epochs", b"- a list\n", b"\xff\xfe"])
def test_resume_with_a_damaged_config(finished, damage, capsys):
    (finished / "config.yaml").write_bytes(damage)
    message = _fails(["pretrain", "--resume", str(finished)], capsys)
    assert "config.yaml is not a saved config" in message


def test_a_new_run_that_fails_on_its_input_leaves_nothing_and_out_can_be_reused(
    data, tmp_path, capsys
):
    out = tmp_path / "run"
    message = _fails(["pretrain", "--out", str(out), *pretrain_args(data, **{"pretrain.batch_size": 1000})], capsys)  # fmt: skip
    assert "fewer than one batch" in message and not out.exists()
    damaged = write_tiny_idx(tmp_path / "damaged")
    (damaged / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 7)
    message = _fails(["pretrain", "--out", str(out), "--data", str(damaged)], capsys)
    assert "truncated IDX header" in message and not out.exists()
    assert main(["pretrain", "--out", str(out), *pretrain_args(data, **SHORT)]) == 0


def test_checkpoint_write_errors_are_user_errors(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write checkpoint 1") as info:
        checkpoint_module.save_checkpoint(blocker / "checkpoints", 1, {"w": torch.ones(1)})
    assert os.strerror(errno.ENOTDIR) in str(info.value)

    def full(path, mode="r", *args, **kwargs):  # every file written lands on a full disk
        return builtins.open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", full, raising=False)
    with pytest.raises(UserError, match="No space left on device"):  # not torch's RuntimeError
        checkpoint_module.save_checkpoint(tmp_path, 2, {"w": torch.ones(1 << 20)})
    assert list(tmp_path.iterdir()) == [blocker]
