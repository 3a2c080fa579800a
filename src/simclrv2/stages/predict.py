"""Predictions of a trained classifier on new images: one CSV row per image with the predicted class
name, its probability and the top-k, batched on the device with a progress bar.

The images go through the evaluation transform of training: decoded at the side the model was
trained at (:meth:`ExportedModel.input_side`), converted to the model's channels, centre-cropped.
Files of the source that could not be decoded get a row that says so, never silently dropped.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import torch

from simclrv2.atomic import write_text
from simclrv2.augment import center_crop
from simclrv2.data import ImageDataset, epoch_batches
from simclrv2.export import ExportedModel, match_channels
from simclrv2.metrics import progress_bar
from simclrv2.runtime import Runtime
from simclrv2.tables import csv_text

COLUMNS = ("file", "predicted", "probability", "top_k", "label")
BATCH = 256  # images per forward pass


@torch.no_grad()
def predict(
    exported: ExportedModel, data: ImageDataset, runtime: Runtime, out: Path, k: int = 5
) -> Path:
    """Write ``out``: for each image of ``data`` (in order), the most probable class, its softmax
    probability and the ``k`` most probable classes as ``name:probability`` (space-separated);
    ``label`` is the image's own class (the source's name for it) where it has one."""
    model = runtime.module(exported.classifier_model()).eval()
    classes = exported.info.get("classes") or [str(c) for c in range(model.linear.out_features)]
    skipped = data.skipped
    (data,) = match_channels(exported.encoder.spec.in_channels, data)
    names = data.image_names()
    k = min(k, len(classes))
    rows, start = [], 0
    batches = epoch_batches(
        data, BATCH, seed=0, epoch=0, shuffle=False, drop_last=False, device=runtime.device
    )
    with progress_bar(-(-len(data) // BATCH), 0, "predict") as bar, closing(batches):
        for images, labels, extents in batches:
            with runtime.autocast():
                views = center_crop(images, data.image_size, extents=extents)
                logits = model(runtime.images(views))
            top = logits.float().softmax(1).topk(k, dim=1)
            found = zip(top.values.tolist(), top.indices.tolist(), labels.tolist())
            for row, (p, c, label) in enumerate(found):
                ranked = " ".join(f"{classes[j]}:{q:.4f}" for j, q in zip(c, p))
                own = data.classes[label] if label >= 0 else ""
                rows.append((names[start + row], classes[c[0]], f"{p[0]:.4f}", ranked, own))
            start += len(images)
            bar.update(1)
    rows += [(name, "", "", f"undecodable: {problem}", "") for name, problem in skipped]
    write_text(out, csv_text(COLUMNS, rows))
    return out
