"""Gradient caching: the gradients of the unchunked batch (without BN), the chunk rule with BN."""

import copy

import pytest
import torch
from torch import nn

from multiprocess import run_distributed
from simclrv2 import distributed
from simclrv2.errors import UserError
from simclrv2.gradcache import check_chunk_size, chunked_forward
from simclrv2.losses import nt_xent


class TwoOutputs(nn.Module):
    """A small encoder + head returning (h, z) like the pretraining model; BN optional."""

    def __init__(self, batchnorm: bool) -> None:
        super().__init__()
        norm = nn.BatchNorm2d(6) if batchnorm else nn.Identity()
        self.encoder = nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Sequential(
            nn.Linear(6, 8),
            nn.BatchNorm1d(8) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Linear(8, 4),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.head(h)


def _loss(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """NT-Xent on z plus a term on h, so that both outputs carry gradient."""
    return nt_xent(*z.chunk(2), temperature=0.2) + h.square().mean()


def _views(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 5, 5, generator=gen)
    return torch.cat(
        [x, (x + 0.1 * torch.rand(n, 2, 5, 5, generator=gen)).clamp(0, 1)]
    )  # (2n, ...)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize(("n", "chunk"), [(12, 4), (12, 12), (12, 5), (7, 1)])
def test_chunked_gradients_equal_the_unchunked_ones_without_batchnorm(n, chunk):
    torch.manual_seed(0)
    model = TwoOutputs(batchnorm=False)
    views = _views(n)
    _loss(*model(views)).backward()
    expected = _grads(model)
    model.zero_grad()
    loss = _loss(*chunked_forward(model, views, chunk))
    loss.backward()
    for name, want in expected.items():
        torch.testing.assert_close(_grads(model)[name], want, atol=1e-5, rtol=1e-5)


def test_with_batchnorm_each_chunk_is_normalised_alone_and_running_statistics_update_once():
    torch.manual_seed(0)
    model = TwoOutputs(batchnorm=True).train()
    reference = copy.deepcopy(model)
    views, chunk = _views(12), 6
    # The rule: chunk j is normalised with its own statistics, as a separate forward would; the
    # running statistics move once, as after one forward of the first chunk.
    outputs = [reference(part) for part in views.split(chunk)]
    _loss(*(torch.cat(parts) for parts in zip(*outputs))).backward()
    after_first_chunk = copy.deepcopy(model)
    after_first_chunk(views[:chunk])

    h, z = chunked_forward(model, views, chunk)
    torch.testing.assert_close(z, torch.cat([out[1] for out in outputs]))
    _loss(h, z).backward()  # the recomputation must not move the statistics again
    for name, want in _grads(reference).items():
        torch.testing.assert_close(_grads(model)[name], want, atol=1e-5, rtol=1e-5)
    for (name, got), want in zip(model.named_buffers(), after_first_chunk.buffers()):
        assert torch.equal(got, want), name
    assert not all(torch.equal(a, b) for a, b in zip(model.buffers(), TwoOutputs(True).buffers()))


class RecordsImages(nn.Module):
    """Records which images (column 0 of the input: an image id) each forward call sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 3)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x[:, 0].long().tolist())
        return self.linear(x)


@pytest.mark.parametrize(("n", "chunk"), [(8, 8), (8, 4), (12, 3), (6, 1)])
def test_no_chunk_holds_both_views_of_an_image(n, chunk):
    check_chunk_size(chunk, n)
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    views = torch.cat(
        [torch.cat([ids, torch.rand(n, 1)], 1), torch.cat([ids, torch.rand(n, 1)], 1)]
    )
    model = RecordsImages()
    chunked_forward(model, views, chunk).sum().backward()
    assert len(model.seen) == 2 * (2 * n // chunk)  # every chunk, then every chunk again
    for images in model.seen:
        assert len(images) == chunk and len(set(images)) == chunk


@pytest.mark.parametrize(("chunk", "n"), [(3, 8), (16, 8)])
def test_chunk_sizes_that_would_pair_views_are_refused(chunk, n):
    with pytest.raises(UserError, match="must divide"):
        check_chunk_size(chunk, n)


# ----------------------------------------------------------------------------------------------
# Two processes with global BatchNorm: chunk j of the batch is the union of every process's chunk j.

N_LOCAL, CHUNK = 4, 2


def _global_views() -> torch.Tensor:
    return _views(2 * N_LOCAL, seed=3).double()  # [first views of 8 images; their second views]


def _process_views(rank: int) -> torch.Tensor:
    views = _global_views()
    own = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
    return torch.cat([views[: 2 * N_LOCAL][own], views[2 * N_LOCAL :][own]])  # (2 n_local, ...)


def _chunked_worker(rank: int, world_size: int) -> dict:
    torch.manual_seed(0)
    model = TwoOutputs(batchnorm=True).double()
    with distributed.global_batchnorm(model):
        _loss(*chunked_forward(model, _process_views(rank), CHUNK)).backward()
    distributed.average_gradients(model.parameters())
    return {"grads": _grads(model), "buffers": dict(model.named_buffers())}


@pytest.mark.slow
def test_two_processes_with_global_batchnorm_normalise_the_union_of_their_chunks():
    torch.manual_seed(0)
    model = TwoOutputs(batchnorm=True).double()
    # One process, chunk j = process 0's chunk j then process 1's; outputs put back in each
    # process's order before the loss, which then sees the global batch as the processes do.
    per_process = [_process_views(r).split(CHUNK) for r in range(2)]
    chunks = [torch.cat(pair) for pair in zip(*per_process)]
    outputs = [model(chunk) for chunk in chunks]
    h0, z0 = (torch.cat([out[i][:CHUNK] for out in outputs]) for i in range(2))  # process 0's
    h1, z1 = (torch.cat([out[i][CHUNK:] for out in outputs]) for i in range(2))
    half = N_LOCAL
    z = torch.cat([z0[:half], z1[:half], z0[half:], z1[half:]])  # [first views; second views]
    loss = nt_xent(*z.chunk(2), temperature=0.2) + (h0.square().mean() + h1.square().mean()) / 2
    loss.backward()
    expected = _grads(model)
    torch.manual_seed(0)
    reference = TwoOutputs(batchnorm=True).double()
    reference(chunks[0])  # the one update of the running statistics: the first global chunk
    for result in run_distributed(_chunked_worker, 2):
        for name, want in expected.items():
            torch.testing.assert_close(result["grads"][name], want, atol=1e-10, rtol=1e-10)
        for name, want in reference.named_buffers():
            torch.testing.assert_close(result["buffers"][name], want, atol=1e-10, rtol=1e-10)


def test_the_second_pass_replays_the_first_pass_rng_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 50), nn.Dropout(0.5), nn.Linear(50, 4))
    views = torch.randn(12, 50)
    torch.manual_seed(
        1
    )  # the reference draws each chunk's dropout mask in order, as the first pass
    reference = copy.deepcopy(model)
    nt_xent(*torch.cat([reference(part) for part in views.split(3)]).chunk(2), 0.5).backward()
    torch.manual_seed(1)
    nt_xent(*chunked_forward(model, views, 3).chunk(2), 0.5).backward()
    for name, want in _grads(reference).items():
        torch.testing.assert_close(_grads(model)[name], want, atol=1e-6, rtol=1e-6)


class RecordsDtypes(nn.Linear):
    """Records the dtype each call computes in (bf16 under CPU autocast, else fp32)."""

    def __init__(self) -> None:
        super().__init__(6, 4)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        self.dtypes.append(y.dtype)
        return y


@pytest.mark.parametrize("autocast", [True, False])
def test_the_second_pass_runs_under_the_first_pass_autocast(autocast):
    model = RecordsDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        z = chunked_forward(model, torch.randn(8, 6), 2)
    nt_xent(*z.chunk(2), 0.5).backward()  # outside autocast, as the training loop does
    assert model.dtypes == [torch.bfloat16 if autocast else torch.float32] * 8  # 4 chunks, twice
