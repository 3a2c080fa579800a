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
from simclrv2.checkpoint import checkpoints, load_latest, load_state, save_checkpoint, verify
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
