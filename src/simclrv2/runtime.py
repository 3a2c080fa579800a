"""Where and how tensors run: device, autocast precision and memory format, from one config.

CUDA gets bf16 autocast and channels_last; the CPU runs fp32 by default (bf16 autocast on CPU is
about 2x faster for small ResNets but its gradients differ more from fp32, so it is opt-in with
``runtime.precision=bf16``; ``benchmarks/precision.py``). The same code path serves both devices.
Under torchrun each process takes the GPU of its LOCAL_RANK. ``runtime.compile`` compiles the
modules in place (``nn.Module.compile``), so their state-dict names stay those of the modules.

On the CPU, PyTorch takes every tensor from the C heap. glibc serves blocks above 128 kB with
fresh pages from the OS and gives them back when freed, so each new activation, gradient or view
of a step costs a page fault per 4 kB (about a third of a CPU step on a 2-core VM).
``runtime.retain_freed_memory`` (default on) raises glibc's thresholds so freed blocks stay in the
heap for the next step, the effect of the jemalloc/tcmalloc preload PyTorch's CPU tuning guide
recommends, without one. The process keeps its peak memory until it exits.
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


# glibc's mallopt parameters and the largest values it accepts on 64-bit systems
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MAX_MMAP_THRESHOLD, TRIM_THRESHOLD = 32 * 2**20, 2**30  # bytes


@functools.cache
def retain_freed_memory() -> bool:
    """Make this process's glibc heap keep freed blocks for reuse (see the module docstring):
    blocks up to 32 MB come from the heap, and up to 1 GB of free heap is kept. Once per process;
    False where the C library is not glibc (the setting is then a no-op)."""
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


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
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else None
    if device.type == "cpu" and config.retain_freed_memory:
        retain_freed_memory()
    return Runtime(device, dtype, config.channels_last, config.compile)
