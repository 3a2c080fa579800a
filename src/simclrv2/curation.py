"""Curation with the representation h: nearest images, near-duplicate pairs, and which images of
an unlabelled pool to label next.

Everything works on L2-normalised h (the encoder's output on the evaluation crop, as
:func:`~simclrv2.evaluation.extract`), so similarity is cosine similarity, and runs on the device.

- **Search** is exact: each chunk of queries is one matrix product against the whole bank, then
  ``topk``; one (chunk, N) block of similarities is held at a time (``SIMILARITIES_PER_CHUNK``
  floats), never the N x N matrix, so a few hundred thousand images fit.
- **Near duplicates** are the pairs among each image's K nearest whose cosine is at least a
  threshold (default ``DUPLICATE_THRESHOLD``): at most K partners per image are listed.
- **Which to label next**: k-centre greedy (Sener and Savarese 2018, the "core-set" selection) on
  L2-normalised h: each pick is the image farthest from every labelled or picked image, with a
  running min-distance vector and one (N, D) x (D,) product per pick; or, for a model with a
  classifier, the least confident predictions (lowest max softmax), ties broken by a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from simclrv2.atomic import atomic_file, write_text
from simclrv2.data import UNLABELLED, ImageDataset, save_indices, save_names
from simclrv2.data.folder import Decoding, read_folder, read_images
from simclrv2.errors import UserError
from simclrv2.evaluation import extract
from simclrv2.export import ExportedModel, match_channels
from simclrv2.runtime import Runtime
from simclrv2.tables import csv_text
from simclrv2.visualize import GAP, ORIGINALS_GAP, tile_grid

SIMILARITIES_PER_CHUNK = 2**25  # floats in one (queries, bank) block: 128 MB in float32
DUPLICATE_THRESHOLD = 0.95  # cosine of h at or above which two images count as near duplicates
ROWS_SHOWN = 32  # queries (neighbours) or pairs (duplicates) drawn in the PNG; the CSV has all
METHODS = ("kcenter", "uncertain")


def read_queries(path: str | os.PathLike, size: int, channels: int) -> ImageDataset:
    """Query images from an image file or a folder of images, decoded as the folder reader does
    (whole images for views of ``size`` px), with ``channels`` channels (1: grey)."""
    path = Path(path)
    decoding = Decoding(image_size=size)
    if path.is_dir():
        queries = read_folder(path, "train", decoding)
    elif path.is_file():
        queries = read_images(path.parent, [path], [UNLABELLED], [], [path.name], decoding)
    else:
        raise UserError(f"--query {path} does not exist; give an image file or a folder of images")
    return match_channels(channels, queries)[0]


@torch.no_grad()
def embed_normalised(encoder: torch.nn.Module, data: ImageDataset, runtime: Runtime) -> Tensor:
    """L2-normalised h (N, D) float32 of ``data`` on the device (evaluation crop at its size)."""
    features, _ = extract(encoder, data, runtime, data.image_size)
    return F.normalize(features.to(runtime.device), dim=1)


def nearest(
    queries: Tensor, bank: Tensor, k: int, *, skip_self: bool = False, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` bank rows most cosine-similar to each query, best first: (cosine (Q, k), index
    (Q, k)), on the features' device.

    ``queries`` (Q, D) and ``bank`` (N, D) are L2-normalised. ``skip_self``: the queries are the
    bank itself, and row i never matches itself. ``chunk`` queries per matrix product (default: as
    many as keep the block within ``SIMILARITIES_PER_CHUNK``). ``k`` is capped at the bank's size.
    """
    k = min(k, bank.shape[0] - int(skip_self))
    chunk = chunk or max(1, SIMILARITIES_PER_CHUNK // max(1, bank.shape[0]))
    cosines, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        similarity = queries[start : start + chunk] @ bank.T  # (q, N)
        if skip_self:
            rows = torch.arange(similarity.shape[0], device=similarity.device)
            similarity[rows, rows + start] = -torch.inf
        top = similarity.topk(k, dim=1)
        cosines.append(top.values)
        indices.append(top.indices)
    empty = queries.new_empty((0, k))
    return (
        torch.cat(cosines) if cosines else empty,
        torch.cat(indices) if indices else empty.long(),
    )


def duplicate_pairs(
    features: Tensor,
    threshold: float,
    k: int,
    against: Tensor | None = None,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Near-duplicate pairs, most similar first: (image (P,), match (P,), cosine (P,)).

    Without ``against``: pairs within ``features`` (N, D), image < match, from each image's ``k``
    nearest others. With ``against`` (M, D): an image of ``features`` and a match in ``against``,
    from each ``against`` row's ``k`` nearest in ``features`` (a leak check). A pair is kept when
    its cosine is at least ``threshold``; ties keep the ascending pair order.
    """
    if against is None:
        cosine, index = nearest(features, features, k, skip_self=True, chunk=chunk)
        rows = torch.arange(len(features), device=index.device)[:, None].expand_as(index)
        keep = cosine >= threshold
        rows, index, cosine = rows[keep], index[keep], cosine[keep]
        pair = torch.minimum(rows, index) * len(features) + torch.maximum(rows, index)
        # each pair once, with the larger of its two cosines (a . b and b . a may round apart)
        key, inverse = torch.unique(pair, return_inverse=True)
        best = cosine.new_full(key.shape, -torch.inf).scatter_reduce(0, inverse, cosine, "amax")
        image, match, cosine = key // len(features), key % len(features), best
    else:
        cosine, index = nearest(against, features, k, chunk=chunk)
        rows = torch.arange(len(against), device=index.device)[:, None].expand_as(index)
        keep = cosine >= threshold
        rows, index, cosine = rows[keep], index[keep], cosine[keep]
        order = torch.argsort(index * len(against) + rows)  # ascending pair order
        image, match, cosine = index[order], rows[order], cosine[order]
    order = torch.argsort(cosine, descending=True, stable=True)
    return image[order], match[order], cosine[order]


def kcenter_greedy(features: Tensor, n: int, labelled: Tensor, seed: int) -> Tensor:
    """``n`` indices picked by k-centre greedy on L2-normalised ``features`` (N, D), in pick order.

    Each pick is the image whose squared distance (2 - 2 cosine) to its nearest centre is largest
    (the first such on ties); centres are the ``labelled`` images and the picks so far. Without
    labelled images the first pick is one image drawn with ``seed``. Labelled images are never
    picked. ``n`` must not exceed the unlabelled images.
    """
    device = features.device
    distance = torch.full((len(features),), torch.inf, device=device)
    labelled = labelled.to(device)
    step = max(1, SIMILARITIES_PER_CHUNK // max(1, len(features)))
    for start in range(0, len(labelled), step):  # distance to the nearest labelled image
        centres = features[labelled[start : start + step]]
        distance = torch.minimum(distance, (2 - 2 * features @ centres.T).amin(1))
    distance[labelled] = -1.0  # below every distance: never picked
    picks = torch.empty(n, dtype=torch.int64, device=device)
    for i in range(n):
        if i == 0 and len(labelled) == 0:
            generator = torch.Generator().manual_seed(seed)
            pick = torch.randint(len(features), (), generator=generator).to(device)
        else:
            pick = distance.argmax()
        picks[i] = pick
        distance = torch.minimum(distance, 2 - 2 * features @ features[pick])
        distance[pick] = -1.0
    return picks


def least_confident(logits: Tensor, n: int, labelled: Tensor, seed: int) -> Tensor:
    """The ``n`` images whose predicted class has the lowest softmax probability, least confident
    first, leaving out ``labelled``; equal confidences in an order drawn with ``seed``."""
    confidence = logits.float().softmax(1).amax(1)
    confidence[labelled.to(confidence.device)] = torch.inf
    order = torch.randperm(len(logits), generator=torch.Generator().manual_seed(seed))
    order = order.to(confidence.device)
    return order[torch.argsort(confidence[order], stable=True)][:n]


def suggest_labels(
    exported: ExportedModel,
    pool: ImageDataset,
    runtime: Runtime,
    n: int,
    labelled: Tensor,
    seed: int = 0,
    method: str = "kcenter",
) -> Tensor:
    """Indices (CPU, in pick order) of the ``n`` images of ``pool`` to label next, none of them
    ``labelled``: k-centre greedy on h (``kcenter``) or the least confident predictions of the
    model's classifier (``uncertain``). Deterministic for a seed on one device."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    labelled = torch.unique(labelled)
    available = len(pool) - len(labelled)
    if n > available:
        raise UserError(
            f"--n {n} is more than the {available} unlabelled images of the pool; ask for at most "
            f"{available}"
        )
    if method == "uncertain" and exported.classifier is None:
        raise UserError(
            "--method uncertain needs a model with a classifier; give a fine-tuned model "
            "(simclrv2 finetune) or use --method kcenter"
        )
    (pool,) = match_channels(exported.encoder.spec.in_channels, pool)
    if method == "kcenter":
        encoder = runtime.module(exported.encoder).eval()
        return kcenter_greedy(embed_normalised(encoder, pool, runtime), n, labelled, seed).cpu()
    classifier = runtime.module(exported.classifier_model()).eval()
    logits, _ = extract(classifier, pool, runtime, pool.image_size)
    return least_confident(logits, n, labelled, seed)


def save_suggestions(
    path: str | os.PathLike, pool: ImageDataset, picks: Tensor, comment: str
) -> None:
    """The picks as a list file, atomically: their file names where the pool has names (for
    :func:`~simclrv2.data.indices_from_names`), else their indices (for
    :func:`~simclrv2.data.load_indices`), after a ``# comment`` line."""
    _output_folder(Path(path).parent)
    if pool.names is None:
        save_indices(path, picks.tolist(), comment)
    else:
        save_names(path, [pool.names[i] for i in picks.tolist()], comment)


def _save_png(path: Path, tiles: Tensor, first_gap: int) -> None:
    with atomic_file(path) as staging:
        tile_grid(tiles, first_gap).save(staging, format="PNG")


def _output_folder(out: str | os.PathLike) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot make the folder {out} ({error.strerror}); choose another --out"
        ) from None
    return out


def _model_inputs(exported: ExportedModel, runtime: Runtime, *datasets: ImageDataset):
    """The encoder on the device, in eval mode, and each data set with the channels it takes."""
    channels = exported.encoder.spec.in_channels
    encoder = runtime.module(exported.encoder).eval()
    return encoder, *match_channels(channels, *datasets)


def neighbours(
    exported: ExportedModel,
    data: ImageDataset,
    queries: ImageDataset,
    runtime: Runtime,
    k: int,
    out: str | os.PathLike,
) -> tuple[Path, Path]:
    """The ``k`` images of ``data`` nearest to each query by cosine of h, written to
    ``out/neighbours.csv`` (query, rank from 1, neighbour, cosine) and ``out/neighbours.png`` (a
    row per query, the first ``ROWS_SHOWN``: the query, then its neighbours). Returns both paths."""
    if queries.image_size != data.image_size:
        queries = queries.resized(data.image_size)
    encoder, data, queries = _model_inputs(exported, runtime, data, queries)
    bank = embed_normalised(encoder, data, runtime)
    cosine, index = (t.cpu() for t in nearest(embed_normalised(encoder, queries, runtime), bank, k))
    query_names, data_names = queries.image_names(), data.image_names()
    rows = (
        (query_names[q], rank + 1, data_names[i], f"{c:.6f}")
        for q, (row, cosines) in enumerate(zip(index.tolist(), cosine.tolist()))
        for rank, (i, c) in enumerate(zip(row, cosines))
    )
    out = _output_folder(out)
    table, picture = out / "neighbours.csv", out / "neighbours.png"
    write_text(table, csv_text(["query", "rank", "neighbour", "cosine"], rows))
    shown = slice(0, ROWS_SHOWN)
    tiles = torch.cat([queries.images[shown, None], data.images[index[shown]]], dim=1)
    _save_png(picture, tiles, ORIGINALS_GAP)
    return table, picture


def duplicates(
    exported: ExportedModel,
    data: ImageDataset,
    runtime: Runtime,
    out: str | os.PathLike,
    threshold: float = DUPLICATE_THRESHOLD,
    k: int = 5,
    against: ImageDataset | None = None,
) -> tuple[Path, Path | None, int]:
    """Near-duplicate pairs within ``data``, or between ``data`` and ``against``
    (:func:`duplicate_pairs`), written to ``out/duplicates.csv`` (image, match, cosine; most
    similar first) and ``out/duplicates.png`` (the first ``ROWS_SHOWN`` pairs, one per row; not
    written when there is no pair). Returns both paths (None: no picture) and the number of pairs."""
    other = data if against is None else against
    if other.image_size != data.image_size:
        other = other.resized(data.image_size)
    encoder, data, other = _model_inputs(exported, runtime, data, other)
    features = embed_normalised(encoder, data, runtime)
    other_features = None if against is None else embed_normalised(encoder, other, runtime)
    image, match, cosine = (
        t.cpu() for t in duplicate_pairs(features, threshold, k, other_features)
    )
    data_names, other_names = data.image_names(), other.image_names()
    rows = (
        (data_names[i], other_names[j], f"{c:.6f}")
        for i, j, c in zip(image.tolist(), match.tolist(), cosine.tolist())
    )
    out = _output_folder(out)
    table, picture = out / "duplicates.csv", out / "duplicates.png"
    write_text(table, csv_text(["image", "match", "cosine"], rows))
    if len(image) == 0:  # no pair to draw; a picture of an earlier run's pairs would mislead
        picture.unlink(missing_ok=True)
        return table, None, 0
    shown = slice(0, ROWS_SHOWN)
    _save_png(picture, torch.stack([data.images[image[shown]], other.images[match[shown]]], 1), GAP)
    return table, picture, len(image)
