"""The lines only a CUDA GPU runs (README, "Scale"): bf16 autocast and channels_last on CUDA, the
CUDA random stream that gradient caching replays, SyncBatchNorm under global BN, NCCL and the GPU
of LOCAL_RANK, and the CUDA random streams in checkpoints.

Every test is marked ``cuda`` and skipped without a GPU (so CPU runs and CI skip them);
``pytest -m cuda`` selects them, and ``bash benchmarks/gpu_check.sh`` runs them when a GPU is lent.
"""

import copy
import threading

import pytest
import torch
import torch.distributed as dist
from torch import nn

from multiprocess import free_port, run_distributed
from simclrv2 import distributed, training
from simclrv2.augment import SimCLRAugment
from simclrv2.checkpoint import load_latest
from simclrv2.cli import main
from simclrv2.config import RuntimeConfig
from simclrv2.data import ImageDataset, epoch_batches
from simclrv2.gradcache import chunked_forward
from simclrv2.losses import nt_xent
from simclrv2.metrics import read_metrics
from simclrv2.models import ContrastiveModel, ProjectionHead, build_encoder
from simclrv2.optim import WarmupCosine, build_optimizer
from simclrv2.runtime import Runtime, resolve_runtime
from tiny_runs import (
    EPOCHS,
    STEPS_PER_EPOCH,
    assert_identical,
    newest_step,
    pretrain_args,
    stop_at_check,
    write_tiny_idx,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda", 0)


@pytest.fixture
def no_tf32():
    """fp32 that is fp32: TF32 off for matmuls and convolutions during the test, then restored."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _contrastive_model(arch: str, size: int, zero_init_residual: bool = True) -> ContrastiveModel:
    """Encoder + 3-layer head, seeded (``zero_init_residual=False``: every block acts at once)."""
    torch.manual_seed(0)
    encoder = build_encoder(arch, image_size=size, zero_init_residual=zero_init_residual)
    return ContrastiveModel(encoder, ProjectionHead(encoder.out_dim, 3))


def _relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """|got - want| / |want| over the concatenated tensors."""
    got, want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
    return ((got - want).norm() / want.norm()).item()


# ----------------------------------------------------------------------------------------------
# bf16 autocast and channels_last


def test_a_bf16_channels_last_step_has_a_finite_loss_and_about_the_fp32_gradients(no_tf32):
    """Loose on purpose: at initialisation NT-Xent's gradient is ill-conditioned (on the CPU, inputs
    moved by 1e-3 move the fp32 gradient by 10-15%, and bf16 by about 20%)."""
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    images = images.to(CUDA, torch.uint8)  # a uint8 batch on the GPU, as fit hands it to a step
    augment, generator = SimCLRAugment.reference(32), torch.Generator(CUDA).manual_seed(0)
    views = torch.cat([augment(images, generator), augment(images, generator)])  # on the GPU
    bf16, fp32 = (Runtime(CUDA, dtype, channels_last=True) for dtype in (torch.bfloat16, None))
    model = bf16.module(_contrastive_model("r18_0.25x_sk0", 32))
    reference = fp32.module(copy.deepcopy(model))
    losses = {}
    for name, runtime, net in (("bf16", bf16, model), ("fp32", fp32, reference)):
        with runtime.autocast():
            _, z = net(runtime.images(views))
            losses[name] = nt_xent(*z.chunk(2), temperature=0.5)
        losses[name].backward()
    assert torch.isfinite(losses["bf16"])
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=1e-2)
    for part in ("encoder", "projection_head"):
        got = [p.grad for p in getattr(model, part).parameters()]
        want = [p.grad for p in getattr(reference, part).parameters()]
        assert _relative_error(got, want) < 0.5, part
    build_optimizer("lars", model, lr=0.1, weight_decay=1e-6).step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(("arch", "size"), [("r18_0.25x_sk0", 32), ("r50_0.25x_sk1", 64)])
def test_channels_last_gives_the_contiguous_outputs(arch, size, no_tf32):
    model = _contrastive_model(arch, size, zero_init_residual=False).to(CUDA).eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    first_conv = next(p for p in fast.parameters() if p.dim() == 4)
    assert first_conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(1)).to(CUDA)
    with torch.no_grad():
        want = model(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    for g, w in zip(got, want):  # (h, z)
        torch.testing.assert_close(g, w, atol=1e-4 * w.abs().max().item(), rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Gradient caching replays the CUDA random stream (tests/test_gradcache.py does it on the CPU)


class Noise(nn.Module):
    """Adds Gaussian noise from the global generator: a random op besides dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn_like(x)


def test_gradient_caching_replays_the_cuda_random_stream(no_tf32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 50), nn.Dropout(0.5), Noise(), nn.Linear(50, 4)).to(CUDA)
    views = torch.randn(12, 50, device=CUDA)
    reference = copy.deepcopy(model)
    torch.manual_seed(1)  # seeds the CUDA generator too; the reference draws chunk by chunk
    nt_xent(*torch.cat([reference(part) for part in views.split(3)]).chunk(2), 0.5).backward()
    torch.manual_seed(1)
    nt_xent(*chunked_forward(model, views, 3).chunk(2), 0.5).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------
# Processes: SyncBatchNorm, NCCL, the GPU of LOCAL_RANK


def _batchnorm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4),
    )  # fmt: skip


def _batchnorm_batch() -> torch.Tensor:
    return torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def _train_step(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """One SGD step on the mean of the squared outputs (gradients averaged over processes); the
    gradients, the new parameters and the buffers, on the CPU."""
    model(x).square().mean().backward()
    distributed.average_gradients(model.parameters())
    grads = {k: p.grad.cpu() for k, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return {"grads": grads, "state": {k: v.cpu() for k, v in model.state_dict().items()}}


def _sync_batchnorm_worker(rank: int, world_size: int) -> dict:
    """Half of the batch per process, both on the one GPU (gloo carries CUDA tensors), global BN."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = _batchnorm_model().to(CUDA)
    half = len(_batchnorm_batch()) // world_size
    x = _batchnorm_batch()[rank * half : (rank + 1) * half].to(CUDA)
    with distributed.global_batchnorm(model):
        swapped = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        result = _train_step(model, x)
    restored = not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    return result | {"swapped": swapped, "restored": restored}


def test_sync_batchnorm_in_two_processes_trains_as_batchnorm_on_the_whole_batch(no_tf32):
    # At world size 1 global_batchnorm swaps nothing (and SyncBatchNorm would fall back to
    # BatchNorm), so the branch needs two processes; NCCL refuses two on one GPU, gloo does not.
    expected = _train_step(_batchnorm_model().to(CUDA), _batchnorm_batch().to(CUDA))
    for result in run_distributed(_sync_batchnorm_worker, 2):
        assert result["swapped"] == 2 and result["restored"]
        for kind in ("grads", "state"):
            for name, want in expected[kind].items():
                got = result[kind][name]
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{kind} {name}")


def test_a_torchrun_process_takes_nccl_and_the_gpu_of_its_local_rank(monkeypatch):
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    port = str(free_port())
    environment = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": port}
    for name, value in (environment | {"MASTER_ADDR": "127.0.0.1"}).items():
        monkeypatch.setenv(name, value)
    runtime = resolve_runtime(RuntimeConfig(device="cuda"))
    assert runtime.device == CUDA and runtime.channels_last
    assert runtime.autocast_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    distributed.init_from_environment(runtime.device)
    try:
        assert dist.get_backend() == "nccl" and torch.cuda.current_device() == 0
        assert distributed._flag_device() == CUDA
        value = torch.ones(3, device=runtime.device)
        dist.all_reduce(value)
        assert value.tolist() == [1.0, 1.0, 1.0]
    finally:
        distributed.shutdown()


# ----------------------------------------------------------------------------------------------
# Checkpoints hold the CUDA random streams, and a resumed run restores them


def _fit_drawing_cuda_numbers(directory, epochs: int) -> list[list[float]]:
    """``training.fit`` on CUDA (4 steps an epoch, a checkpoint after each) with a step that draws
    from the global CUDA generator and from the augmentation generator (a CUDA one on CUDA);
    resumes from ``directory``'s checkpoint, if any. Returns each step's draws."""
    runtime = Runtime(CUDA, None, channels_last=False)
    stage = training.Stage.open("pretrain", directory, runtime, seed=0)  # seeds every generator
    model = runtime.module(nn.Linear(1, 1))
    draws = []

    def step(batch, generator):
        images = batch.images
        noise = torch.rand(2, device=CUDA)  # the global CUDA stream
        augmentation = torch.rand(1, device=CUDA, generator=generator)
        draws.append(torch.cat([noise, augmentation]).tolist())
        return {"loss": model(images.float().mean().reshape(1, 1)).sum() * noise.sum()}

    data = ImageDataset(torch.zeros((8, 1, 8, 8), dtype=torch.uint8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        training.fit(
            stage, step, {"model": model}, optimizer, WarmupCosine(0.1, 8), data, batch_size=2,
            epochs=epochs, seed=0, checkpoint_every=1,
        )  # fmt: skip
    finally:
        stage.metrics.close()
    return draws


def test_a_checkpoint_holds_the_cuda_streams_and_a_resumed_fit_draws_on_from_them(tmp_path):
    whole = _fit_drawing_cuda_numbers(tmp_path / "whole", epochs=2)
    saved = load_latest(tmp_path / "whole" / "checkpoints")["rng"][0]
    assert torch.equal(saved["cuda"], torch.cuda.get_rng_state())  # as the run left it
    first = _fit_drawing_cuda_numbers(tmp_path / "split", epochs=1)  # ends with a checkpoint
    rest = _fit_drawing_cuda_numbers(tmp_path / "split", epochs=2)  # a new fit resumes from it
    assert len(first) == 4 and len(whole) == 8
    assert rest != first  # Stage.open reseeds: a resume that lost the streams would repeat these
    assert first + rest == whole


def _loss_curve(run) -> list[tuple[int, float]]:
    rows = read_metrics(run / "metrics.csv")
    return sorted((r["step"], r["value"]) for r in rows if r["name"] == "loss")


def test_pretraining_on_cuda_stopped_and_resumed_ends_with_the_same_streams(tmp_path, monkeypatch):
    """The CLI on the GPU (bf16 where it has it, channels_last): stopped inside the second epoch,
    then resumed. cuDNN's backward is not bitwise deterministic, so the losses only agree closely;
    the random streams and the position agree exactly."""
    args = pretrain_args(write_tiny_idx(tmp_path / "data"), **{"runtime.device": "cuda"})
    assert main(["pretrain", "--out", str(tmp_path / "whole"), *args]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(training, "StopSignal", stop_at_check(7, training.StopSignal))
        assert main(["pretrain", "--out", str(tmp_path / "split"), *args]) == 0  # stopped
    assert newest_step(tmp_path / "split") < EPOCHS * STEPS_PER_EPOCH
    assert main(["pretrain", "--resume", str(tmp_path / "split")]) == 0
    whole, split = (load_latest(tmp_path / run / "checkpoints") for run in ("whole", "split"))
    assert "cuda" in whole["rng"][0]
    assert_identical(split["rng"], whole["rng"], "rng")  # augmentation, CPU and CUDA streams
    assert split["position"] == whole["position"]
    (steps, losses), (want_steps, want) = (
        zip(*_loss_curve(tmp_path / run)) for run in ("split", "whole")
    )
    assert steps == want_steps and losses == pytest.approx(want, rel=2e-2)


@pytest.mark.parametrize("tf32", [True, False])
def test_a_cuda_runtime_times_cudnn_kernels_and_sets_the_tf32_policy(tf32):
    resolve_runtime(RuntimeConfig(device="cuda", tf32=tf32))
    assert torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.backends.cudnn.allow_tf32 is tf32


def test_prefetched_cuda_batches_equal_the_cpu_ones_while_the_gpu_is_busy():
    """The side-stream copies out of the two reused pinned buffers: every batch of an epoch,
    kept on the GPU while a slow kernel runs on the compute stream after each, equals the CPU
    loader's batch (a buffer overwritten too early, or a missing stream wait, would show)."""
    n, side = 300, 16
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8).transpose(2, 3)
    data = ImageDataset(images, torch.arange(n))
    kwargs = {"seed": 1, "epoch": 0, "drop_last": False, "rank": 1, "world_size": 2}
    expected = list(epoch_batches(data, 32, **kwargs))
    busy = torch.randn(2048, 2048, device=CUDA)
    got = []
    for images, labels in epoch_batches(data, 32, device=CUDA, **kwargs):
        busy = busy @ busy / 2048 + images.float().mean()  # the compute stream lags behind
        got.append((images.clone(), labels.clone()))
    assert len(got) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert torch.equal(images.cpu(), want_images) and torch.equal(labels.cpu(), want_labels)
    assert not [t for t in threading.enumerate() if t.name == "simclrv2-prefetch"]


def test_the_dense_nt_xent_limit_comes_from_the_free_gpu_memory():
    from simclrv2.losses_tiled import DENSE_BYTES_PER_LOGIT, DENSE_SHARE, cuda_dense_limit

    free, total = torch.cuda.mem_get_info(CUDA)
    limit = cuda_dense_limit(CUDA)
    assert limit == cuda_dense_limit(CUDA)  # measured once
    assert free // DENSE_SHARE // DENSE_BYTES_PER_LOGIT <= limit
    assert limit <= total // DENSE_SHARE // DENSE_BYTES_PER_LOGIT
    assert limit > 1 << 24  # any GPU of a few GiB computes the CPU's largest dense loss
