"""The one shape every data source ends up in: a uint8 (N, C, S, S) tensor plus int64 labels.

Every reader (IDX, CIFAR, STL-10, image folders, the embedded set) returns an :class:`ImageDataset`
whose images are already decoded onto one square of S px, held in memory or memory-mapped from a
``.npy``/binary file. Arrays fill the square; image folders keep each image whole (aspect kept) in
its top-left corner and record its extent, so that crops are cut from the whole image. A batch is
then one tensor index (``images[idx]``), with no per-image Python during an epoch; augmentation
turns the uint8 batch into float views of ``image_size`` px afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from simclrv2.errors import UserError
from simclrv2.luma import GRAY_WEIGHTS

UNLABELLED = -1  # the label of an image without one (STL-10's unlabeled split, a flat folder)
RESIZE_CHUNK = 1024  # images converted per call (resize, grey), bounding the float32 working memory


class ImageDataset(Dataset):
    """Decoded images on squares, with labels, indexable by tensors.

    ``images`` is uint8 (N, C, S, S), C = 1 (greyscale), 3 (RGB) or a band count; it may be a
    non-contiguous view (STL-10's column-major files, :meth:`to_rgb`) or memory-mapped. ``labels``
    is int64 (N,), -1 for unlabelled images. ``classes`` names the label values 0..K-1; ``names``
    optionally gives each image's file name (image folders, CIFAR), for file-name subsets and
    ``embed`` output; ``skipped`` the (name, problem) of each file of the source that could not be
    decoded. ``extents`` (N, 2) int64 gives each image's (height, width) where whole images of
    different shapes sit top-left on the square (image folders; None: each fills it), and
    ``view_size`` the side of the views the network sees (None: S).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        classes: Sequence[str] = (),
        names: Sequence[str] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
        extents: Tensor | None = None,
        view_size: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"images must be uint8 (N, C, S, S), got {images.dtype} {tuple(images.shape)}"
            )
        n = images.shape[0]
        if labels is None:
            labels = torch.full((n,), UNLABELLED, dtype=torch.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if names is not None and len(names) != n:
            raise ValueError(f"names must have {n} entries, got {len(names)}")
        if extents is not None and (
            extents.shape != (n, 2)
            or bool((extents < 1).any() | (extents > images.shape[-1]).any())
        ):
            raise ValueError(f"extents must be (N, 2) sides in [1, {images.shape[-1]}]")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)
        self.names = None if names is None else list(names)
        self.skipped = [tuple(entry) for entry in skipped]
        self.extents = None if extents is None else extents.to(torch.int64)
        self.view_size = view_size

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        labelled = int((self.labels != UNLABELLED).sum())
        side, stored = self.image_size, self.stored_size
        whole = f", whole images on {stored} px squares" if self.extents is not None else ""
        return (
            f"ImageDataset({len(self)} images of {self.channels}x{side}x{side}{whole}, "
            f"{labelled} labelled, {self.num_classes} classes)"
        )

    def _replaced(self, **changes) -> ImageDataset:
        """This data set with some of its constructor's arguments changed."""
        arguments = {
            "images": self.images,
            "labels": self.labels,
            "classes": self.classes,
            "names": self.names,
            "skipped": self.skipped,
            "extents": self.extents,
            "view_size": self.view_size,
        }
        return ImageDataset(**(arguments | changes))

    def image_names(self) -> list[str]:
        """Each image's name: its file name where the source has names, else its index."""
        return self.names or [str(i) for i in range(len(self))]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side of the views the network sees, in pixels (of the stored squares for arrays)."""
        return self.view_size or self.stored_size

    @property
    def stored_size(self) -> int:
        """Side of the stored squares, in pixels."""
        return self.images.shape[-1]

    def describe(self, labels: bool = True) -> dict:
        """What a model card says of this data (JSON, small): the image count and, with
        ``labels``, the labelled count and the labels per class name."""
        if not labels:
            return {"images": len(self)}
        counts = torch.bincount(self.labels[self.labels >= 0], minlength=self.num_classes)
        return {
            "images": len(self),
            "labelled": int(counts.sum()),
            "labels_per_class": dict(zip(self.classes, counts.tolist())),
        }

    def subset(self, indices: Tensor | Sequence[int]) -> ImageDataset:
        """The images at ``indices`` (in that order), copied into memory."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        names = None if self.names is None else [self.names[i] for i in indices.tolist()]
        extents = None if self.extents is None else self.extents[indices]
        return self._replaced(
            images=self.images[indices],
            labels=self.labels[indices],
            names=names,
            skipped=(),
            extents=extents,
        )

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(images, labels, (height, width)) of the images at ``index`` (int64): new contiguous
        tensors, also from a memory map or a non-contiguous view (``torch.index_select``, which
        runs without the GIL); the whole square where no extents are recorded."""
        return tuple(
            torch.index_select(tensor, 0, index)
            for tensor in (self.images, self.labels, self.image_extents())
        )

    def slice(self, start: int, stop: int) -> ImageDataset:
        """Images ``start`` to ``stop`` as views (no copy), with their labels and extents."""
        part = slice(start, stop)
        return self._replaced(
            images=self.images[part],
            labels=self.labels[part],
            names=None if self.names is None else self.names[part],
            skipped=(),
            extents=None if self.extents is None else self.extents[part],
        )

    def image_extents(self) -> Tensor:
        """Each image's (height, width) on its square, (N, 2) int64: as recorded, or the whole
        square (a broadcast view)."""
        if self.extents is not None:
            return self.extents
        return torch.tensor([self.stored_size] * 2).expand(len(self), 2)

    def without_labels(self) -> ImageDataset:
        """The same images, every label -1 (the classes kept, for reference)."""
        return self._replaced(labels=None)

    def content_hashes(self) -> list[str]:
        """A SHA-1 of each image's decoded pixels (hex): equal images, equal hashes."""
        flat = self.images.reshape(len(self), -1)
        return [hashlib.sha1(row.contiguous().numpy().tobytes()).hexdigest() for row in flat]

    def to_rgb(self) -> ImageDataset:
        """Greyscale repeated into 3 equal channels, as a view (no copy); RGB data is returned."""
        if self.channels == 3:
            return self
        return self._replaced(images=self.images.expand(-1, 3, -1, -1), skipped=())

    def to_grey(self) -> ImageDataset:
        """RGB as one channel, 0.2989 R + 0.5870 G + 0.1140 B rounded (the augmentation's
        grayscale), in memory, in chunks; greyscale data is returned."""
        if self.channels == 1:
            return self
        weights = torch.tensor(GRAY_WEIGHTS)[:, None, None]
        out = torch.empty((len(self), 1, self.stored_size, self.stored_size), dtype=torch.uint8)
        for start in range(0, len(self), RESIZE_CHUNK):
            chunk = (self.images[start : start + RESIZE_CHUNK].float() * weights).sum(1, True)
            out[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        return self._replaced(images=out, skipped=())

    def is_grey(self) -> bool:
        """Whether every image is grey: one channel, or channels equal pixel for pixel (grey
        images decoded as RGB, as image folders are), read in chunks up to the first colour."""
        if self.channels == 1:
            return True
        for start in range(0, len(self), RESIZE_CHUNK):
            chunk = self.images[start : start + RESIZE_CHUNK]
            if not (chunk == chunk[:, :1]).all():
                return False
        return True

    def with_channels(self, channels: int) -> ImageDataset:
        """The images as an encoder taking ``channels`` channels reads them: grey images
        repeated to 3 channels for an RGB encoder, grey images stored as RGB made one channel
        (exactly) for a grey one; any other difference is a one-line error with both counts."""
        if channels == self.channels:
            return self
        if channels == 3 and self.channels == 1:
            return self.to_rgb()
        if channels == 1 and self.is_grey():
            return self.to_grey()
        kind = " (colour)" if self.channels == 3 else ""
        raise UserError(
            f"the images have {self.channels} channels{kind} but the model takes {channels}; "
            f"give {channels}-channel images, or a model that takes {self.channels} channels "
            "(one trained on such images)"
        )

    def resized(self, size: int) -> ImageDataset:
        """All images resized to ``size`` px once, bicubic (the reference's filter), antialiased.

        Returns ``self`` when already that size; the result is in memory even if ``self`` is mapped.
        Whole images (``extents``) are kept as they are, with views of ``size`` px cut from them.
        """
        if size == self.image_size:
            return self
        if self.extents is not None:
            return self._replaced(view_size=size)
        out = torch.empty((len(self), self.channels, size, size), dtype=torch.uint8)
        for start in range(0, len(self), RESIZE_CHUNK):
            chunk = self.images[start : start + RESIZE_CHUNK].float()
            chunk = F.interpolate(chunk, size=(size, size), mode="bicubic", antialias=True)
            out[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        return self._replaced(images=out, skipped=())


def concatenate(parts: Sequence[ImageDataset], classes: Sequence[str]) -> ImageDataset:
    """The images of ``parts`` one after the other, in memory, labelled as each part is (their
    label values must name ``classes``). Parts of one size; if any is RGB, grey parts are repeated
    into 3 channels (the mixed-folder rule). Whole images stored on squares of different sides
    go onto the largest, with their extents. Names are kept when every part has them."""
    if len({part.image_size for part in parts}) > 1:
        raise ValueError("concatenated data sets must share one image size")
    rgb = any(part.channels == 3 for part in parts)
    parts = [part.to_rgb() if rgb else part for part in parts]
    names = None
    if all(part.names is not None for part in parts):
        names = [name for part in parts for name in part.names]
    stored = max(part.stored_size for part in parts)
    extents = None
    if any(part.extents is not None or part.stored_size < stored for part in parts):
        extents = torch.cat([part.image_extents() for part in parts])
    return ImageDataset(
        torch.cat([_padded(part.images, stored) for part in parts]),
        torch.cat([part.labels for part in parts]),
        classes,
        names,
        [entry for part in parts for entry in part.skipped],
        extents,
        parts[0].image_size if extents is not None else None,
    )


def _padded(images: Tensor, side: int) -> Tensor:
    """``images`` on squares of ``side`` px, zero below and to the right."""
    pad = side - images.shape[-1]
    return F.pad(images, (0, pad, 0, pad)) if pad else images


def check_split(split: str, valid: Sequence[str], source: object) -> None:
    """One-line error for a split name that ``source`` does not have."""
    if split not in valid:
        raise UserError(f"{source} has no split {split!r}; valid splits: {', '.join(valid)}")
