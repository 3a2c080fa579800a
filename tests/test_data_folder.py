import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.data import folder as folder_module
from simclrv2.data import load_dataset
from simclrv2.errors import UserError


def save(path, array):
    """Write a uint8 (H, W, 3) or (H, W) array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def noise(seed, shape=(32, 32, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def chw(array):
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def test_class_folders_give_sorted_labels_and_exact_pixels(tmp_path):
    written = {
        "dog/b.png": save(tmp_path / "dog" / "b.png", noise(0)),
        "cat/a.png": save(tmp_path / "cat" / "a.png", noise(1)),
        "dog/sub/c.png": save(tmp_path / "dog" / "sub" / "c.png", noise(2)),
    }
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_dataset(str(tmp_path), workers=1)
    assert data.classes == ["cat", "dog"]
    assert data.names == ["cat/a.png", "dog/b.png", "dog/sub/c.png"]
    assert data.labels.tolist() == [0, 1, 1]
    assert data.images.shape == (3, 3, 32, 32)
    for image, name in zip(data.images, data.names):
        assert torch.equal(image, chw(written[name]))


def test_flat_folder_is_unlabelled_and_grey_becomes_rgb(tmp_path):
    grey = save(tmp_path / "g.png", noise(3, (16, 16)))
    save(tmp_path / "h.png", noise(4, (16, 16, 3)))
    data = load_dataset(f"folder:{tmp_path}", workers=1)
    assert data.labels.tolist() == [-1, -1]
    assert data.classes == []
    assert data.images.shape == (2, 3, 16, 16)
    for channel in range(3):
        assert torch.equal(data.images[0, channel], torch.from_numpy(grey))


def test_split_folders_with_val_as_test(tmp_path):
    save(tmp_path / "train" / "a" / "1.png", noise(0))
    save(tmp_path / "train" / "b" / "2.png", noise(1))
    save(tmp_path / "val" / "b" / "3.png", noise(2))
    assert load_dataset(str(tmp_path), "train", workers=1).names == ["a/1.png", "b/2.png"]
    test = load_dataset(str(tmp_path), "test", workers=1)
    assert (test.names, test.classes, test.labels.tolist()) == (["b/3.png"], ["b"], [0])
    with pytest.raises(UserError, match="no split 'unlabeled'; valid splits: train, test"):
        load_dataset(str(tmp_path), "unlabeled")


def test_folder_without_split_folders_is_only_a_train_split(tmp_path):
    save(tmp_path / "a.png", noise(0))
    with pytest.raises(UserError, match=r"no split 'test'; valid splits: train$"):
        load_dataset(str(tmp_path), "test")


def test_the_whole_image_is_resized_with_its_aspect_kept(tmp_path):
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40, 0] = wide[:, 40:80, 1] = wide[:, 80:, 2] = 255  # red | green | blue thirds
    save(tmp_path / "wide.png", wide)
    data = load_dataset(str(tmp_path), image_size=10, workers=1, stored_side=30)
    assert data.images.shape == (1, 3, 30, 30) and data.extents.tolist() == [[10, 30]]
    image = data.images[0].float()
    for channel, third in enumerate((slice(1, 9), slice(11, 19), slice(21, 29))):
        assert (image[channel, :10, third] > 250).all()  # each third whole, in its colour
        assert (image[(channel + 1) % 3, :10, third] < 5).all()


def test_default_size_is_the_first_shorter_side_at_most_224(tmp_path):
    save(tmp_path / "small" / "a.png", noise(0, (20, 30, 3)))
    save(tmp_path / "small" / "b.png", noise(1, (50, 50, 3)))
    save(tmp_path / "large" / "a.jpg", noise(2, (300, 260, 3)))
    assert load_dataset(str(tmp_path / "small"), workers=1).image_size == 20
    assert load_dataset(str(tmp_path / "large"), workers=1).image_size == 224


def test_worker_processes_decode_the_same_images(tmp_path):
    count = folder_module.CHUNK * 2 + 5
    for i in range(count):
        save(tmp_path / f"c{i % 3}" / f"{i:03d}.jpg", noise(i, (24, 24, 3)))
    (tmp_path / "c1" / "100.jpg").write_bytes(b"damaged")  # in the second chunk
    with pytest.warns(UserWarning, match="skipped 1 images"):
        one = load_dataset(str(tmp_path), workers=1)
    with pytest.warns(UserWarning, match="skipped 1 images"):
        two = load_dataset(str(tmp_path), workers=2)
    assert len(two) == count - 1
    assert torch.equal(one.images, two.images)
    assert torch.equal(one.labels, two.labels)
    assert one.names == two.names
    with pytest.raises(UserError, match=r"100.jpg: cannot decode"):
        load_dataset(str(tmp_path), workers=2, strict=True)


def damaged_folder(tmp_path):
    """Four images, two of them damaged: a truncated JPEG and a file that is no image at all."""
    save(tmp_path / "a" / "1.png", noise(0))
    save(tmp_path / "a" / "2.jpg", noise(1))
    data = (tmp_path / "a" / "2.jpg").read_bytes()
    (tmp_path / "a" / "2.jpg").write_bytes(data[: len(data) // 2])
    save(tmp_path / "b" / "3.png", noise(2))
    (tmp_path / "b" / "4.png").write_bytes(b"this is not a PNG")
    return tmp_path


def test_damaged_images_are_skipped_with_one_counted_warning(tmp_path):
    root = damaged_folder(tmp_path)
    with pytest.warns(
        UserWarning, match=r"skipped 2 images that cannot be decoded \(first: a/2.jpg"
    ):
        data = load_dataset(str(root), image_size=32, workers=1)
    assert data.names == ["a/1.png", "b/3.png"]
    assert data.labels.tolist() == [0, 1]


def test_damaged_image_under_strict_is_a_one_line_error(tmp_path):
    root = damaged_folder(tmp_path)
    with pytest.raises(UserError, match="cannot decode this image") as error:
        load_dataset(str(root), image_size=32, strict=True, workers=1)
    assert str(root / "a" / "2.jpg") in str(error.value)
    assert "\n" not in str(error.value)


def test_nothing_decodable_or_nothing_there(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="none of the 1 images"):
        load_dataset(str(tmp_path), image_size=8, workers=1)
    with pytest.raises(UserError, match="none of the 1 images can be read"):
        load_dataset(str(tmp_path), workers=1)
    (tmp_path / "bad.png").unlink()
    with pytest.raises(UserError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}")


def test_cache_is_memory_mapped_on_the_next_run(tmp_path, monkeypatch):
    root, cache = tmp_path / "images", tmp_path / "cache"
    for i in range(5):
        save(root / f"c{i % 2}" / f"{i}.png", noise(i, (20, 28, 3)))
    first = load_dataset(str(root), image_size=16, cache_dir=cache, workers=1)
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(folder_module, "decode_image", no_decoding)
    second = load_dataset(str(root), image_size=16, cache_dir=cache, workers=1)
    assert torch.equal(second.images, first.images)
    assert (second.labels.tolist(), second.names) == (first.labels.tolist(), first.names)
    monkeypatch.undo()
    save(root / "c0" / "0.png", noise(99, (20, 28, 3)))  # a changed file: a new cache entry
    third = load_dataset(str(root), image_size=16, cache_dir=cache, workers=1)
    assert len(list(cache.glob("*.npy"))) == 2
    assert not torch.equal(third.images[0], first.images[0])


def test_cache_remembers_skipped_images(tmp_path):
    root, cache = damaged_folder(tmp_path / "images"), tmp_path / "cache"
    for _ in range(2):
        with pytest.warns(UserWarning, match="skipped 2 images"):
            data = load_dataset(str(root), image_size=32, cache_dir=cache, workers=1)
        assert data.names == ["a/1.png", "b/3.png"]
        assert data.images.shape == (2, 3, 32, 32)
    with pytest.raises(UserError, match=r"2.jpg: cannot decode this image"):
        load_dataset(str(root), image_size=32, cache_dir=cache, strict=True, workers=1)


@pytest.mark.parametrize(("sample", "side"), [("cifar10-sample", 32), ("imagenet-sample", 224)])
def test_real_samples_as_flat_and_as_class_folders(shared_dir, tmp_path, sample, side):
    source = shared_dir / "data" / sample
    flat = load_dataset(str(source))
    stored = side if side == 32 else 342  # ImageNet's photographs whole, longer side at 342
    assert flat.image_size == side and flat.images.shape == (20, 3, stored, stored)
    assert (flat.labels == -1).all()
    for path in sorted(source.iterdir()):  # <set>_<index>_<label>.<ext>: label folders
        label = path.stem.split("_")[-1]
        os.makedirs(tmp_path / label, exist_ok=True)
        shutil.copy(path, tmp_path / label / path.name)
    labelled = load_dataset(str(tmp_path), image_size=side)
    assert len(labelled) == 20
    for name, label in zip(labelled.names, labelled.labels.tolist()):
        assert labelled.classes[label] == name.split("/")[0] == name.split("_")[-1].split(".")[0]
    by_name = dict(zip(flat.names, flat.images))
    for name, image in zip(labelled.names, labelled.images):
        assert torch.equal(image, by_name[name.split("/")[1]])
    if side == 32:  # PNGs at their own size decode to their exact pixels
        first = np.asarray(Image.open(source / flat.names[0]).convert("RGB"))
        assert torch.equal(flat.images[0], chw(first))


CHILD = """
import sys, time
from pathlib import Path
from simclrv2.data import folder, load_dataset
log, root, cache, me = (Path(a) for a in sys.argv[1:5])
real = folder.decode_image
def counted(*args, **kwargs):
    with open(log, "a") as file:
        file.write("decoded\\n")
    time.sleep(0.2)  # slow decoding: the other process starts while this one builds
    return real(*args, **kwargs)
folder.decode_image = counted
me.touch()
while len(list(me.parent.glob("ready-*"))) < 2:  # start together
    time.sleep(0.01)
print(len(load_dataset(str(root), image_size=16, cache_dir=cache, workers=1)))
"""


def test_the_cache_is_built_once_by_one_of_two_processes(tmp_path):
    import subprocess
    import sys

    from tiny_runs import cli_env

    root, cache, log = tmp_path / "images", tmp_path / "cache", tmp_path / "decoded.log"
    for i in range(5):
        save(root / f"{i}.png", noise(i, (20, 20, 3)))
    (tmp_path / "sync").mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, log, root, cache, tmp_path / "sync" / f"ready-{k}"],
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outputs = [child.communicate(timeout=120)[0].strip() for child in children]
    assert outputs == ["5", "5"]
    assert log.read_text().count("decoded") == 5  # one process decoded, the other mapped
    assert len(list(cache.glob("*.npy"))) == 1
