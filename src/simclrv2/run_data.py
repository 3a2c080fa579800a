"""The images of a run by role: the pool, the labelled training images, validation and test.

- ``pool``: every image, for pretraining and distillation; labels only on the training images
  (pretraining's online classifier and kNN bank read them; the contrastive loss never does).
- ``train``: the labelled images with the validation split's labels hidden (-1); fine-tuning,
  the supervised baseline and linear evaluation draw from these.
- ``validation``: held out from the labelled images, stratified and seeded
  (``data.validation_fraction``, at least one image per class); every choice a run makes reads it.
- ``test``: optional; reported, never used to choose.

Two ways to name them (README): the benchmark protocol, ``data.source``, whose train split is the
labelled set (labels hidden but for the label fractions), its unlabelled split and its test split
joining when it has them; or your own images, ``data.labelled`` and any ``data.unlabelled``
pools. ``data.test`` names a test set in both, and ``data.unlabelled`` adds pools in both. Every
source is decoded at one image size, that of the first one loaded; if any source is RGB, grey
ones are repeated into three channels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from simclrv2 import build
from simclrv2.config import DataConfig
from simclrv2.data import ImageDataset, load_dataset, save_indices, save_names
from simclrv2.data.dataset import UNLABELLED, concatenate
from simclrv2.data.sources import source_splits
from simclrv2.data.splits import ALL, stratified_holdout
from simclrv2.errors import UserError
from simclrv2.metrics import LOG
from simclrv2.scores import TEST, VALIDATION

VALIDATION_LIST = "validation.txt"  # the validation split's file names (or indices), in a run


@dataclass
class RunData:
    pool: ImageDataset
    train: ImageDataset | None  # None: no labelled images (pretraining alone)
    validation: ImageDataset | None
    test: ImageDataset | None
    labelled_count: int  # labelled images before the hold-out: what label fractions are of
    validation_indices: list[int]  # into the labelled source, for the saved list
    own: bool  # data.labelled or data.unlabelled given (your images), not the benchmark

    @property
    def evaluation(self) -> dict[str, ImageDataset]:
        """The labelled splits scores are reported on, by role: validation, then test."""
        splits = {VALIDATION: self.validation, TEST: self.test}
        return {name: data for name, data in splits.items() if data is not None}

    @property
    def default_labels(self) -> str:
        """The label spec of fine-tuning when none is given: every label of your own images, the
        smallest of SimCLRv2's fractions for the benchmark."""
        return ALL if self.own else "1%"

    def summary(self) -> str:
        """One line of what the run reads, for its log."""
        training = 0 if self.train is None else int((self.train.labels >= 0).sum())
        classes = 0 if self.train is None else self.train.num_classes
        sizes = {name: len(data) for name, data in self.evaluation.items()}
        return (
            f"data: {len(self.pool)} images in the pool, {training} labelled for training "
            f"({classes} classes), {sizes.get(VALIDATION, 0)} validation, {sizes.get(TEST, 0)} test"
        )

    def labelled(self) -> ImageDataset:
        """The training images with labels; a one-line error when the run has none."""
        if self.train is None:
            raise UserError("this needs labelled images; pass --labelled (class folders or a CSV)")
        return self.train

    def save_validation_list(self, directory: str | os.PathLike) -> None:
        """Write the validation split as ``validation.txt`` in ``directory``: the images' file
        names when the labelled source has them, else their indices into it."""
        if self.train is None:
            return
        path = Path(directory) / VALIDATION_LIST
        comment = f"the validation split: {len(self.validation_indices)} labelled images"
        names = self.train.names
        if names is None:
            save_indices(path, self.validation_indices, comment)
        else:
            save_names(path, [names[i] for i in self.validation_indices], comment)


def _loader(settings: DataConfig):
    def load(source: str | None, split: str, image_size: int | None) -> ImageDataset:
        return load_dataset(source, split, image_size=image_size, **build.decoding(settings))

    return load


def _own_split(source: str, wanted: str) -> str:
    """The split of a source a role reads: ``wanted`` when it has it, else its only one."""
    splits = source_splits(source)
    return wanted if wanted in splits else splits[0]


def _aligned(data: ImageDataset, classes: list[str], role: str) -> ImageDataset:
    """``data`` with its labels renumbered to ``classes`` by class name."""
    if data.classes == classes:
        return data
    unknown = [name for name in data.classes if name not in classes]
    if unknown:
        raise UserError(
            f"the {role} set has class {unknown[0]!r}, which the labelled set does not have "
            f"({', '.join(classes)}); rename or remove it"
        )
    where = {name: k for k, name in enumerate(classes)}
    lookup = [where[name] for name in data.classes]
    labels = data.labels.clone()
    known = labels >= 0
    labels[known] = labels.new_tensor(lookup)[labels[known]]
    return ImageDataset(data.images, labels, classes, data.names, data.skipped)


def _warn_shared(labelled: ImageDataset, test: ImageDataset) -> None:
    """Warn, with the count, of test images whose pixels equal a labelled image's."""
    seen = set(labelled.content_hashes())
    shared = sum(digest in seen for digest in test.content_hashes())
    if shared:
        LOG.warning(
            "%d of the %d test images are also in the labelled set (the same pixels); their "
            "scores are not held out: remove them from one of the two",
            shared,
            len(test),
        )


def _load_sources(
    settings: DataConfig, with_pools: bool
) -> tuple[ImageDataset | None, list[ImageDataset], ImageDataset | None]:
    """(the labelled set, the unlabelled pools, the test set) the settings name, each decoded at
    the side of the first one loaded."""
    load, size = _loader(settings), settings.image_size
    labelled, pools, test = None, [], None
    if not settings.own_images:  # the benchmark protocol
        splits = source_splits(settings.source)
        labelled = load(settings.source, "train", size)
        if settings.unlabelled_split in splits and with_pools:
            pools.append(load(settings.source, settings.unlabelled_split, labelled.image_size))
        if settings.test is None and settings.test_split in splits:
            test = load(settings.source, settings.test_split, labelled.image_size)
    elif settings.labelled is not None:
        labelled = load(settings.labelled, _own_split(settings.labelled, "train"), size)
    for source in settings.unlabelled if with_pools or labelled is None else ():
        pools.append(load(source, _own_split(source, "unlabeled"), size or _size(labelled, pools)))
    if settings.test is not None:
        test = load(settings.test, _own_split(settings.test, "test"), _size(labelled, pools))
    return labelled, pools, test


def load_run_data(settings: DataConfig, with_pools: bool = True) -> RunData:
    """Every image the ``data`` settings name, by role (the module docstring); without
    ``with_pools``, the labelled ones alone (for a report: the pool is then the training images)."""
    if settings.source is not None and settings.labelled is not None:
        raise UserError(
            "data.source (the benchmark protocol) and data.labelled (your labelled images) "
            "exclude each other; give --data or --labelled, not both"
        )
    own = settings.own_images
    labelled, pools, test = _load_sources(settings, with_pools)
    labelled_count = 0 if labelled is None else int((labelled.labels >= 0).sum())
    if labelled_count == 0:  # no labels at all (a flat folder): a pretraining run
        unlabelled = pools if labelled is None else [labelled, *pools]
        return RunData(_pool(None, unlabelled), None, None, None, 0, [], own)

    classes = labelled.classes
    present = int(labelled.labels[labelled.labels >= 0].unique().numel())
    if present < 2:
        raise UserError(
            f"the labelled set has {present} class ({', '.join(classes)}); a classifier needs at "
            "least two: add class folders (or CSV labels) of another class"
        )
    if test is not None:
        test = _aligned(test, classes, "test")
        if own or settings.test is not None:
            _warn_shared(labelled, test)
    _, held = stratified_holdout(
        labelled.labels, settings.validation_fraction, settings.validation_seed, classes
    )
    labels = labelled.labels.clone()
    labels[held] = UNLABELLED  # validation: out of every labelled use, in the pool unlabelled
    train = ImageDataset(labelled.images, labels, classes, labelled.names, labelled.skipped)
    validation = labelled.subset(held) if len(held) else None
    if any(d.channels == 3 for d in (labelled, *pools, *([test] if test else []))):
        train, validation, test = (d.to_rgb() if d else d for d in (train, validation, test))
    pool = _pool(train, pools)
    return RunData(pool, train, validation, test, labelled_count, held.tolist(), own)


def _size(labelled: ImageDataset | None, pools: list[ImageDataset]) -> int | None:
    """The image side of the first source loaded."""
    first = labelled if labelled is not None else next(iter(pools), None)
    return None if first is None else first.image_size


def _pool(train: ImageDataset | None, pools: list[ImageDataset]) -> ImageDataset:
    """The training images (labels kept) followed by the unlabelled pools (labels dropped); the
    training images themselves, without a copy, when there is no other pool."""
    unlabelled = [pool.without_labels() for pool in pools]
    parts = ([train] if train is not None else []) + unlabelled
    if not parts:
        raise UserError("no images: pass --labelled, --unlabelled or --data")
    if len(parts) == 1 and train is not None:
        return train
    classes = train.classes if train is not None else []
    return concatenate(parts, classes)
