import pytest
import torch

from simclrv2.data import ImageDataset, batches_per_epoch, epoch_batches
from simclrv2.errors import UserError


def numbered(n):
    """Labels are the image indices and each pixel of image i is i % 256: a batch shows its rows."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    return ImageDataset(images.contiguous(), torch.arange(n))


def run(data, batch_size, **kwargs):
    return [labels.tolist() for _, labels in epoch_batches(data, batch_size, **kwargs)]


def test_batches_are_uint8_images_with_their_labels():
    data = numbered(50)
    for images, labels in epoch_batches(data, 8, seed=0, epoch=0):
        assert images.shape == (8, 3, 4, 4)
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
