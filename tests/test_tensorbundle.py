import filecmp
import itertools
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from simclrv2.convert.leveldb import read_table, write_table
from simclrv2.convert.locate import find_prefix
from simclrv2.convert.object_graph import object_graph_names
from simclrv2.convert.tensorbundle import OBJECT_GRAPH_KEY, TensorBundle, shard_path, write_bundle
from simclrv2.errors import UserError
from simclrv2.tfio import protowire
from simclrv2.tfio.crc32c import crc32c, mask

CHECKPOINTS = {
    "tf1": "tf1/ckpt/model.ckpt-250228",
    "tf2": "tf2/ckpt/model",
    "savedmodel": "tf2_savedmodel/variables/variables",
}
FIXTURE_ELEMENTS = 746_102  # the fixture README's parameter count (weights + BN statistics)


def _copy(prefix: Path, tmp_path: Path) -> Path:
    """Copy a checkpoint's index and shard to tmp_path; return the new prefix."""
    for path in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / prefix.name


@pytest.mark.parametrize("layout", CHECKPOINTS)
def test_fixture_entries_pass_their_crc_and_tile_the_shard(simclr_tf, layout):
    bundle = TensorBundle(simclr_tf / CHECKPOINTS[layout])
    bundle.verify()
    entries = sorted(bundle.entries.values(), key=lambda e: e.offset)
    for before, after in itertools.pairwise(entries):
        assert before.offset + before.size == after.offset  # no gap, no overlap
    assert entries[-1].offset + entries[-1].size == shard_path(bundle.prefix, 0, 1).stat().st_size
    floats = [e for e in entries if e.dtype == "float32"]
    assert sum(e.numel for e in floats) == FIXTURE_ELEMENTS
    assert all(bundle.read(e.name).shape == e.shape for e in floats[:20])


def test_tf1_global_step_is_the_step_in_the_file_name(simclr_tf):
    bundle = TensorBundle(simclr_tf / CHECKPOINTS["tf1"])
    assert bundle.entries["global_step"].dtype == "int64"
    assert int(bundle.read("global_step")) == 250228


def test_writer_reproduces_a_tf1_checkpoint_byte_for_byte(simclr_tf, tmp_path):
    original = TensorBundle(simclr_tf / CHECKPOINTS["tf1"])
    write_bundle(tmp_path / "copy", {name: original.read(name) for name in original.entries})
    assert filecmp.cmp(tmp_path / "copy.index", original.index_path, shallow=False)
    copy_shard = shard_path(tmp_path / "copy", 0, 1)
    assert filecmp.cmp(copy_shard, shard_path(original.prefix, 0, 1), shallow=False)


def test_tf2_checkpoint_and_savedmodel_give_the_same_keras_names_and_values(simclr_tf):
    by_name = []
    for layout in ("tf2", "savedmodel"):
        bundle = TensorBundle(simclr_tf / CHECKPOINTS[layout])
        names = object_graph_names(bundle)
        assert set(names) == set(bundle.entries) - {OBJECT_GRAPH_KEY}
        by_name.append({full: bundle.read(key) for key, full in names.items()})
    checkpoint, savedmodel = by_name
    assert checkpoint.keys() == savedmodel.keys()
    assert "head_supervised/linear_layer/dense_3/kernel" in checkpoint
    for name, value in checkpoint.items():
        np.testing.assert_array_equal(savedmodel[name], value)


def test_tf1_checkpoint_has_no_object_graph(simclr_tf):
    assert object_graph_names(TensorBundle(simclr_tf / CHECKPOINTS["tf1"])) == {}


def test_flipped_byte_is_reported_by_tensor_name(simclr_tf, tmp_path):
    prefix = _copy(simclr_tf / CHECKPOINTS["tf1"], tmp_path)
    bundle = TensorBundle(prefix)
    victim = max(bundle.entries.values(), key=lambda e: e.size)
    shard = shard_path(prefix, 0, 1)
    data = bytearray(shard.read_bytes())
    data[victim.offset + victim.size // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    for check in (lambda: bundle.read(victim.name), bundle.verify):
        with pytest.raises(UserError, match="CRC-32C") as info:
            check()
        assert victim.name in str(info.value) and str(shard) in str(info.value)
        assert "\n" not in str(info.value)
    other = next(e for e in bundle.entries.values() if e.name != victim.name and e.size)
    bundle.read(other.name)  # the rest of the file still reads


def test_round_trip_of_every_dtype_and_shape(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a/float32": rng.standard_normal((3, 3, 4, 8)).astype(np.float32),
        "a/float64": rng.standard_normal(5),
        "b/float16": rng.standard_normal((2, 2)).astype(np.float16),
        "b/int64_scalar": np.array(250228, dtype=np.int64),
        "c/int32_empty": np.zeros((2, 0), dtype=np.int32),
        "c/uint8": rng.integers(0, 256, 17, dtype=np.uint8),
        "d/bool": rng.random(9) > 0.5,
        "d/string": b"\x00graph bytes\xff" * 300,
    }
    write_bundle(tmp_path / "ckpt", tensors)
    bundle = TensorBundle(tmp_path / "ckpt")
    assert list(bundle.entries) == sorted(tensors)
    for name, value in tensors.items():
        read = bundle.read(name)
        if isinstance(value, bytes):
            assert bundle.entries[name].dtype == "string" and read.shape == ()
            assert read.item() == value
        else:
            assert read.dtype == value.dtype and read.shape == value.shape
            np.testing.assert_array_equal(read, value)
    bundle.verify()


def test_table_with_many_blocks_round_trips(tmp_path):
    keys = sorted(
        {f"base_model/conv2d_{i}/kernel".encode() for i in range(300)} | {b"", b"a", b"ab"}
    )
    items = [(key, bytes(range(len(key) % 50))) for key in keys]
    write_table(tmp_path / "t.index", items, block_bytes=256)
    assert read_table(tmp_path / "t.index") == items


def _footer_handles(path: Path) -> tuple[int, int]:
    """(metaindex offset, index offset) from a table's footer."""
    footer = path.read_bytes()[-48:]
    metaindex_offset, pos = protowire.read_varint(footer, 0)
    _, pos = protowire.read_varint(footer, pos)
    index_offset, _ = protowire.read_varint(footer, pos)
    return metaindex_offset, index_offset


def test_compressed_blocks_are_refused(tmp_path):
    write_bundle(tmp_path / "ckpt", {"w": np.ones(3, np.float32)})
    index = tmp_path / "ckpt.index"
    data_block_end = _footer_handles(index)[0] - 5  # the data block comes first, then its trailer
    table = bytearray(index.read_bytes())
    table[data_block_end] = 1  # Snappy, with a valid checksum so that only the type is wrong
    trailer = struct.pack("<I", mask(crc32c(bytes(table[: data_block_end + 1]))))
    table[data_block_end + 1 : data_block_end + 5] = trailer
    index.write_bytes(bytes(table))
    with pytest.raises(UserError, match="compressed blocks"):
        TensorBundle(tmp_path / "ckpt")


def test_partitioned_tensors_are_refused_by_name(tmp_path):
    shape = protowire.field(2, protowire.field(2, protowire.field(1, 4)))
    slice_spec = protowire.field(7, b"")  # one TensorSliceProto: the entry is made of slices
    entry = protowire.field(1, 1) + shape + slice_spec
    header = protowire.field(1, 1)
    write_table(tmp_path / "ckpt.index", [(b"", header), (b"big/kernel", entry)])
    bundle = TensorBundle(tmp_path / "ckpt")
    assert bundle.entries["big/kernel"].shape == (4,)
    with pytest.raises(UserError, match="'big/kernel' is partitioned"):
        bundle.read("big/kernel")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda index: index.write_bytes(index.read_bytes()[:-10]),
            "truncated or not a checkpoint",
        ),
        (
            lambda index: index.write_bytes(index.read_bytes()[:100]),
            "truncated or not a checkpoint",
        ),
        (lambda index: index.unlink(), "does not exist"),
    ],
)
def test_damaged_index_is_a_one_line_error_naming_it(simclr_tf, tmp_path, damage, message):
    prefix = _copy(simclr_tf / CHECKPOINTS["tf1"], tmp_path)
    damage(prefix.with_name(prefix.name + ".index"))
    with pytest.raises(UserError, match=message) as info:
        TensorBundle(prefix)
    assert f"{prefix}.index" in str(info.value) and "\n" not in str(info.value)


def test_corrupt_index_block_fails_its_checksum(simclr_tf, tmp_path):
    prefix = _copy(simclr_tf / CHECKPOINTS["tf1"], tmp_path)
    index = prefix.with_name(prefix.name + ".index")
    table = bytearray(index.read_bytes())
    table[200] ^= 0x20
    index.write_bytes(bytes(table))
    with pytest.raises(UserError, match="corrupt"):
        TensorBundle(prefix)


def test_missing_and_truncated_shards_are_named(simclr_tf, tmp_path):
    prefix = _copy(simclr_tf / CHECKPOINTS["savedmodel"], tmp_path)
    shard = shard_path(prefix, 0, 1)
    shard.write_bytes(shard.read_bytes()[:1000])
    bundle = TensorBundle(prefix)
    last = max(bundle.entries.values(), key=lambda e: e.offset)
    with pytest.raises(UserError, match=f"{shard} is truncated: tensor '{last.name}'"):
        bundle.read(last.name)
    shard.unlink()
    with pytest.raises(UserError, match=f"{shard} is missing"):
        TensorBundle(prefix)


def test_find_prefix_accepts_every_way_of_naming_a_checkpoint(simclr_tf, tmp_path):
    tf1 = simclr_tf / CHECKPOINTS["tf1"]
    for source in (tf1, tf1.parent, Path(f"{tf1}.index"), shard_path(tf1, 0, 1)):
        assert find_prefix(source) == tf1
    assert find_prefix(simclr_tf / "tf2_savedmodel") == simclr_tf / CHECKPOINTS["savedmodel"]
    assert find_prefix(simclr_tf / "tf2" / "ckpt") == simclr_tf / CHECKPOINTS["tf2"]
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gs://bucket/run/model.ckpt-9"\n')
    with pytest.raises(UserError, match=r"names 'gs://bucket/run/model.ckpt-9'"):
        find_prefix(tmp_path)


@pytest.mark.parametrize("make", [lambda d: None, lambda d: (d / "notes.txt").write_text("hi")])
def test_folder_without_a_checkpoint_is_a_one_line_error(tmp_path, make):
    make(tmp_path)
    with pytest.raises(UserError, match="no checkpoint file") as info:
        find_prefix(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        find_prefix(tmp_path / "nowhere")
