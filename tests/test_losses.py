import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multiprocess import run_distributed
from simclrv2.losses import distillation_loss, labelled_cross_entropy, nt_xent


def nt_xent_loop(z1, z2, temperature, negatives=None):
    """The paper's Eq. 1 written as plain Python over pairs: mean over all 2N views."""
    views = [v / v.norm() for v in list(z1) + list(z2)]
    extra = [v / v.norm() for v in (negatives if negatives is not None else [])]
    n = len(z1)
    total = 0.0
    for i, zi in enumerate(views):
        positive = (i + n) % (2 * n)
        denominator = 0.0
        for k, zk in enumerate(views):
            if k != i:
                denominator = denominator + torch.exp(torch.dot(zi, zk) / temperature)
        for zk in extra:
            denominator = denominator + torch.exp(torch.dot(zi, zk) / temperature)
        total = total - torch.log(
            torch.exp(torch.dot(zi, views[positive]) / temperature) / denominator
        )
    return total / (2 * n)


@pytest.mark.parametrize(
    ("n", "d", "temperature", "k"),
    [(1, 3, 0.5, 0), (4, 8, 0.1, 0), (7, 5, 1.0, 3), (16, 16, 0.2, 9)],
)
def test_nt_xent_equals_the_per_pair_loop_and_its_gradient(n, d, temperature, k):
    gen = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    negatives = (
        torch.randn(k, d, generator=gen, dtype=torch.float64, requires_grad=True) if k else None
    )
    loss = nt_xent(
        z1.float(), z2.float(), temperature, None if negatives is None else negatives.float()
    )
    reference = nt_xent_loop(z1, z2, temperature, negatives)
    assert abs(loss.item() - reference.item()) < 1e-6 * max(1.0, abs(reference.item()))
    inputs = [z1, z2] + ([negatives] if k else [])
    grads = torch.autograd.grad(loss, inputs)
    expected = torch.autograd.grad(reference, inputs)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g.double(), e, atol=1e-6, rtol=1e-5)


def test_nt_xent_is_log_of_2n_minus_1_for_identical_embeddings():
    z = torch.ones(5, 4)
    assert math.isclose(nt_xent(z, z, 0.5).item(), math.log(9), rel_tol=1e-6)


def test_nt_xent_ignores_scale_and_prefers_matching_views():
    torch.manual_seed(0)
    z1 = torch.randn(8, 16)
    assert math.isclose(nt_xent(z1, z1 * 3, 0.1).item(), nt_xent(z1, z1, 0.1).item(), rel_tol=1e-6)
    assert nt_xent(z1, z1, 0.1) < nt_xent(z1, torch.randn(8, 16), 0.1)


def test_distillation_loss_equals_its_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    for tau, scale in [(0.1, False), (1.0, False), (2.0, True)]:
        loss = distillation_loss(student, teacher, tau, scale_by_t2=scale)
        expected = 0.0
        for s_row, t_row in zip(student, teacher):
            p_t = torch.exp(t_row / tau) / torch.exp(t_row / tau).sum()
            p_s = torch.exp(s_row / tau) / torch.exp(s_row / tau).sum()
            expected = expected - (p_t * torch.log(p_s)).sum()
        expected = expected / 6 * (tau**2 if scale else 1)
        assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    (grad,) = torch.autograd.grad(
        distillation_loss(student, teacher, 1.0), teacher, allow_unused=True
    )
    assert grad is None  # the teacher is a constant


@pytest.mark.parametrize("unlabelled", [0.0, 0.5])
def test_labelled_cross_entropy_equals_the_mean_over_the_labelled_rows(unlabelled):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 10, generator=gen, requires_grad=True)
    targets = torch.randint(0, 10, (64,), generator=gen)
    targets[torch.rand(64, generator=gen) < unlabelled] = -1
    known = targets >= 0
    assert known.any()
    loss = labelled_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    want = F.cross_entropy(logits[known], targets[known])  # boolean indexing: a host read
    (want_grad,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(loss, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, want_grad, atol=1e-7, rtol=1e-6)


def test_labelled_cross_entropy_of_a_batch_without_labels_is_zero_not_nan():
    logits = torch.randn(8, 4, requires_grad=True)
    targets = torch.full((8,), -1)
    assert F.cross_entropy(logits[targets >= 0], targets[targets >= 0]).isnan()  # the empty mean
    loss = labelled_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == 0 and torch.equal(grad, torch.zeros_like(logits))


def _projector() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).double()


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randn(
        8, 6, generator=gen, dtype=torch.float64
    )


def _distributed_step(rank: int, world_size: int) -> dict:
    import torch.distributed as dist

    model = _projector()
    x1, x2 = _global_batch()
    shard = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    negatives = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = nt_xent(model(x1[shard]), model(x2[shard]), 0.2, negatives)
    loss.backward()
    for p in model.parameters():  # what DistributedDataParallel does: average the gradients
        dist.all_reduce(p.grad)
        p.grad /= world_size
    dist.all_reduce(loss)
    return {"loss": loss.item() / world_size, "grads": [p.grad.clone() for p in model.parameters()]}


def test_two_processes_equal_one_process_on_the_concatenated_batch():
    model = _projector()
    x1, x2 = _global_batch()
    negatives = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = nt_xent(model(x1), model(x2), 0.2, negatives)
    loss.backward()
    expected = [p.grad for p in model.parameters()]
    for result in run_distributed(_distributed_step, 2):
        assert abs(result["loss"] - loss.item()) < 1e-6
        for got, want in zip(result["grads"], expected):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
