"""Time and peak memory of ``simclrv2 convert-tf`` on a full-size release (r50_1x_sk1: 184 MB).

No released file is downloaded: the checkpoint is built from the names and shapes a TF1 release of
that architecture holds (encoder, 3-layer projection head, 1000-class head; see ``tf1_names``) with
seeded values, then converted in a fresh process that reports its own wall time and peak resident
memory (VmHWM), beside the memory of the same process right after its imports.

    python benchmarks/convert_tf.py [--arch r50_1x_sk1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from simclrv2.convert.tensorbundle import shard_path, write_bundle
from simclrv2.convert.tf_names import tf1_names
from simclrv2.convert.tf_simclr import convert
from simclrv2.export import ExportedModel
from simclrv2.models import LinearClassifier, ProjectionHead, ResNet, parse_arch
from simclrv2.tfio import crc32c


def build_release(arch: str, prefix: Path, seed: int = 0) -> int:
    """Write a TF1 checkpoint of ``arch`` with seeded values; return its data size in bytes."""
    with torch.device("meta"):
        encoder = ResNet(parse_arch(arch))
        head = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=128)
        model = ExportedModel(encoder, head, LinearClassifier(encoder.out_dim, 1000))
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {"global_step": np.array(250228, dtype=np.int64)}
    for name, shape in tf1_names(model).items():
        values = rng.standard_normal(shape, dtype=np.float32)
        tensors[name] = np.abs(values) + 0.5 if name.endswith("moving_variance") else values
    write_bundle(prefix, tensors)
    return shard_path(prefix, 0, 1).stat().st_size


def _peak_mb() -> float:
    """Peak resident memory of this process (Linux VmHWM: unlike ru_maxrss, not inherited from
    the parent that spawned it)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # KiB -> MiB


def child(source: str, out: str) -> None:
    """Run in a fresh process: convert, print JSON with the time and memory figures."""
    after_imports = _peak_mb()
    start = time.perf_counter()
    convert(source, out)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), "imports_mb": after_imports}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="r50_1x_sk1")
    parser.add_argument("--workdir", help="where to build the checkpoint (default: a temp dir)")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        prefix = Path(work) / "model.ckpt-250228"
        size = build_release(args.arch, prefix)
        command = [sys.executable, __file__, "--child", str(prefix), str(Path(work) / "out")]
        figures = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    backend = "google-crc32c" if crc32c._FAST is not None else "numpy"
    print(f"convert-tf {args.arch}: {size / 1e6:.0f} MB checkpoint, CRC-32C backend {backend}")
    print(f"  time         {figures['seconds']:.2f} s ({size / 1e6 / figures['seconds']:.0f} MB/s)")
    print(f"  peak memory  {figures['peak_mb']:.0f} MB resident")
    print(
        f"  of which     {figures['peak_mb'] - figures['imports_mb']:.0f} MB above the process after its imports"
    )


if __name__ == "__main__":
    main()
