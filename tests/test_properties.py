"""Property-based tests: whatever the config values, command lines, data files, checkpoints or
exports, a failure is a :class:`UserError` with a one-line message (argparse's usage error for a
malformed command line), never another exception, and nothing partial is left behind."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import json
import math
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from simclrv2 import cli, load_exported, save_exported
from simclrv2.checkpoint import MANIFEST, STATE, load_latest, save_checkpoint, verify
from simclrv2.config import Config, config_from_dict, load_config, preset
from simclrv2.data import load_dataset
from simclrv2.errors import UserError
from simclrv2.export import METADATA, WEIGHTS, ExportedModel
from simclrv2.models import LinearClassifier, ProjectionHead, build_encoder
from tiny_runs import write_tiny_idx

# The same examples on every run (no flaky CI); explore with more, random ones by editing
# max_examples and derandomize here, and keep what they find as @example.
EXAMPLES = settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def assert_one_line(error: UserError) -> None:
    message = str(error)
    assert message.strip() and "\n" not in message and "Traceback" not in message


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory for one example (hypothesis runs many examples per test call)."""
    with tempfile.TemporaryDirectory(prefix="simclrv2-property-") as directory:
        yield Path(directory)


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ----------------------------------------------------------------------------------------------
# Config values: overrides and YAML files

SECTIONS = [f.name for f in fields(Config)]
KEYS = [
    f"{s}.{f.name}" for s in SECTIONS if s != "preset" for f in fields(getattr(preset("demo"), s))
]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    TEXT,
    st.integers(-(10**3), 10**3).map(str),
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(["true", "no", "none", "null", "[]", "[0.01,0.1]", "[a,]", "1e400", "-inf"]),
)
OVERRIDE = st.one_of(
    st.builds("{}={}".format, st.sampled_from(KEYS), SCALARS),
    st.builds("{}={}".format, st.one_of(TEXT, st.sampled_from(SECTIONS)), SCALARS),
    TEXT,
)


def assert_resolved(config: Config) -> None:
    """An accepted config holds only finite numbers and survives its own YAML (what --resume reads)."""
    numbers = []

    def collect(value):
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, float):
            numbers.append(value)

    collect(config.to_dict())
    assert all(math.isfinite(n) for n in numbers)
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


@EXAMPLES
@given(st.lists(OVERRIDE, max_size=4))
@example(["pretrain.base_lr=nan"])
@example(["pretrain.temperature=inf"])
@example(["finetune.label_fractions=[1e-400]"])
@example(["preset=imagenet"])
def test_any_overrides_resolve_or_fail_in_one_line(overrides):
    try:
        config = load_config("demo", overrides=overrides)
    except UserError as error:
        assert_one_line(error)
    else:
        assert_resolved(config)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
YAML_FILE = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(SECTIONS), TEXT, st.integers()),
        st.one_of(
            YAML_VALUES,
            st.dictionaries(
                st.one_of(st.sampled_from([k.partition(".")[2] for k in KEYS]), TEXT), YAML_VALUES
            ),
        ),
        max_size=4,
    ).map(lambda mapping: yaml.safe_dump(mapping).encode()),
    YAML_VALUES.map(lambda value: yaml.safe_dump(value).encode()),
    st.binary(max_size=64),
)


@EXAMPLES
@given(YAML_FILE)
@example(b"\x80")
@example(b"pretrain: {base_lr: .nan}")
@example(b"pretrain: {base_lr: 1" + b"0" * 400 + b"}")
def test_any_config_file_resolves_or_fails_in_one_line(content):
    with scratch() as directory:
        path = directory / "config.yaml"
        path.write_bytes(content)
        try:
            config = load_config("demo", path)
        except UserError as error:
            assert_one_line(error)
        else:
            assert_resolved(config)


# ----------------------------------------------------------------------------------------------
# Command lines: every command, option and value, with the long-running work replaced by a stub

STUBBED = [
    ("simclrv2.stages.pretrain", "pretrain"),
    ("simclrv2.stages.finetune", "finetune"),
    ("simclrv2.stages.distill", "distill"),
    ("simclrv2.pipeline", "run_pipeline"),
    ("simclrv2.stages.evaluate", "linear_eval"),
    ("simclrv2.stages.evaluate", "knn_eval"),
    ("simclrv2.stages.embed", "embed"),
    ("simclrv2.visualize", "augmentation_grid"),
    ("simclrv2.curation", "neighbours"),
    ("simclrv2.curation", "duplicates"),
    ("simclrv2.curation", "suggest_labels"),
    ("simclrv2.convert.tf_simclr", "convert"),
    ("simclrv2.deploy", "export"),
    ("simclrv2.models.stats", "architecture_table"),
    ("simclrv2.report", "build_report"),
]
CONFIG_OPTIONS = ["--preset", "--config", "--data"]
RUN_OPTIONS = [*CONFIG_OPTIONS, "--out", "--resume"]
COMMAND_OPTIONS = {  # the options each command takes; any of them may be given to any command
    "pipeline": RUN_OPTIONS,
    "pretrain": [*RUN_OPTIONS, "--init"],
    "finetune": [*RUN_OPTIONS, "--init", "--labels"],
    "distill": [*RUN_OPTIONS, "--teacher", "--labels"],
    "linear": [*CONFIG_OPTIONS, "--init"],
    "knn": [*CONFIG_OPTIONS, "--init"],
    "embed": [*CONFIG_OPTIONS, "--init", "--out", "--split"],
    "show-augmentations": [*CONFIG_OPTIONS, "--out", "--views", "--images", "--size", "--seed", "--split"],
    "neighbours": [*CONFIG_OPTIONS, "--model", "--query", "--against", "--against-split", "--k", "--threshold", "--out", "--split"],
    "suggest-labels": [*CONFIG_OPTIONS, "--model", "--n", "--out", "--labelled", "--method", "--seed", "--split"],
    "config": CONFIG_OPTIONS,
    "models": ["--image-size"],
    "convert-tf": ["--out", "--head-input"],
    "export": ["--out", "--format", "--part"],
    "report": [],
    "train": [],  # no such command
}  # fmt: skip
ALL_OPTIONS = sorted({o for options in COMMAND_OPTIONS.values() for o in options})
FLAGS = ["--json", "--ema", "--overwrite", "--duplicates", "--help", "--bogus"]


class StubReached(Exception):  # noqa: N818 (a signal from the stubs, not a failure)
    """Every input was accepted and the command reached its long-running work."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Inputs the command lines may name: data, an exported model, a run, label files."""
    root = tmp_path_factory.mktemp("workspace")
    data = write_tiny_idx(root / "data")
    encoder = build_encoder("r18_0.0625x_sk0", in_channels=1, cifar_stem=True)
    save_exported(
        ExportedModel(encoder, None, LinearClassifier(encoder.out_dim, 4)), root / "model"
    )
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        load_config("demo", overrides=[f"data.source={data}"]).to_yaml()
    )
    (root / "labels.txt").write_text("0\n1\n2\n3\n")
    (root / "names.txt").write_text("a.png\n")
    return root


@pytest.fixture(scope="module")
def stubs(workspace):
    patch = pytest.MonkeyPatch()

    def reached(*args, **kwargs):
        raise StubReached

    for module, _ in STUBBED:  # first, so that names bound at import are the real functions
        importlib.import_module(module)
    for module, name in STUBBED:
        patch.setattr(f"{module}.{name}", reached)
    patch.chdir(workspace)  # where runs/<command>-... would go
    yield
    patch.undo()


def _command_line(workspace: Path):
    """A command, its options (now and then another command's) with values, the odd flag or
    stray token, and overrides."""
    paths = ["data", "model", "run", "labels.txt", "names.txt", "missing", "data/t10k-labels-idx1-ubyte"]  # fmt: skip
    token = OVERRIDE.filter(lambda text: "~" not in text and not Path(text).exists())  # no "/"
    value = st.one_of(
        st.sampled_from([str(workspace / p) for p in paths]),
        st.sampled_from(["demo", "cifar10-v1", "0.5", "1%", "150%", "2-per-class", "-1", "0", "3", "test", "onnx", "encoder"]),
        token,
    )  # fmt: skip

    def for_command(command: str):
        option = st.sampled_from(COMMAND_OPTIONS[command] or ALL_OPTIONS) | st.sampled_from(
            ALL_OPTIONS
        )
        pairs = st.lists(st.tuples(option, value), max_size=3)
        return st.tuples(
            st.just([command]),
            pairs.map(lambda items: [part for item in items for part in item]),
            st.lists(st.sampled_from(FLAGS) | token, max_size=1),
            st.lists(st.builds("{}={}".format, st.sampled_from(KEYS), SCALARS), max_size=2),
        ).map(lambda parts: [token for part in parts for token in part])  # fmt: skip

    return st.sampled_from(list(COMMAND_OPTIONS)).flatmap(for_command)


@settings(EXAMPLES, max_examples=80)
@given(data=st.data())
def test_any_command_line_runs_or_fails_in_one_line(stubs, workspace, data):
    argv = data.draw(_command_line(workspace))
    before = files_under(workspace)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except SystemExit as exit:  # argparse: a usage error (exit 2, usage and error) or --help
        code, usage = exit.code, True
    except StubReached:  # accepted: undo what the started command wrote, for the next example
        event(f"{argv[0]}: reached the work")
        for path in sorted(set(files_under(workspace)) - set(before), reverse=True):
            if (workspace / path).is_dir():
                (workspace / path).rmdir()
            else:
                (workspace / path).unlink()
        return
    else:
        usage = False
    event(f"{argv[0]}: {'argparse' if usage else 'simclrv2'} exit {code}")
    assert code in (0, 2) and "Traceback" not in err.getvalue()
    if code == 2:
        assert files_under(workspace) == before, f"{argv} left files behind"
    if code == 2 and not usage:
        assert err.getvalue().startswith("simclrv2: error: ")
        assert err.getvalue().strip().count("\n") == 0, err.getvalue()


# ----------------------------------------------------------------------------------------------
# Damaged data files: IDX, CIFAR batches, image folders

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
)


def mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, where, value in mutations:
        if kind == "flip" and data:
            data[where % len(data)] ^= value
        elif kind == "truncate":
            del data[where % (len(data) + 1) :]
        elif kind == "extend":
            data += bytes([value]) * where
    return bytes(data)


def assert_loads_or_fails_in_one_line(source: str, **options) -> None:
    for split in ("train", "test"):
        try:
            dataset = load_dataset(source, split, **options)
        except UserError as error:
            assert_one_line(error)
        else:
            assert dataset.images.dtype == torch.uint8 and len(dataset.labels) == len(dataset)


IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]


@EXAMPLES
@given(st.sampled_from(IDX_FILES), st.booleans(), st.lists(MUTATION, min_size=1, max_size=3))
def test_damaged_idx_files(name, gzipped, mutations):
    with scratch() as directory:
        write_tiny_idx(directory, train=8, test=4)
        path = directory / name
        data = path.read_bytes()
        if gzipped:
            data = gzip.compress(data, mtime=0)
            path.unlink()
            path = path.with_name(f"{name}.gz")
        path.write_bytes(mutate(data, mutations))
        assert_loads_or_fails_in_one_line(f"idx:{directory}")


def _cifar_batch(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"labels": [int(v) for v in rng.integers(0, 10, count)],
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [f"{seed}_{i}.png".encode() for i in range(count)],
    }


def write_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, seed in [*((f"data_batch_{i}", i) for i in range(1, 6)), ("test_batch", 9)]:
        (folder / name).write_bytes(pickle.dumps(_cifar_batch(2, seed), protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


PICKLED = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8), TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([b"data", b"labels", b"filenames", b"label_names", "data"]), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip


@EXAMPLES
@given(
    st.sampled_from(["data_batch_1", "test_batch", "batches.meta"]),
    st.one_of(
        st.lists(MUTATION, min_size=1, max_size=3),
        PICKLED.map(lambda value: pickle.dumps(value, protocol=2)),
        st.builds(lambda n: pickle.dumps({b"data": np.zeros((n, 7), np.uint8), b"labels": [1] * n}), st.integers(0, 3)),
    ),
    st.booleans(),
)  # fmt: skip
@example("data_batch_1", pickle.dumps({b"data": None, b"labels": [None, []]}), False)
@example("batches.meta", pickle.dumps({b"data": None, b"label_names": None}), False)
def test_damaged_cifar_batches(name, damage, archived):
    with scratch() as directory:
        folder = directory / "cifar-10-batches-py"
        write_cifar10(folder)
        path = folder / name
        path.write_bytes(damage if isinstance(damage, bytes) else mutate(path.read_bytes(), damage))
        if archived:
            with tarfile.open(directory / "cifar.tar.gz", "w:gz") as archive:
                archive.add(folder, arcname=folder.name)
            shutil.rmtree(folder)
            assert_loads_or_fails_in_one_line(f"cifar10:{directory / 'cifar.tar.gz'}")
        else:
            assert_loads_or_fails_in_one_line(f"cifar10:{folder}")


@pytest.mark.filterwarnings("ignore:.*skipped 1 images that cannot be decoded")
@EXAMPLES
@given(
    st.sampled_from(["png", "jpg", "bmp", "gif"]),
    st.lists(MUTATION, min_size=1, max_size=3),
    st.booleans(),
)
def test_damaged_images_in_a_folder(suffix, mutations, strict):
    with scratch() as directory:
        rng = np.random.default_rng(0)
        for index, label in enumerate(["cat", "cat", "dog", "dog"]):
            path = directory / "train" / label / f"{index}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
        victim = directory / "train" / "dog" / f"2.{suffix}"
        victim.write_bytes(mutate(victim.read_bytes(), mutations))
        try:
            dataset = load_dataset(f"folder:{directory}", "train", strict=strict, workers=1)
        except UserError as error:
            assert_one_line(error)
        else:
            assert len(dataset) in (3, 4) and dataset.image_size == 12  # the shorter side
            assert dataset.images.shape[1:] == (3, 16, 16)  # each 12 x 16 image whole
            assert dataset.extents.tolist() == [[12, 16]] * len(dataset)


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints and exports


def _rehash(checkpoint: Path) -> None:
    """Rewrite the manifest to match the state file: damage the checksum cannot catch."""
    data = (checkpoint / STATE).read_bytes()
    manifest = {"step": 1, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.filterwarnings("ignore:skipped damaged checkpoints")
@EXAMPLES
@given(
    st.lists(MUTATION, min_size=1, max_size=3),
    st.booleans(),
    st.one_of(st.none(), YAML_VALUES.map(json.dumps), TEXT),
)
def test_damaged_checkpoints(mutations, rehash, manifest):
    with scratch() as directory:
        state = {
            "modules": {"m": {"w": torch.arange(6.0), "n": torch.tensor(3)}},
            "position": {"step": 1},
        }
        newest = save_checkpoint(directory, 1, state)
        (newest / STATE).write_bytes(mutate((newest / STATE).read_bytes(), mutations))
        if rehash:
            _rehash(newest)
        if manifest is not None:
            (newest / MANIFEST).write_text(manifest)
        problem = verify(newest)
        assert problem is None or "\n" not in problem
        try:
            loaded = load_latest(directory)
        except UserError as error:
            assert_one_line(error)
        else:
            assert isinstance(loaded, dict)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    encoder = build_encoder("r18_0.0625x_sk0", in_channels=1, cifar_stem=True)
    head = ProjectionHead(encoder.out_dim, num_layers=2, out_dim=8)
    classifier = LinearClassifier(head.output_dim(1), 4)
    return save_exported(
        ExportedModel(encoder, head, classifier, 1), tmp_path_factory.mktemp("e") / "model"
    )


def _replace_at(value, path: list, new):
    """``value`` (nested dicts) with the entry at ``path`` replaced by ``new``."""
    if not path or not isinstance(value, dict) or not value:
        return new
    key = path[0] if path[0] in value else sorted(value)[hash(path[0]) % len(value)]
    return value | {key: _replace_at(value[key], path[1:], new)}


@EXAMPLES
@given(
    st.one_of(
        st.tuples(st.just(WEIGHTS), st.lists(MUTATION, min_size=1, max_size=3)),
        st.tuples(st.just(METADATA), st.lists(st.sampled_from(["encoder", "depth", "width", "sk_ratio", "in_channels", "projection_head", "num_layers", "hidden_dim", "classifier", "head_input", "num_classes", "format_version", "info"]), min_size=1, max_size=2), YAML_VALUES),
        st.tuples(st.just(METADATA), st.lists(MUTATION, min_size=1, max_size=2)),
    )
)  # fmt: skip
@example(damage=(METADATA, ["encoder", "in_channels"], 10**12))  # would allocate terabytes
@example(damage=(METADATA, ["classifier", "num_classes"], -3))
def test_damaged_exports(export, damage):
    with scratch() as directory:
        copy = shutil.copytree(export, directory / "model")
        name, *how = damage
        path = copy / name
        original = path.read_bytes()
        if name == METADATA and len(how) == 2:
            meta = _replace_at(json.loads(original), *how)
            path.write_text(json.dumps(meta))
        else:
            path.write_bytes(mutate(original, how[0]))
        try:
            loaded = load_exported(copy)
        except UserError as error:
            assert_one_line(error)
        else:
            assert name == METADATA or path.read_bytes() == original  # damaged weights never load
            assert loaded.encoder.out_dim > 0


def test_the_strategies_reach_valid_inputs_too(workspace):
    """The properties above are not vacuous: the unmutated inputs load."""
    with scratch() as directory:
        write_cifar10(directory / "cifar-10-batches-py")
        assert len(load_dataset(str(directory), "train")) == 10
    assert len(load_dataset(str(workspace / "data"), "train")) == 64
    assert load_config("demo", overrides=["pretrain.epochs=3"]).pretrain.epochs == 3
