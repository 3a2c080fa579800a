"""``--data`` strings to data sets: the embedded default, or a path whose format is detected.

Forms: nothing or ``embedded``; a path (an IDX folder, ...); or a path with an explicit format
prefix, ``idx:/path``, for when detection guesses wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simclrv2.data.dataset import ImageDataset
from simclrv2.data.embedded import load_embedded
from simclrv2.data.idx import idx_directory, read_idx_dir
from simclrv2.errors import UserError

EMBEDDED = "embedded"
# format prefix -> reader of (path, split); each reader checks its files and split names
READERS: dict[str, Callable[[Path, str], ImageDataset]] = {
    "idx": read_idx_dir,
}


def detect_format(path: Path) -> str:
    """The format prefix that reads ``path``, judged from the files it holds."""
    if not path.exists():
        raise UserError(
            f"{path} does not exist; pass a data folder or archive, or nothing for the embedded set"
        )
    if path.is_dir() and idx_directory(path):
        return "idx"
    raise UserError(
        f"{path}: unrecognised data format; prefix the path with one of "
        f"{', '.join(p + ':' for p in READERS)}"
    )


def parse_source(source: str | None) -> tuple[str, Path | None]:
    """(format, path) of a ``--data`` string; the path is None for the embedded set."""
    if source is None or source == EMBEDDED:
        return EMBEDDED, None
    prefix, colon, rest = source.partition(":")
    if colon and prefix in READERS:
        return prefix, Path(rest).expanduser()
    path = Path(source).expanduser()
    return detect_format(path), path


def load_dataset(
    source: str | None,
    split: str = "train",
    *,
    image_size: int | None = None,
    rgb: bool = False,
) -> ImageDataset:
    """The ``split`` ("train", "test", "unlabeled") of a data source, as uint8 images in memory.

    ``source`` is None or "embedded" for the embedded Fashion-MNIST subset, a path (format detected
    from its contents) or ``format:path``. ``image_size`` resizes every image to that side once, at
    load time; ``rgb`` repeats greyscale into 3 channels for tools that need RGB.
    """
    kind, path = parse_source(source)
    dataset = load_embedded(split) if path is None else READERS[kind](path, split)
    if image_size is not None:
        dataset = dataset.resized(image_size)
    return dataset.to_rgb() if rgb else dataset
