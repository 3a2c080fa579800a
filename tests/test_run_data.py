"""The images of a run by role (simclrv2.run_data): your own folders, CSV labels, the held-out
validation split, the benchmark's unlabelled split, and the bad inputs a user gives."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from own_images import CLASSES, LABELLED, POOL, TEST_PER_CLASS, write_own_images
from PIL import Image

from simclrv2.config import DataConfig
from simclrv2.data import load_dataset
from simclrv2.errors import UserError
from simclrv2.run_data import load_run_data


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return write_own_images(tmp_path_factory.mktemp("own"))


def settings(**fields) -> DataConfig:
    return replace(DataConfig(num_workers=1, validation_fraction=0.2), **fields)


def test_two_folders_give_every_role(own):
    data = load_run_data(settings(labelled=str(own / "labelled"), unlabelled=[str(own / "pool")]))
    labelled = sum(LABELLED.values())
    assert data.own and data.test is None and data.default_labels == "all"
    assert data.train.classes == list(CLASSES)
    assert len(data.pool) == labelled + POOL  # every image, for pretraining and distillation
    assert (data.pool.labels[labelled:] == -1).all()  # the pool's labels are never read
    counts = torch.bincount(data.validation.labels, minlength=3).tolist()
    expected = [max(1, round(0.2 * n)) for n in LABELLED.values()]
    assert counts == expected  # stratified, at least one per class
    training = data.train.labels >= 0
    assert int(training.sum()) == labelled - sum(expected)
    held = torch.tensor(data.validation_indices)
    assert (data.train.labels[held] == -1).all()  # validation labels are hidden from training
    assert (data.pool.labels[:labelled] == data.train.labels).all()
    assert list(data.evaluation) == ["validation"]


def test_the_validation_split_is_seeded_and_saved_by_name(own, tmp_path):
    config = settings(labelled=str(own / "labelled"))
    first, again = load_run_data(config), load_run_data(config)
    other = load_run_data(replace(config, validation_seed=1))
    assert first.validation_indices == again.validation_indices
    assert first.validation_indices != other.validation_indices
    first.save_validation_list(tmp_path)
    listed = [
        line for line in (tmp_path / "validation.txt").read_text().splitlines() if line[0] != "#"
    ]
    assert listed == [first.train.names[i] for i in first.validation_indices]
    assert all(name.split("/")[0] in CLASSES for name in listed)


def test_csv_labels_equal_the_class_folders(own):
    from_csv = load_run_data(settings(labelled=str(own / "labels.csv")))
    from_folders = load_run_data(settings(labelled=str(own / "labelled")))
    assert from_csv.train.classes == from_folders.train.classes
    assert torch.equal(from_csv.train.images, from_folders.train.images)
    assert torch.equal(from_csv.train.labels, from_folders.train.labels)


def test_a_test_folder_is_aligned_by_class_name_and_reported(own, tmp_path):
    # a test set with only two of the three classes: its labels follow the labelled classes
    for name in ("coat", "sneaker"):
        for path in (own / "test" / name).iterdir():
            target = tmp_path / "test" / name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    data = load_run_data(settings(labelled=str(own / "labelled"), test=str(tmp_path / "test")))
    assert data.test.classes == list(CLASSES)
    assert sorted(set(data.test.labels.tolist())) == [1, 2]
    assert list(data.evaluation) == ["validation", "test"]


def test_an_unknown_test_class_is_a_one_line_error(own, tmp_path):
    (tmp_path / "test" / "hat").mkdir(parents=True)
    source = own / "test" / "coat" / "coat-0.png"
    (tmp_path / "test" / "hat" / "x.png").write_bytes(source.read_bytes())
    with pytest.raises(UserError, match="class 'hat'.*rename or remove"):
        load_run_data(settings(labelled=str(own / "labelled"), test=str(tmp_path / "test")))


def test_test_images_equal_to_labelled_ones_are_counted_in_a_warning(own, tmp_path, caplog):
    for i, name in enumerate(("coat-00.png", "coat-01.png")):
        target = tmp_path / "test" / "coat" / f"copy{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((own / "labelled" / "coat" / name).read_bytes())
    with caplog.at_level(logging.WARNING, logger="simclrv2"):
        load_run_data(settings(labelled=str(own / "labelled"), test=str(tmp_path / "test")))
    assert "2 of the 2 test images are also in the labelled set" in caplog.text


def test_unlabelled_alone_is_a_pretraining_run(own):
    data = load_run_data(settings(unlabelled=[str(own / "pool")]))
    assert data.train is None and data.evaluation == {} and len(data.pool) == POOL
    with pytest.raises(UserError, match="pass --labelled"):
        data.labelled()


def test_a_pool_with_class_folders_gives_no_labels(own):
    data = load_run_data(settings(labelled=str(own / "labelled"), unlabelled=[str(own / "test")]))
    assert (data.pool.labels[sum(LABELLED.values()) :] == -1).all()
    assert len(data.pool) == sum(LABELLED.values()) + 3 * TEST_PER_CLASS


def test_grey_labelled_and_rgb_pool_become_three_channels(own, tmp_path):
    (tmp_path / "rgb").mkdir()
    Image.fromarray(np.full((28, 28, 3), (200, 10, 10), np.uint8)).save(tmp_path / "rgb" / "a.png")
    data = load_run_data(settings(labelled=str(own / "labelled"), unlabelled=[str(tmp_path / "rgb")]))
    assert data.pool.channels == data.train.channels == data.validation.channels == 3


def test_a_split_of_a_source_is_named_with_an_at(tmp_path):
    root = tmp_path / "root"
    for split in ("train", "unlabeled"):
        (root / split / ("x" if split == "train" else "")).mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.zeros((8, 8), np.uint8))
    image.save(root / "train" / "x" / "a.png")
    image.save(root / "unlabeled" / "b.png")
    assert load_dataset(f"{root}@unlabeled").names == ["b.png"]
    assert load_dataset(f"folder:{root}@train").names == ["x/a.png"]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("one_class", "labelled set has 1 class .*at least two"),
        ("empty_class", "class folder holds no images"),
        ("undecodable_class", "class 'b' has no decodable image"),
        ("single_image_class", "too few to hold one out for validation"),
    ],
)
def test_bad_labelled_sets_are_one_line_errors(tmp_path, make, error):
    root = tmp_path / "labelled"
    good = Image.fromarray(np.zeros((8, 8), np.uint8))
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    for i in range(3):
        good.save(root / "a" / f"{i}.png")
    if make == "one_class":
        (root / "b").rmdir()
    elif make == "undecodable_class":
        (root / "b" / "0.png").write_bytes(b"not a png")
    elif make == "single_image_class":
        good.save(root / "b" / "0.png")
    with pytest.raises(UserError, match=error) as raised:
        load_run_data(settings(labelled=str(root)))
    assert "\n" not in str(raised.value)


def test_an_undecodable_pool_is_a_one_line_error(tmp_path, own):
    (tmp_path / "pool").mkdir()
    for i in range(2):
        (tmp_path / "pool" / f"{i}.png").write_bytes(b"broken")
    with pytest.raises(UserError, match="none of the 2 images can be"):
        load_run_data(settings(labelled=str(own / "labelled"), unlabelled=[str(tmp_path / "pool")]))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("labelled/bag/missing.png,bag", r"labels.csv:2: labelled/bag/missing.png does not exist"),
        ("notes.txt,bag", r"labels.csv:2: 'notes.txt' is not an image path"),
        ("labelled/bag/bag-00.png", r"labels.csv:2: 1 columns"),
    ],
)
def test_bad_csv_rows_name_the_line(own, tmp_path, row, error):
    csv = own / f"bad-{abs(hash(row))}.csv"
    csv.write_text(f"path,label\n{row}\n")
    with pytest.raises(UserError, match=error.replace("labels.csv", csv.name)):
        load_run_data(settings(labelled=str(csv)))


def test_data_source_and_labelled_exclude_each_other(own):
    with pytest.raises(UserError, match="exclude each other"):
        load_run_data(settings(source="embedded", labelled=str(own / "labelled")))


def test_benchmark_validation_is_held_out_of_the_train_split():
    data = load_run_data(DataConfig(validation_fraction=0.1))
    assert not data.own and data.default_labels == "1%"
    assert len(data.validation) == 1000 and len(data.test) == 2000
    assert int((data.train.labels >= 0).sum()) == 9000 and data.labelled_count == 10000
    assert data.pool is data.train  # no other pool: the training images, without a copy
