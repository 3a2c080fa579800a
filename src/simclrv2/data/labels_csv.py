"""Labels from a CSV file: one row per image, ``path,label``, paths relative to the CSV's folder.

An optional first row ``path,label`` (any capitalisation) is a header. Classes are the distinct
labels in sorted order (label values 0, 1, ...); an empty label leaves the image unlabelled. The
images are decoded as an image folder's are (:func:`simclrv2.data.folder.read_images`), with the
same cache, so a CSV is just another way of saying which file has which label.
"""

from __future__ import annotations

import csv
from pathlib import Path

from simclrv2.data.dataset import UNLABELLED, ImageDataset
from simclrv2.data.folder import IMAGE_SUFFIXES, Decoding, read_images
from simclrv2.errors import UserError

HEADER = ("path", "label")


def read_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, image path as written, label) of each row of a ``path,label`` CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = [(n, row) for n, row in enumerate(csv.reader(file), 1) if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read this CSV ({error}); check the file") from None
    if rows and tuple(cell.strip().lower() for cell in rows[0][1]) == HEADER:
        rows = rows[1:]
    parsed = []
    for number, row in rows:
        if len(row) != 2:
            raise UserError(
                f"{path}:{number}: {len(row)} columns; each row is path,label (quote a comma)"
            )
        parsed.append((number, row[0].strip(), row[1].strip()))
    if not parsed:
        raise UserError(f"{path}: the CSV has no rows; write one path,label row per image")
    return parsed


def read_labels_csv(path: Path, decoding: Decoding) -> ImageDataset:
    """The images a ``path,label`` CSV names, with its labels, decoded as ``decoding`` says; each
    image's name is its path as written in the CSV."""
    root = path.parent
    rows = read_rows(path)
    files, names = [], []
    for number, written, _ in rows:
        file = root / written
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(
                f"{path}:{number}: {written!r} is not an image path "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); the first column is the image's path"
            )
        if not file.is_file():
            raise UserError(
                f"{path}:{number}: {written} does not exist (paths are relative to {root}); "
                "fix the path or remove the row"
            )
        files.append(file)
        names.append(written)
    classes = sorted({label for _, _, label in rows if label})
    value = {name: k for k, name in enumerate(classes)}
    labels = [value[label] if label else UNLABELLED for _, _, label in rows]
    return read_images(root, files, labels, classes, names, decoding)
