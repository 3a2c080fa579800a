import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simclrv2
import simclrv2.checkpoint as checkpoint_module
from multiprocess import run_distributed
from simclrv2 import distributed
from simclrv2.checkpoint import (
    BackgroundWriter,
    checkpoints,
    host_copy,
    load_latest,
    load_state,
    save_checkpoint,
    verify,
)
from simclrv2.errors import UserError


def _state(value: float) -> dict:
    return {
        "weights": torch.full((3, 3), value),
        "position": {"epoch": 1, "step": int(value)},
        "name": "x",
    }


def test_round_trip_and_pruning(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _state(step))
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    state = load_latest(tmp_path)
    assert torch.equal(state["weights"], torch.full((3, 3), 3.0))
    assert state["position"] == {"epoch": 1, "step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


def test_no_checkpoint_is_none(tmp_path):
    assert load_latest(tmp_path / "none") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    save_checkpoint(tmp_path, 1, _state(1))
    newest = save_checkpoint(tmp_path, 2, _state(2))
    state_file = newest / "state.pt"
    data = bytearray(state_file.read_bytes())
    if damage == "truncate":
        state_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        state_file.write_bytes(bytes(data))
    else:
        (newest / "manifest.json").write_text("{not json")
    assert verify(newest) is not None
    with pytest.warns(UserWarning, match="step-00000002"):
        state = load_latest(tmp_path)
    assert state["position"]["step"] == 1


def test_all_damaged_is_a_one_line_error(tmp_path):
    only = save_checkpoint(tmp_path, 5, _state(5))
    (only / "state.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no usable checkpoint") as info:
        load_latest(tmp_path)
    assert "\n" not in str(info.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _Exploit()}, path)
    with pytest.raises(UserError, match="refused"):
        load_state(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    assert not os.path.exists("PWNED_BY_CHECKPOINT")
    # and through the checkpoint directory, with a valid checksum around the malicious file
    directory = tmp_path / "ckpts"
    good = save_checkpoint(directory, 1, _state(1))
    (good / "state.pt").write_bytes(path.read_bytes())
    fields = json.loads((good / "manifest.json").read_text())
    fields.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
    (good / "manifest.json").write_text(json.dumps(fields))
    with pytest.raises(UserError, match="refused"):
        load_latest(directory)


def test_a_killed_writer_leaves_the_previous_checkpoint_usable(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1))
    script = (
        "import os, torch, simclrv2.checkpoint as c\n"
        "real = torch.save\n"
        "def dying(obj, f):\n"
        "    f.write(b'partial'); f.flush(); os._exit(9)\n"
        "torch.save = dying\n"
        f"c.save_checkpoint({str(tmp_path)!r}, 2, {{'w': torch.ones(1)}})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000001"]
    assert load_latest(tmp_path)["position"]["step"] == 1


def _calls(tree: ast.AST, module: str, name: str) -> list[ast.Call]:
    """Calls of ``module.name(...)`` in a parsed source file."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == module
    ]


def _keyword(call: ast.Call, name: str) -> object:
    return next((k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)), None)  # fmt: skip


def test_nothing_in_the_package_unpickles_arbitrary_objects():
    """Every torch.load passes weights_only=True, no np.load allows pickles, and pickle itself is
    only reached through the CIFAR reader's restricted unpickler."""
    sources = sorted(Path(simclrv2.__file__).parent.rglob("*.py"))
    loads, unpicklers = 0, []
    for path in sources:
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "torch", "load"):
            loads += 1
            assert _keyword(call, "weights_only") is True, f"{path}:{call.lineno}"
        for call in _calls(tree, "np", "load"):
            assert _keyword(call, "allow_pickle") in (None, False), f"{path}:{call.lineno}"
        for name in ("load", "loads", "Unpickler"):
            unpicklers += [f"{path.name}:{c.lineno}" for c in _calls(tree, "pickle", name)]
        unpicklers += [
            f"{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            for base in node.bases
            if isinstance(base, ast.Attribute) and base.attr == "Unpickler"
        ]
    assert loads >= 1  # the checkpoint loader is found, so the scan sees the package
    assert [u.split(":")[0] for u in unpicklers] == ["cifar.py"]  # RestrictedUnpickler


def test_the_checksum_is_taken_while_writing(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:  # a second read of state.pt would fail
        patch.setattr(checkpoint_module, "sha256", lambda path: pytest.fail("read back"))
        written = save_checkpoint(tmp_path, 1, _state(1))
    manifest = json.loads((written / "manifest.json").read_text())
    data = (written / "state.pt").read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == len(data)
    assert verify(written) is None
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    (written / "state.pt").write_bytes(bytes(tampered))
    assert "does not match its sha256" in verify(written)


def test_a_host_copy_is_unaffected_by_later_training():
    weights = torch.zeros(4)
    state = {"modules": {"w": weights}, "rng": [{"a": torch.ones(2)}], "step": (3, "x")}
    copied = host_copy(state)
    weights.add_(1)
    assert torch.equal(copied["modules"]["w"], torch.zeros(4))
    assert copied["step"] == (3, "x") and torch.equal(copied["rng"][0]["a"], torch.ones(2))


def test_a_background_write_finishes_before_the_block_is_left(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1))
    with pytest.raises(RuntimeError, match="crash") as info, BackgroundWriter() as writer:  # noqa: PT012
        writer.submit(save_checkpoint, tmp_path, 2, host_copy(_state(2)))
        raise RuntimeError("crash in the training step")
    assert not hasattr(info.value, "__notes__")  # the write went well
    assert load_latest(tmp_path)["position"]["step"] == 2  # complete, not half-written


def test_a_failed_background_write_is_raised_in_the_caller(tmp_path):
    (tmp_path / "file").write_text("")  # a file where the checkpoints' directory should be
    writer = BackgroundWriter()
    writer.submit(save_checkpoint, tmp_path / "file" / "x", 1, _state(1))
    with pytest.raises(UserError, match="cannot write checkpoint 1"):
        writer.wait()
    writer.wait()  # raised once
    writer.submit(save_checkpoint, tmp_path / "file" / "x", 2, _state(2))
    with pytest.raises(KeyboardInterrupt) as info, writer:
        raise KeyboardInterrupt
    assert (
        "the checkpoint being written failed: cannot write checkpoint 2" in info.value.__notes__[0]
    )


# A child that writes checkpoint 2 in the background, slowly, and SIGKILLs itself after ``delay``
# seconds: before, during or after the write.
KILLED_DURING_WRITE = """
import os, signal, sys, time, torch
import simclrv2.checkpoint as c
real_write = c._HashingFile.write
def slow(self, data):  # 16 kB every 10 ms
    view = memoryview(data).cast("B")
    for start in range(0, len(view), 1 << 14):
        time.sleep(0.01)
        real_write(self, view[start : start + (1 << 14)])
    return len(view)
c._HashingFile.write = slow
state = {"weights": torch.full((64, 1024), 2.0), "position": {"epoch": 1, "step": 2}, "name": "x"}
writer = c.BackgroundWriter()
writer.submit(c.save_checkpoint, sys.argv[1], 2, c.host_copy(state))
time.sleep(float(sys.argv[2]))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 3.0])
def test_a_process_killed_during_a_background_write_leaves_a_complete_checkpoint(tmp_path, delay):
    save_checkpoint(tmp_path, 1, _state(1))
    process = subprocess.run(
        [sys.executable, "-c", KILLED_DURING_WRITE, str(tmp_path), str(delay)], check=False
    )
    assert process.returncode == -9
    state = load_latest(tmp_path)  # the old checkpoint or the new one, each complete
    assert state["position"]["step"] in (1, 2)
    assert torch.equal(
        state["weights"], torch.full_like(state["weights"], state["position"]["step"])
    )
    if delay == 3.0:
        assert state["position"]["step"] == 2


def _load_everywhere(rank: int, world_size: int, directory: str) -> tuple[int, dict]:
    """Rank 0 writes; then every process loads the newest checkpoint, counting its checksum reads."""
    if rank == 0:
        save_checkpoint(directory, 1, _state(1))
        save_checkpoint(directory, 2, _state(2))
    distributed.barrier()
    reads = []
    real = checkpoint_module.verify
    checkpoint_module.verify = lambda path: reads.append(path) or real(path)
    state = load_latest(directory)
    return len(reads), state


@pytest.mark.slow
def test_rank_0_alone_verifies_and_every_process_loads_its_choice(tmp_path):
    results = run_distributed(_load_everywhere, 2, str(tmp_path))
    assert [reads for reads, _ in results] == [1, 0]
    for _, state in results:
        assert state["position"]["step"] == 2
