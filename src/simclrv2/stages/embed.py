"""Write the representation h of every image of a data set, with its file name and label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from simclrv2.atomic import atomic_file, write_text
from simclrv2.data import ImageDataset
from simclrv2.errors import UserError
from simclrv2.evaluation import extract
from simclrv2.export import ExportedModel, match_channels
from simclrv2.runtime import Runtime

FORMATS = (".npy", ".safetensors")


def embed(exported: ExportedModel, data: ImageDataset, runtime: Runtime, out: Path) -> Path:
    """h (N, D) float32 of ``data`` (evaluation crop at its own size) to ``out``: ``.npy`` with
    ``<out>.names.txt`` and ``<out>.labels.npy`` beside it, or ``.safetensors`` holding
    ``embeddings`` and ``labels`` with the names in its metadata. Every file is written
    atomically, the sidecars first."""
    if out.suffix not in FORMATS:
        raise UserError(
            f"unknown embedding format {out.suffix!r} for {out}; use a name ending in .npy or .safetensors"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    (data,) = match_channels(exported.encoder.spec.in_channels, data)
    encoder = runtime.module(exported.encoder).eval()
    features, labels = extract(encoder, data, runtime, data.image_size)
    names = data.image_names()
    if out.suffix == ".npy":
        write_text(f"{out}.names.txt", "\n".join(names) + "\n")
        with atomic_file(f"{out}.labels.npy") as staging, open(staging, "wb") as file:
            np.save(file, labels.numpy())
        with atomic_file(out) as staging, open(staging, "wb") as file:
            np.save(file, features.numpy())
    else:
        metadata = {"names": json.dumps(names), "arch": json.dumps(exported.encoder.spec.__dict__)}
        tensors = {"embeddings": features.contiguous(), "labels": labels.contiguous()}
        with atomic_file(out) as staging:
            save_file(tensors, staging, metadata=metadata)
    return out
