"""Where and how tensors run: device, autocast precision and memory format, from one config.

Precision ``auto`` takes bf16 autocast wherever the device computes bf16 natively (CUDA GPUs with
bf16; CPUs with AVX512-BF16 or AMX), else fp32; channels_last by default. The speed and accuracy
of bf16 against fp32 are measured in ``benchmarks/RESULTS.md`` (precision, peers). The loss stays fp32. The same code path serves both devices.
Under torchrun each process takes the GPU of its LOCAL_RANK. ``runtime.compile`` compiles the
modules in place (``nn.Module.compile``), so their state-dict names stay those of the modules.

On the CPU, PyTorch takes every tensor from the C heap. glibc serves blocks above 128 kB with
fresh pages from the OS and gives them back when freed, so each new activation, gradient or view
of a step costs a page fault per 4 kB (their share of a step: ``benchmarks/RESULTS.md``, heap).
``runtime.retain_freed_memory`` (default on) makes glibc serve every block from its heap and keep
freed ones there for the next step: the effect of the jemalloc/tcmalloc preload that PyTorch's
CPU tuning guide recommends, without one. The process keeps its peak memory until it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from simclrv2 import distributed
from simclrv2.config import RuntimeConfig
from simclrv2.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = full fp32
    channels_last: bool
    compile: bool = False  # torch.compile each module (in place)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def module(self, module: nn.Module) -> nn.Module:
        """Move a module to the device (and to channels_last for 4-D weights); compile it if asked."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compile:
            module.compile()
        return module

    def images(self, images: Tensor) -> Tensor:
        """Move a float image batch (N, C, H, W) to the device in the chosen memory format."""
        images = images.to(self.device, non_blocking=True)
        return (
            images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        )

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)


# glibc's mallopt parameters, and what the runtime sets them to
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 2**30  # bytes of free memory at the top of the heap kept rather than returned


@functools.cache
def retain_freed_memory() -> bool:
    """Make this process's glibc heap keep freed blocks for reuse (see the module docstring):
    every block comes from the heap, none from a fresh mapping (glibc would map anything over
    32 MB afresh whatever its threshold), and up to 1 GB of free heap is kept. Once per process;
    False where the C library is not glibc (the setting is then a no-op)."""
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively, where bf16 autocast is the faster choice: a
    CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # in torch.cpu since 2.1
    return any(getattr(torch.cpu, name)() for name in checks if hasattr(torch.cpu, name))


def resolve_runtime(config: RuntimeConfig) -> Runtime:
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise UserError(
                f"runtime.device={config.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(
                "runtime.device asks for CUDA but no GPU is visible; use runtime.device=cpu"
            )
    if device.type == "cuda" and device.index is None:  # CUDA only: torchrun's process per GPU
        device = torch.device("cuda", distributed.local_rank())
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else None
    if device.type == "cpu" and config.retain_freed_memory:
        retain_freed_memory()
    if device.type == "cuda":
        use_cuda_kernels_for_fixed_shapes(config.tf32)
    return Runtime(device, dtype, config.channels_last, config.compile)


def use_cuda_kernels_for_fixed_shapes(tf32: bool) -> None:
    """CUDA only: cuDNN times its convolution algorithms once per input shape and keeps the
    fastest (every batch of a stage has one shape; the choice is not bitwise deterministic), and
    fp32 matmuls and convolutions use TF32 on GPUs that have it (Ampere and later) when ``tf32``:
    about 1e-3 relative error per product, the default of most training code; bf16 autocast,
    this library's default on such GPUs, is not affected."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
