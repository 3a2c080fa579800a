"""A user's own images, written by the tests as PNG files: a flat unlabelled pool, labelled class
folders with uneven classes, the same labels as a CSV, and a labelled test folder. The pictures
are real Fashion-MNIST images (the embedded subset), so the folders hold what a user's would."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from simclrv2.data import load_dataset

CLASSES = ("bag", "coat", "sneaker")  # folder names; Fashion-MNIST classes 8, 4 and 7
SOURCE_CLASS = {"bag": 8, "coat": 4, "sneaker": 7}
LABELLED = {"bag": 10, "coat": 6, "sneaker": 3}  # uneven, as a user's labels are
POOL = 48
TEST_PER_CLASS = 4


def _save(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[0].numpy()).save(path)


def write_own_images(root: Path) -> Path:
    """``root/pool/*.png`` (unlabelled, of the three classes), ``root/labelled/<class>/*.png``,
    ``root/labels.csv`` (the same labelled images by path) and ``root/test/<class>/*.png``."""
    train, test = load_dataset(None, "train"), load_dataset(None, "test")
    rows = ["path,label"]
    used = 0
    for name in CLASSES:
        of_class = (train.labels == SOURCE_CLASS[name]).nonzero().squeeze(1)
        for i in range(LABELLED[name]):
            path = f"labelled/{name}/{name}-{i:02d}.png"
            _save(train.images[of_class[i]], root / path)
            rows.append(f"{path},{name}")
        for i in range(POOL // len(CLASSES)):
            _save(train.images[of_class[100 + i]], root / "pool" / f"{used:03d}.png")
            used += 1
        of_class = (test.labels == SOURCE_CLASS[name]).nonzero().squeeze(1)
        for i in range(TEST_PER_CLASS):
            _save(test.images[of_class[i]], root / "test" / name / f"{name}-{i}.png")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
