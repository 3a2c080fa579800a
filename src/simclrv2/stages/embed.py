"""Write the representation h of every image of a data set, with its file name and label."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from simclrv2.data import ImageDataset
from simclrv2.errors import UserError
from simclrv2.evaluation import extract
from simclrv2.export import ExportedModel
from simclrv2.runtime import Runtime

FORMATS = (".npy", ".safetensors")


def embed(
    exported: ExportedModel, data: ImageDataset, runtime: Runtime, image_size: int, out: Path
) -> Path:
    """h (N, D) float32 to ``out``: ``.npy`` with ``<out>.names.txt`` and ``<out>.labels.npy`` beside it,
    or ``.safetensors`` holding ``embeddings`` and ``labels`` with the names in its metadata.
    Written to a temporary file first, so a failure leaves nothing half-written."""
    if out.suffix not in FORMATS:
        raise UserError(
            f"unknown embedding format {out.suffix!r} for {out}; use a name ending in .npy or .safetensors"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = runtime.module(exported.encoder).eval()
    features, labels = extract(encoder, data, runtime, image_size)
    names = data.names or [str(i) for i in range(len(data))]
    staging = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".npy":
        with open(staging, "wb") as file:
            np.save(file, features.numpy())
        Path(f"{out}.names.txt").write_text("\n".join(names) + "\n")
        np.save(f"{out}.labels.npy", labels.numpy())
    else:
        metadata = {"names": json.dumps(names), "arch": json.dumps(exported.encoder.spec.__dict__)}
        save_file(
            {"embeddings": features.contiguous(), "labels": labels.contiguous()},
            staging,
            metadata=metadata,
        )
    os.replace(staging, out)
    return out
