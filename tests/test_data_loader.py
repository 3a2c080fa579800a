import threading
from contextlib import closing

import numpy as np
import pytest
import torch

from simclrv2.data import ImageDataset, batches_per_epoch, epoch_batches, epoch_order, loader
from simclrv2.errors import UserError


def numbered(n):
    """Labels are the image indices and each pixel of image i is i % 256: a batch shows its rows."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    return ImageDataset(images.contiguous(), torch.arange(n))


def run(data, batch_size, **kwargs):
    return [labels.tolist() for _, labels, _ in epoch_batches(data, batch_size, **kwargs)]


def test_batches_are_uint8_images_with_their_labels():
    data = numbered(50)
    for images, labels, extents in epoch_batches(data, 8, seed=0, epoch=0):
        assert images.shape == (8, 3, 4, 4)
        assert extents.tolist() == [[4, 4]] * 8  # arrays: every image fills its square
        assert images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        assert torch.equal(images[:, 0, 0, 0].long(), labels % 256)
        assert images.is_contiguous()


def test_one_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    data = numbered(50)
    epoch = run(data, 10, seed=1, epoch=2)
    assert sorted(i for batch in epoch for i in batch) == list(range(50))
    assert run(data, 10, seed=1, epoch=2) == epoch
    assert run(data, 10, seed=1, epoch=3) != epoch
    assert run(data, 10, seed=2, epoch=2) != epoch
    assert run(data, 10, seed=1, epoch=2, shuffle=False) == [
        list(range(i, i + 10)) for i in range(0, 50, 10)
    ]


@pytest.mark.parametrize(("drop_last", "expected"), [(True, [7, 7, 7]), (False, [7, 7, 7, 2])])
def test_drop_last(drop_last, expected):
    sizes = [len(b) for b in run(numbered(23), 7, seed=0, epoch=0, drop_last=drop_last)]
    assert sizes == expected
    assert batches_per_epoch(23, 7, drop_last) == len(expected)


def test_resume_mid_epoch_gives_the_remaining_batches():
    data = numbered(64)
    full = run(data, 8, seed=5, epoch=1)
    assert run(data, 8, seed=5, epoch=1, start_batch=3) == full[3:]
    assert run(data, 8, seed=5, epoch=1, start_batch=8) == []


@pytest.mark.parametrize(
    ("n", "world_size", "drop_last"), [(48, 2, True), (50, 4, True), (45, 3, False), (13, 4, False)]
)
def test_ranks_get_disjoint_slices_that_rebuild_the_global_batch(n, world_size, drop_last):
    data = numbered(n)
    single = run(data, 12, seed=0, epoch=4, drop_last=drop_last)
    shards = [
        run(data, 12, seed=0, epoch=4, drop_last=drop_last, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert all(len(s) == len(single) for s in shards)
    for step, batch in enumerate(single):
        parts = [shard[step] for shard in shards]
        assert len({len(p) for p in parts}) == 1  # equal sizes on every rank
        joined = [i for part in parts for i in part]
        if drop_last:
            assert joined == batch
        else:  # the short last batch is padded from the start of the order
            assert joined[: len(batch)] == batch
            assert len(joined) % world_size == 0
    if not drop_last:
        assert {i for shard in shards for batch in shard for i in batch} == set(range(n))


def test_batch_size_errors_come_before_the_first_batch():
    with pytest.raises(UserError, match="fewer than one batch of 64"):
        epoch_batches(numbered(50), 64, seed=0, epoch=0)
    with pytest.raises(UserError, match="multiple of the 3 processes"):
        batches_per_epoch(50, 8, world_size=3)
    assert batches_per_epoch(50, 64, drop_last=False) == 1


def reference(
    data,
    batch_size,
    *,
    seed,
    epoch,
    start_batch=0,
    shuffle=True,
    drop_last=True,
    rank=0,
    world_size=1,
):
    """The batches written out plainly: the epoch's order, padded by wrapping, cut into global
    batches, this rank's contiguous share of each, gathered by advanced indexing."""
    n = len(data)
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle).tolist()
    steps = n // batch_size if drop_last else -(-n // batch_size)
    if not drop_last:
        order += order[: -(-n // world_size) * world_size - n]
    out = []
    for step in range(start_batch, steps):
        batch = order[step * batch_size : (step + 1) * batch_size]
        share = len(batch) // world_size
        index = torch.tensor(batch[rank * share : (rank + 1) * share])
        extents = data.image_extents()[index]
        out.append((data.images[index].contiguous(), data.labels[index], extents))
    return out


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for (images, labels, extents), (ref_images, ref_labels, ref_extents) in zip(got, expected):
        assert images.is_contiguous()
        assert torch.equal(images, ref_images)
        assert torch.equal(labels, ref_labels)
        assert torch.equal(extents, ref_extents)


def transposed_memory_map(path, n, side=6):
    """STL-10's layout: images stored column-major in a file, read as a transposed memory map."""
    values = np.random.default_rng(0).integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    values.transpose(0, 1, 3, 2).tofile(path)
    stored = np.memmap(path, dtype=np.uint8, mode="c", shape=(n, 3, side, side))
    images = torch.from_numpy(stored).transpose(2, 3)  # (N, C, H, W), not contiguous
    assert not images.is_contiguous()
    assert torch.equal(images, torch.from_numpy(values))
    return ImageDataset(images, torch.arange(n) % 7)


CASES = [  # (n, batch_size, keyword arguments)
    (50, 8, {}),
    (50, 8, {"start_batch": 3}),
    (50, 8, {"start_batch": 6}),
    (23, 7, {"drop_last": False}),
    (23, 7, {"drop_last": False, "start_batch": 3}),
    (48, 12, {"rank": 1, "world_size": 2}),
    (45, 12, {"rank": 2, "world_size": 3, "drop_last": False}),
    (13, 12, {"rank": 3, "world_size": 4, "drop_last": False}),
    (30, 10, {"shuffle": False, "drop_last": False, "rank": 0, "world_size": 2}),
]


@pytest.mark.parametrize(("n", "batch_size", "kwargs"), CASES)
@pytest.mark.parametrize("source", ["memory", "transposed memory map", "whole images"])
def test_prefetched_batches_equal_a_plain_gather(tmp_path, n, batch_size, kwargs, source):
    data = numbered(n) if source == "memory" else transposed_memory_map(tmp_path / "x.bin", n)
    if source == "whole images":  # each image's own extent on its square travels with it
        extents = torch.randint(1, 5, (n, 2), generator=torch.Generator().manual_seed(n))
        data = ImageDataset(data.images, data.labels, extents=extents)
    kwargs = {"seed": 3, "epoch": 2} | kwargs
    # held all at once: a batch the consumer keeps is never overwritten by a later one
    for prefetch in (True, False):
        got = list(epoch_batches(data, batch_size, **kwargs, prefetch=prefetch))
        assert_same_batches(got, reference(data, batch_size, **kwargs))


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "simclrv2-prefetch"]


def test_the_cpu_gathers_inline_by_default():
    with closing(epoch_batches(numbered(64), 8, seed=0, epoch=0)) as batches:
        next(batches)
        assert not prefetch_threads()


def test_the_next_batch_is_gathered_while_the_consumer_holds_one(monkeypatch):
    second = threading.Event()
    calls = []

    def gather(dataset, index):
        calls.append(len(index))
        if len(calls) == 2:
            second.set()
        return real_gather(dataset, index)

    real_gather = loader._gather
    monkeypatch.setattr(loader, "_gather", gather)
    with closing(epoch_batches(numbered(64), 8, seed=0, epoch=0, prefetch=True)) as batches:
        next(batches)
        assert second.wait(10)  # batch 2 is gathered before it is asked for
    assert not prefetch_threads()


@pytest.mark.parametrize("how", ["break", "close", "exception", "KeyboardInterrupt"])
def test_leaving_early_stops_the_thread(how):
    batches = epoch_batches(numbered(400), 8, seed=0, epoch=0, prefetch=True)
    if how in ("break", "close"):
        for step, _ in enumerate(batches):
            if step == 2:
                break
        assert prefetch_threads()  # still alive: the generator may still be resumed
        if how == "break":
            del batches  # the last reference: the generator is closed
        else:
            batches.close()
    else:
        error = ValueError if how == "exception" else KeyboardInterrupt

        def consume() -> None:
            with closing(batches):  # as training.fit and evaluation.extract hold them
                for step, _ in enumerate(batches):
                    if step == 2:
                        raise error

        with pytest.raises(error):
            consume()
    assert not prefetch_threads()


def test_an_error_in_the_gather_is_raised_in_the_consumer(monkeypatch):
    calls = []

    def gather(dataset, index):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("the memory map went away")
        return real_gather(dataset, index)

    real_gather = loader._gather
    monkeypatch.setattr(loader, "_gather", gather)
    got = []
    with pytest.raises(OSError, match="went away"):
        got.extend(epoch_batches(numbered(64), 8, seed=0, epoch=0, prefetch=True))
    assert len(got) == 2
    assert not prefetch_threads()
