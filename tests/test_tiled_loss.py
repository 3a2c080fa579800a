"""The tiled NT-Xent against the dense one: loss and gradients, one and two processes."""

import pytest
import torch

from multiprocess import run_distributed
from simclrv2 import losses
from simclrv2.losses import nt_xent
from simclrv2.losses_tiled import tiled_contrastive_loss


def _embeddings(n: int, d: int, k: int, seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    z1, z2 = (torch.randn(n, d, generator=gen, dtype=dtype, requires_grad=True) for _ in range(2))
    z2.data += z1.data  # correlated views, so positives stand out as in training
    negatives = torch.randn(k, d, generator=gen, dtype=dtype, requires_grad=True) if k else None
    return z1, z2, negatives


def _loss_and_grads(z1, z2, negatives, temperature, tiled_above, monkeypatch):
    monkeypatch.setattr(losses, "TILED_ABOVE", tiled_above)
    loss = nt_xent(z1, z2, temperature, negatives)
    inputs = [z1, z2] + ([negatives] if negatives is not None else [])
    return loss, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize(
    ("n", "d", "k", "temperature", "tile"),
    [
        (1, 4, 0, 0.5, 1),  # one image: only the positive is left; blocks of one column
        (3, 5, 2, 0.1, 1),
        (8, 16, 0, 0.05, 3),  # tiles that do not divide the rows or the columns
        (13, 8, 7, 0.2, 5),
        (40, 32, 100, 0.1, 16),
        (64, 128, 0, 1.0, 64),  # a single block
        (100, 128, 300, 0.07, 48),
        (32, 16, 20, 0.01, 7),  # logits up to 100: the streaming log-sum-exp must not overflow
    ],
)
def test_tiled_equals_dense_loss_and_gradients(n, d, k, temperature, tile, monkeypatch):
    z1, z2, negatives = _embeddings(n, d, k, seed=n * 1000 + k)
    dense_loss, dense_grads = _loss_and_grads(z1, z2, negatives, temperature, 1 << 62, monkeypatch)
    monkeypatch.setattr(
        losses, "tiled_contrastive_loss", lambda *a: tiled_contrastive_loss(*a, tile=tile)
    )
    tiled_loss, tiled_grads = _loss_and_grads(z1, z2, negatives, temperature, 0, monkeypatch)
    torch.testing.assert_close(tiled_loss, dense_loss, atol=1e-5, rtol=1e-5)
    for got, want in zip(tiled_grads, dense_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_nt_xent_switches_to_tiles_above_the_threshold(monkeypatch):
    calls = []
    original = losses.tiled_contrastive_loss
    monkeypatch.setattr(
        losses, "tiled_contrastive_loss", lambda *a: calls.append(a) or original(*a)
    )
    monkeypatch.setattr(
        losses, "TILED_ABOVE", 2 * 4 * (2 * 4 + 3)
    )  # exactly the logits of n=4, K=3
    z1, z2, negatives = _embeddings(4, 8, 3, seed=0)
    nt_xent(z1, z2, 0.5, negatives)
    assert not calls
    nt_xent(z1, z2, 0.5, torch.cat([negatives, negatives[:1]]))  # one more column
    assert len(calls) == 1


def test_tiled_loss_is_exact_in_float64():
    z1, z2, negatives = _embeddings(20, 12, 9, seed=5, dtype=torch.float64)
    queries = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    keys = torch.cat([queries, torch.nn.functional.normalize(negatives, dim=1)])
    own = torch.arange(20)
    positives, excluded = torch.cat([own + 20, own]), torch.cat([own, own + 20])
    logits = queries @ keys.T / 0.3
    logits[torch.arange(40), excluded] = float("-inf")
    reference = (torch.logsumexp(logits, 1) - logits[torch.arange(40), positives]).mean()
    got = tiled_contrastive_loss(queries, keys, positives, excluded, 0.3, tile=6)
    torch.testing.assert_close(got, reference, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(
        lambda q, k: tiled_contrastive_loss(q, k, positives, excluded, 0.3, tile=6),
        (queries.detach().requires_grad_(), keys.detach().requires_grad_()),
    )


def _global_batch():
    return _embeddings(6, 8, 5, seed=11, dtype=torch.float64)


def _tiled_worker(rank: int, world_size: int) -> dict:
    losses.TILED_ABOVE = 0  # this process always tiles, with blocks smaller than the batch
    losses.tiled_contrastive_loss = lambda *a: tiled_contrastive_loss(*a, tile=4)
    z1, z2, negatives = (t.detach() for t in _global_batch())
    shard = slice(rank * 3, rank * 3 + 3)
    z1, z2 = z1[shard].requires_grad_(), z2[shard].requires_grad_()
    negatives.requires_grad_()
    loss = nt_xent(z1, z2, 0.2, negatives)
    loss.backward()
    return {"loss": loss.detach(), "z1": z1.grad, "z2": z2.grad, "negatives": negatives.grad}


@pytest.mark.slow
def test_tiled_loss_over_two_processes_equals_dense_loss_on_the_global_batch(monkeypatch):
    z1, z2, negatives = _global_batch()
    loss, (g1, g2, gn) = _loss_and_grads(z1, z2, negatives, 0.2, 1 << 62, monkeypatch)
    results = run_distributed(_tiled_worker, 2)
    # Each process's loss is the mean over its own views: the global mean is their average, and
    # gradients add up (each process back-propagates its own share).
    torch.testing.assert_close(sum(r["loss"] for r in results) / 2, loss.detach())
    for rank, r in enumerate(results):
        shard = slice(rank * 3, rank * 3 + 3)
        torch.testing.assert_close(r["z1"] / 2, g1[shard])
        torch.testing.assert_close(r["z2"] / 2, g2[shard])
    torch.testing.assert_close(sum(r["negatives"] for r in results) / 2, gn)


def test_off_cuda_the_dense_loss_is_used_up_to_the_cpu_crossover(monkeypatch):
    assert losses._dense_limit(torch.device("cpu")) == losses.TILED_ABOVE == 1 << 24
    calls = []
    monkeypatch.setattr(losses, "tiled_contrastive_loss", lambda *args: calls.append(1) or 0)
    z1, z2, _ = _embeddings(4, 8, 0, seed=0)
    monkeypatch.setattr(losses, "TILED_ABOVE", 8 * 8)  # 2n x 2N = 64 logits: dense
    nt_xent(z1, z2, 0.5)
    assert not calls
    monkeypatch.setattr(losses, "TILED_ABOVE", 8 * 8 - 1)
    nt_xent(z1, z2, 0.5)
    assert calls == [1]
