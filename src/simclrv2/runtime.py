"""Where and how tensors run: device, autocast precision and memory format, from one config.

CUDA gets bf16 autocast and channels_last; the CPU runs fp32 by default (bf16 autocast on CPU is
about 2x faster for small ResNets but its gradients differ more from fp32, so it is opt-in with
``runtime.precision=bf16``; ``benchmarks/precision.py``). The same code path serves both devices.
Under torchrun each process takes the GPU of its LOCAL_RANK. ``runtime.compile`` compiles the
modules in place (``nn.Module.compile``), so their state-dict names stay those of the modules.
"""

from __future__ import annotations

import contextlib
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
    return Runtime(device, dtype, config.channels_last, config.compile)
