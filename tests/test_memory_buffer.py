"""SimCLRv2's memory: queue order and overwrite, the EMA update, the loss with the queue's negatives."""

from collections import deque

import pytest
import torch
from torch import nn

from simclrv2.losses import nt_xent
from simclrv2.memory import EmbeddingQueue, MovingAverage
from test_losses import nt_xent_loop


def _numbered(start: int, count: int) -> torch.Tensor:
    """Embeddings whose first coordinate is their number in the stream of pushes."""
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return torch.stack([ids, -ids], dim=1)  # (count, 2)


@pytest.mark.parametrize("pushes", [[3, 4, 2], [5, 5, 5], [12], [1, 7, 1, 9, 4]])
def test_queue_keeps_the_last_size_embeddings_in_ring_order(pushes):
    size = 5
    queue, reference = EmbeddingQueue(size, 2), deque(maxlen=size)
    total = 0
    for count in pushes:
        queue.push(_numbered(total, count))
        reference.extend(range(total, total + count))
        total += count
        held = queue.negatives()[:, 0].long().tolist()
        assert sorted(held) == sorted(reference)  # the newest `size`, the oldest overwritten
        assert all(
            held[row] % size == row for row in range(len(held))
        )  # embedding t in row t mod size
        assert int(queue.pushed) == total


def test_empty_queue_has_no_negatives_and_state_resumes():
    queue = EmbeddingQueue(4, 2)
    assert queue.negatives().shape == (0, 2)
    queue.push(_numbered(0, 6))
    resumed = EmbeddingQueue(4, 2)
    resumed.load_state_dict(queue.state_dict())
    for q in (queue, resumed):
        q.push(_numbered(6, 1))
    assert torch.equal(resumed.negatives(), queue.negatives())


def test_moving_average_update_formula_and_copied_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = MovingAverage(model, decay=0.9)
    assert all(not p.requires_grad for p in ema.parameters())
    start = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(8, 3))  # moves the BatchNorm statistics
    ema.update(model)
    for average, before, current in zip(ema.parameters(), start, model.parameters()):
        torch.testing.assert_close(average, 0.9 * before + 0.1 * current)
    for average, current in zip(ema.buffers(), model.buffers()):
        assert torch.equal(average, current)
    out = ema(torch.randn(8, 3))
    assert not out.requires_grad


def test_loss_with_the_queue_equals_the_loss_with_its_negatives_appended_by_hand():
    gen = torch.Generator().manual_seed(0)
    queue = EmbeddingQueue(7, 6)
    pushed = [torch.randn(4, 6, generator=gen, dtype=torch.float64) for _ in range(3)]  # 12 > 7
    for batch in pushed:
        queue.push(batch)
    z1, z2 = (torch.randn(5, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    held = list(torch.cat(pushed)[-7:])  # the last 7 embeddings pushed, in any order
    loss = nt_xent(z1.float(), z2.float(), 0.3, queue.negatives())
    expected = nt_xent_loop(z1, z2, 0.3, held)
    assert abs(loss.item() - expected.item()) < 1e-5
