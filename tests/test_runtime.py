"""The runtime's CPU choices: the heap setting of ``runtime.retain_freed_memory`` (freed blocks
are reused without new page faults; each case in a fresh interpreter, since the setting is
process-wide) and precision ``auto`` (bf16 where the CPU has native bf16)."""

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from simclrv2.config import RuntimeConfig
from simclrv2.runtime import native_bf16, resolve_runtime

FAULTS_OF_A_SECOND_STEP = textwrap.dedent("""
    import resource, sys, torch
    from simclrv2.config import RuntimeConfig
    from simclrv2.runtime import resolve_runtime

    resolve_runtime(RuntimeConfig(device="cpu", retain_freed_memory=sys.argv[1] == "True"))

    def step():
        tensors = [torch.ones(2**21) for _ in range(6)]  # six 8 MB blocks alive at once, then freed
        return len(tensors)

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults_of_a_second_step(retain: bool) -> int:
    command = [sys.executable, "-c", FAULTS_OF_A_SECOND_STEP, str(retain)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc heap setting")
def test_a_retained_heap_reuses_freed_blocks_without_page_faults():
    fresh_pages = 6 * 2**23 // 4096  # what six new 8 MB blocks fault in 4 kB pages
    assert page_faults_of_a_second_step(retain=False) > fresh_pages / 2
    assert page_faults_of_a_second_step(retain=True) < fresh_pages / 4


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags from Linux")
def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native = bool(flags & {"avx512_bf16", "amx_tile"})
    assert native_bf16(torch.device("cpu")) == native
    auto = resolve_runtime(RuntimeConfig(device="cpu"))
    assert auto.autocast_dtype == (torch.bfloat16 if native else None)
    assert resolve_runtime(RuntimeConfig(device="cpu", precision="fp32")).autocast_dtype is None
    assert (
        resolve_runtime(RuntimeConfig(device="cpu", precision="bf16")).autocast_dtype
        == torch.bfloat16
    )
