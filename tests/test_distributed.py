"""Global BatchNorm and data-parallel training in two gloo processes against one process running
the concatenated (global) batch with ordinary BatchNorm."""

import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from multiprocess import run_distributed
from simclrv2 import distributed
from simclrv2.build import optimizer_and_schedule
from simclrv2.config import Config, OptimizerConfig
from simclrv2.data import Batch, ImageDataset
from simclrv2.evaluation import extract, knn_scores
from simclrv2.export import ExportedModel
from simclrv2.losses import nt_xent
from simclrv2.metrics import MetricsWriter
from simclrv2.models import ContrastiveModel, ProjectionHead, build_encoder
from simclrv2.models.heads import BatchNormNoShift
from simclrv2.runtime import Runtime
from simclrv2.scores import VALIDATION
from simclrv2.stages.evaluate import linear_eval
from simclrv2.training import Stage, fit

SHARDS = (3, 5)  # samples per process: unequal on purpose, the pooling must weight by count


def _norm_layers() -> list[nn.Module]:
    torch.manual_seed(0)
    layers = [
        nn.BatchNorm2d(4),
        nn.BatchNorm1d(6),
        BatchNormNoShift(6),
        nn.BatchNorm1d(6, momentum=None),
    ]
    for layer in layers:
        if layer.weight is not None:
            nn.init.uniform_(layer.weight, 0.5, 1.5)
        if layer.bias is not None:
            nn.init.uniform_(layer.bias, -0.5, 0.5)
    return [layer.double() for layer in layers]


def _inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, weights of a linear functional of the output) for each layer; the global batch."""
    gen = torch.Generator().manual_seed(1)
    n = sum(SHARDS)
    shapes = [(n, 4, 3, 2), (n, 6), (n, 6), (n, 6)]
    return [
        (
            torch.randn(s, generator=gen, dtype=torch.float64) * 2 + 1,
            torch.randn(s, generator=gen, dtype=torch.float64),
        )
        for s in shapes
    ]


def _run_norm_layers(layers: list[nn.Module], rows: slice, steps: int = 2) -> dict:
    """Two training-mode forwards/backwards of each layer on ``rows`` of the global batch."""
    outputs, input_grads = [], []
    for layer, (x, w) in zip(layers, _inputs()):
        layer.train()
        for _ in range(steps):
            x_part = x[rows].clone().requires_grad_(True)
            y = layer(x_part)
            (y * w[rows]).sum().backward()
        outputs.append(y.detach())
        input_grads.append(x_part.grad)
    params = {f"{i}.{k}": v for i, layer in enumerate(layers) for k, v in layer.named_parameters()}
    grads = {k: v.grad.clone() for k, v in params.items()}
    buffers = {
        f"{i}.{k}": v.clone() for i, layer in enumerate(layers) for k, v in layer.named_buffers()
    }
    return {"outputs": outputs, "input_grads": input_grads, "grads": grads, "buffers": buffers}


def _global_norm_worker(rank: int, world_size: int) -> dict:
    import torch.distributed as dist

    layers = _norm_layers()
    holder = nn.Sequential(*layers)
    with distributed.global_batchnorm(holder) as synced:
        assert all(isinstance(m, distributed.GlobalBatchNorm) for m in synced)
        start = sum(SHARDS[:rank])
        result = _run_norm_layers(list(synced), slice(start, start + SHARDS[rank]))
    assert not any(isinstance(m, distributed.GlobalBatchNorm) for m in holder)  # restored
    for grad in result["grads"].values():  # each process holds its own loss's share
        dist.all_reduce(grad)
    restored = {f"{i}.{k}": v for i, layer in enumerate(holder) for k, v in layer.named_buffers()}
    result["restored_buffers_match"] = all(
        torch.equal(restored[k], v) for k, v in result["buffers"].items()
    )
    return result


@pytest.mark.slow
def test_global_batchnorm_equals_batchnorm_over_the_concatenated_batch():
    expected = _run_norm_layers(_norm_layers(), slice(None))
    results = run_distributed(_global_norm_worker, 2)
    for rank, got in enumerate(results):
        rows = slice(sum(SHARDS[:rank]), sum(SHARDS[: rank + 1]))
        for y, want in zip(got["outputs"], expected["outputs"]):
            torch.testing.assert_close(y, want[rows], atol=1e-10, rtol=1e-10)
        for g, want in zip(got["input_grads"], expected["input_grads"]):
            torch.testing.assert_close(g, want[rows], atol=1e-10, rtol=1e-10)
        for name, want in expected["grads"].items():
            torch.testing.assert_close(got["grads"][name], want, atol=1e-10, rtol=1e-10)
        for name, want in expected["buffers"].items():
            torch.testing.assert_close(got["buffers"][name], want, atol=1e-10, rtol=1e-10)
        assert got["restored_buffers_match"]  # the original layers saw the shared buffers' updates


def test_global_batchnorm_changes_nothing_in_one_process():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    with distributed.global_batchnorm(model) as same:
        assert same is model and isinstance(model[1], nn.BatchNorm2d)
        assert not isinstance(model[1], distributed.GlobalBatchNorm)


# ----------------------------------------------------------------------------------------------
# A few pretraining steps through the shared training loop


GLOBAL_BATCH, IMAGES, EPOCHS = 8, 24, 2


def _contrastive_model(seed: int) -> ContrastiveModel:
    torch.manual_seed(seed)
    encoder = build_encoder("r18_0.125x_sk0", image_size=12, in_channels=1)
    return ContrastiveModel(encoder, ProjectionHead(encoder.out_dim, 2, 16, 8)).double()


def _pretrain(
    rank: int, world_size: int, directory: str, epochs: int = EPOCHS, noise: float = 0.0
) -> dict[str, torch.Tensor]:
    """SimCLR steps with ``fit`` (resuming from ``directory``'s checkpoint, if any): LARS, global BN,
    NT-Xent over the global batch, on a schedule of ``EPOCHS`` of which ``epochs`` are run. The two
    views are fixed functions of the image, plus ``noise`` from the per-process augmentation stream."""
    model = _contrastive_model(seed=rank)  # different initial weights per process: fit broadcasts
    images = torch.randint(
        0, 256, (IMAGES, 1, 12, 12), generator=torch.Generator().manual_seed(3), dtype=torch.uint8
    )
    data = ImageDataset(images)
    settings = OptimizerConfig(optimizer="lars", base_lr=2.0, weight_decay=1e-4, warmup=1)
    optimizer, schedule = optimizer_and_schedule(settings, model, EPOCHS, GLOBAL_BATCH, IMAGES)

    def step(batch: Batch, generator: torch.Generator) -> dict:
        x = batch.images.double() / 255
        views = torch.cat([x, x.flip(3).sqrt()])  # (2n, 1, 12, 12)
        views = views + noise * torch.randn(views.shape, generator=generator, dtype=torch.float64)
        _, z = model(views)
        return {"loss": nt_xent(*z.chunk(2), temperature=0.5)}

    runtime = Runtime(torch.device("cpu"), None, channels_last=False)
    stage = Stage(
        "pretrain",
        Path(directory),
        runtime,
        MetricsWriter(Path(directory) / "metrics.csv", "pretrain", rank == 0),
    )
    with distributed.global_batchnorm(model):
        fit(
            stage,
            step,
            {"model": model},
            optimizer,
            schedule,
            data,
            batch_size=GLOBAL_BATCH,
            epochs=epochs,
            seed=0,
        )
    return {k: v.clone() for k, v in model.state_dict().items()}


def _stop_then_resume(rank: int, world_size: int, directory: str) -> dict[str, torch.Tensor]:
    _pretrain(rank, world_size, directory, epochs=1, noise=0.1)  # ends with a checkpoint
    return _pretrain(rank, world_size, directory, noise=0.1)  # fresh model, resumed from it


@pytest.mark.slow
def test_two_processes_resume_exactly_with_each_process_random_stream(tmp_path):
    (tmp_path / "once").mkdir()
    (tmp_path / "twice").mkdir()
    once = run_distributed(_pretrain, 2, str(tmp_path / "once"), EPOCHS, 0.1)
    resumed = run_distributed(_stop_then_resume, 2, str(tmp_path / "twice"))
    for got, want in zip(resumed, once):
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, atol=0, rtol=0, msg=name)


@pytest.mark.slow
def test_two_processes_with_global_batchnorm_train_as_one_process_on_the_global_batch(tmp_path):
    (tmp_path / "one").mkdir()
    expected = _pretrain(0, 1, str(tmp_path / "one"))
    initial = _contrastive_model(seed=0).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in expected.items())  # it trained
    with tempfile.TemporaryDirectory(dir=tmp_path) as shared:
        results = run_distributed(_pretrain, 2, shared)
    for got in results:
        assert got.keys() == expected.keys()
        for name, want in expected.items():
            torch.testing.assert_close(got[name], want, atol=1e-5, rtol=0, msg=name)


def _evaluation_data(n: int, seed: int) -> ImageDataset:
    """``n`` random 16 px RGB images of 3 classes, a few unlabelled."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    labels[::7] = -1
    return ImageDataset(images, labels, ["a", "b", "c"])


def _sharded_evaluation(rank: int, world_size: int) -> dict:
    """extract (a shard per process when there are several), kNN, and the stage's linear
    evaluation (an L-BFGS probe per L2 penalty, chosen on validation)."""
    torch.manual_seed(0)
    encoder = build_encoder("r18_0.125x_sk0", image_size=16).eval()
    runtime = Runtime(torch.device("cpu"), None, channels_last=False)
    train, validation = _evaluation_data(37, 1), _evaluation_data(5, 2)  # 5 < a batch: one shard
    rows = []  # images this process embedded for the training set

    def embed(images: torch.Tensor) -> torch.Tensor:
        rows.append(len(images))
        return encoder(images)

    features = {"train": extract(embed, train, runtime, 16, batch_size=8)}
    features["validation"] = extract(encoder, validation, runtime, 16, batch_size=8)
    (bank, bank_y), (queries, _) = features["train"], features["validation"]
    # chunks of 2 queries: 3 chunks, two scored by rank 0 and one by rank 1, gathered in order
    votes = knn_scores(bank[bank_y >= 0], bank_y[bank_y >= 0], queries, 3, k=5, chunk=2)
    config = Config()
    config.linear.l2 = [1e-4, 1e-1, 10.0]
    linear = linear_eval(config, ExportedModel(encoder), train, {VALIDATION: validation}, runtime)
    return {"features": features, "votes": votes, "linear": linear, "rows": sum(rows)}


@pytest.mark.slow
def test_sharded_extraction_knn_and_linear_evaluation_equal_one_process():
    (one,) = run_distributed(_sharded_evaluation, 1)
    two = run_distributed(_sharded_evaluation, 2)
    assert [got["rows"] for got in two] == [24, 13]  # whole batches of 8: 3 and 2 (one short)
    for got in two:
        for name, (features, labels) in one["features"].items():
            assert torch.equal(got["features"][name][0], features), name
            assert torch.equal(got["features"][name][1], labels), name
        assert torch.equal(got["votes"], one["votes"])
        assert got["linear"] == one["linear"]
    assert one["features"]["train"][0].shape[0] == 37
    assert len(one["linear"]["validation_top1_by_l2"]) == 3
