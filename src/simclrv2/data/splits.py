"""Which labelled images train and which validate: label fractions (SimCLRv2's 1% and 10%
subsets) and the stratified validation hold-out.

:func:`labelled_indices` reads every form a user writes (``--labels``): every labelled image
(``all``), a class-balanced seeded draw (by fraction or by count per class), an index file saved
by a previous run, or a list of file names in the shape of the authors' ImageNet
``1percent.txt`` / ``10percent.txt`` (one name per line, e.g. ``n01558993_4148.JPEG``).
:func:`stratified_holdout` sets a validation split aside before any of these are drawn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from simclrv2.atomic import write_text
from simclrv2.data.dataset import ImageDataset
from simclrv2.errors import UserError


def _by_class_in_random_order(labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(indices of the labelled images sorted by class, in a seeded random order within each
    class; each one's rank within its class)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order[labels[order] >= 0]
    by_class = order[torch.sort(labels[order], stable=True).indices]
    sorted_labels = labels[by_class]
    return by_class, torch.arange(len(by_class)) - torch.searchsorted(sorted_labels, sorted_labels)


def stratified_holdout(
    labels: Tensor, fraction: float, seed: int, classes: list[str]
) -> tuple[Tensor, Tensor]:
    """(kept, held out): ascending indices of the labelled images split per class, the held-out
    share of each class ``max(1, round(fraction * count))`` images drawn with ``seed``, and at
    least one image of each class kept. ``fraction`` 0 holds nothing out."""
    labelled = (labels >= 0).nonzero().squeeze(1)
    if fraction == 0:
        return labelled, labelled[:0]
    counts = torch.bincount(labels[labels >= 0], minlength=len(classes))
    if (counts < 2).any():
        short = int(counts.argmin())
        raise UserError(
            f"class {classes[short]!r} has {int(counts[short])} labelled images, too few to hold "
            "one out for validation and train on another; label more, or set "
            "data.validation_fraction=0"
        )
    held_per_class = (fraction * counts).round().long().clamp(min=1).minimum(counts - 1)
    by_class, rank = _by_class_in_random_order(labels, seed)
    held = rank < held_per_class[labels[by_class]]
    return by_class[~held].sort().values, by_class[held].sort().values


def class_balanced_indices(
    labels: Tensor,
    *,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int,
    of: int | None = None,
) -> Tensor:
    """Ascending indices of a seeded subset holding the same number of images of every class.

    Either ``per_class`` images of each class, or ``fraction`` of ``of`` images (default: the
    labelled ones) shared equally between the classes: ``round(fraction * of / classes)`` each
    (1% of the 60,000 Fashion-MNIST train images is 60 per class). Unlabelled images (-1) are
    never picked. Every
    subset is the head of each class in one seeded permutation, so for one seed a smaller subset
    lies inside a larger one (the 1% inside the 10%).
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction and per_class")
    labelled = labels >= 0
    classes, counts = torch.unique(labels[labelled], return_counts=True)
    if len(classes) == 0:
        raise UserError("no image has a label, so there is no labelled subset to draw")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise UserError(f"label fraction must be in (0, 1], got {fraction}")
        per_class = round(fraction * (of or int(counts.sum())) / len(classes))
        if per_class == 0:
            raise UserError(
                f"a label fraction of {fraction} is less than one image per class; ask for more"
            )
    if per_class < 1:
        raise UserError(f"images per class must be at least 1, got {per_class}")
    if (counts < per_class).any():
        short = int(counts.argmin())
        raise UserError(
            f"class {int(classes[short])} has only {int(counts[short])} labelled images, fewer "
            f"than the {per_class} per class asked for; ask for fewer"
        )
    by_class, rank = _by_class_in_random_order(labels, seed)
    return by_class[rank < per_class].sort().values


def balanced_oversample(labels: Tensor, seed: int) -> Tensor:
    """Indices that repeat each class's labelled images up to the largest class's count: whole
    copies, then a seeded draw without replacement for the rest, so every class is seen equally
    often in an epoch (class-balanced sampling of uneven labels)."""
    by_class, _ = _by_class_in_random_order(labels, seed)
    counts = torch.bincount(labels[by_class])
    largest = int(counts.max())
    picks = []
    for k in counts.nonzero().squeeze(1).tolist():
        members = by_class[labels[by_class] == k]  # in random order
        picks.append(members[torch.arange(largest) % len(members)])
    return torch.cat(picks)


PER_CLASS = "-per-class"
ALL = "all"


def labelled_indices(
    dataset: ImageDataset, spec: str | float, seed: int, of: int | None = None
) -> Tensor:
    """The indices a label spec names: every labelled image ("all", uneven classes as they are);
    a fraction (0.01 or "1%", of ``of`` images, default the labelled ones) or a count per class
    ("25-per-class"), drawn class-balanced with ``seed``; or a file, either an index file that
    :func:`save_indices` wrote or a list of file names (the authors' ImageNet subsets)."""
    if not isinstance(spec, str):
        return class_balanced_indices(dataset.labels, fraction=spec, seed=seed, of=of)
    text = spec.strip()
    if text == ALL:
        return (dataset.labels >= 0).nonzero().squeeze(1)
    count = text.removesuffix(PER_CLASS)
    if text.endswith(PER_CLASS) and count.isdigit():
        return class_balanced_indices(dataset.labels, per_class=int(count), seed=seed)
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        if not Path(text).is_file():
            raise UserError(
                f"--labels {text!r} is neither {ALL}, a fraction (0.01, 1%), a count "
                f"(25{PER_CLASS}) nor an existing file"
            ) from None
        return indices_from_file(dataset, text)
    if not 0 < fraction <= 1:
        raise UserError(f"--labels {text!r} must be a fraction in (0, 1], e.g. 0.01 or 1%")
    return class_balanced_indices(dataset.labels, fraction=fraction, seed=seed, of=of)


def indices_from_file(dataset: ImageDataset, path: str | os.PathLike) -> Tensor:
    """The indices a list file names: an index file (:func:`save_indices`), else a list of file
    names (:func:`indices_from_names`)."""
    try:
        return load_indices(path, size=len(dataset))
    except UserError:
        return indices_from_names(dataset, path)


def _save_lines(path: str | os.PathLike, entries: Iterable[str], comment: str) -> None:
    lines = [f"# {comment}"] if comment else []
    write_text(path, "\n".join([*lines, *entries]) + "\n")


def save_indices(path: str | os.PathLike, indices: Iterable[int], comment: str = "") -> None:
    """Write indices as text, one per line, after an optional ``# comment`` line (provenance);
    atomically."""
    _save_lines(path, (str(int(i)) for i in indices), comment)


def save_names(path: str | os.PathLike, names: Iterable[str], comment: str = "") -> None:
    """Write file names, one per line, after an optional ``# comment`` line, atomically: the list
    that :func:`indices_from_names` reads."""
    _save_lines(path, names, comment)


def _entries(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line of a list file that is not a ``#`` comment."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error}); check the path") from None
    stripped = ((n, line.strip()) for n, line in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in stripped if line and not line.startswith("#")]


def load_indices(path: str | os.PathLike, size: int | None = None) -> Tensor:
    """Indices saved by :func:`save_indices`; with ``size``, each must be a valid index below it."""
    path = Path(path)
    indices = []
    for number, text in _entries(path):
        if not text.isdigit():
            raise UserError(f"{path}:{number}: {text!r} is not an image index")
        indices.append(int(text))
        if size is not None and indices[-1] >= size:
            raise UserError(
                f"{path}:{number}: index {text} is out of range for a data set of {size} images; "
                "the index file was made for another data set"
            )
    return torch.tensor(indices, dtype=torch.int64)


def indices_from_names(dataset: ImageDataset, names_file: str | os.PathLike) -> Tensor:
    """Indices of the images listed by file name, one per line, in the file's order.

    A listed name matches an image's name or its last path component, so the authors' ImageNet
    lists (``n01558993_4148.JPEG``) match images found as ``n01558993/n01558993_4148.JPEG``.
    """
    path = Path(names_file)
    if dataset.names is None:
        raise UserError(
            f"{path}: this data set has no file names to match; file lists work with image folders"
        )
    by_base: dict[str, int | None] = {}  # None: several images share this last component
    for index, name in enumerate(dataset.names):
        base = Path(name).name
        by_base[base] = None if base in by_base else index
    where = by_base | {name: index for index, name in enumerate(dataset.names)}
    entries = _entries(path)
    missing = [(n, text) for n, text in entries if text not in where]
    if missing:
        number, text = missing[0]
        raise UserError(
            f"{path}:{number}: {text!r} is not in the data set ({len(missing)} of {len(entries)} "
            "listed names are missing); the list was made for another data set"
        )
    ambiguous = [(n, text) for n, text in entries if where[text] is None]
    if ambiguous:
        number, text = ambiguous[0]
        raise UserError(
            f"{path}:{number}: several images are named {text!r}; list them by path in the folder"
        )
    return torch.tensor([where[text] for _, text in entries], dtype=torch.int64)
