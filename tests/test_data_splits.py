import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simclrv2.data import (
    ImageDataset,
    class_balanced_indices,
    indices_from_names,
    load_indices,
    save_indices,
)
from simclrv2.errors import UserError


def shuffled_labels(per_class=(50,) * 10, unlabelled=20, seed=0):
    labels = torch.cat(
        [torch.full((n,), k) for k, n in enumerate(per_class)] + [torch.full((unlabelled,), -1)]
    )
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_fraction_gives_exact_class_balance():
    labels = shuffled_labels()
    picked = class_balanced_indices(labels, fraction=0.1, seed=0)
    assert labels[picked].bincount(minlength=10).tolist() == [5] * 10  # 10% of 500, split over 10
    assert picked.tolist() == sorted(set(picked.tolist()))


def test_same_seed_same_indices_other_seed_other_indices():
    labels = shuffled_labels()
    first = class_balanced_indices(labels, per_class=7, seed=3)
    assert torch.equal(first, class_balanced_indices(labels, per_class=7, seed=3))
    assert not torch.equal(first, class_balanced_indices(labels, per_class=7, seed=4))


def test_smaller_fraction_lies_inside_the_larger_one_for_a_seed():
    labels = shuffled_labels(per_class=(100,) * 10)
    one, ten = (
        set(class_balanced_indices(labels, fraction=f, seed=1).tolist()) for f in (0.01, 0.1)
    )
    assert len(one) == 10 and len(ten) == 100
    assert one <= ten


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    unlabelled=st.integers(0, 10),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_per_class_property(counts, unlabelled, seed, data):
    labels = shuffled_labels(counts, unlabelled, seed)
    per_class = data.draw(st.integers(1, min(counts)))
    picked = class_balanced_indices(labels, per_class=per_class, seed=seed)
    assert labels[picked].bincount(minlength=len(counts)).tolist() == [per_class] * len(counts)
    assert len(set(picked.tolist())) == len(picked)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"per_class": 51}, "has only 50 labelled images"),
        ({"per_class": 0}, "at least 1"),
        ({"fraction": 0.0}, r"must be in \(0, 1\]"),
        ({"fraction": 1.5}, r"must be in \(0, 1\]"),
        ({"fraction": 0.001}, "less than one image per class"),
    ],
)
def test_impossible_requests_are_user_errors(kwargs, problem):
    with pytest.raises(UserError, match=problem):
        class_balanced_indices(shuffled_labels(), seed=0, **kwargs)


def test_needs_exactly_one_of_fraction_and_count():
    with pytest.raises(ValueError, match="exactly one"):
        class_balanced_indices(shuffled_labels(), seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        class_balanced_indices(shuffled_labels(), fraction=0.1, per_class=2, seed=0)
    with pytest.raises(UserError, match="no image has a label"):
        class_balanced_indices(torch.full((5,), -1), per_class=1, seed=0)


def test_index_file_round_trip(tmp_path):
    picked = class_balanced_indices(shuffled_labels(), fraction=0.1, seed=0)
    save_indices(tmp_path / "split.txt", picked, comment="10% of the test labels, seed 0")
    assert (tmp_path / "split.txt").read_text().startswith("# 10% of the test labels, seed 0\n")
    assert torch.equal(load_indices(tmp_path / "split.txt", size=520), picked)


def test_bad_index_files(tmp_path):
    (tmp_path / "bad.txt").write_text("1\n2\nthree\n")
    with pytest.raises(UserError, match=r"bad.txt:3: 'three' is not an image index"):
        load_indices(tmp_path / "bad.txt")
    (tmp_path / "big.txt").write_text("# made for another set\n1\n\n99\n")
    assert load_indices(tmp_path / "big.txt").tolist() == [1, 99]
    with pytest.raises(
        UserError, match=r"big.txt:4: index 99 is out of range for a data set of 50"
    ):
        load_indices(tmp_path / "big.txt", size=50)
    with pytest.raises(UserError, match="cannot read"):
        load_indices(tmp_path / "missing.txt")


def folder_like(names):
    return ImageDataset(torch.zeros(len(names), 3, 2, 2, dtype=torch.uint8), names=names)


def test_names_in_the_authors_list_format(tmp_path):
    data = folder_like(["n01/n01_1.JPEG", "n02/n02_7.JPEG", "n01/n01_3.JPEG"])
    (tmp_path / "1percent.txt").write_text("n01_3.JPEG\nn02/n02_7.JPEG\n\nn01_1.JPEG\n")
    assert indices_from_names(data, tmp_path / "1percent.txt").tolist() == [2, 1, 0]


def test_names_that_are_missing_or_ambiguous(tmp_path):
    data = folder_like(["a/x.png", "b/x.png", "b/y.png"])
    (tmp_path / "list.txt").write_text("y.png\nz.png\nw.png\n")
    with pytest.raises(UserError, match=r"list.txt:2: 'z.png' is not in the data set \(2 of 3"):
        indices_from_names(data, tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("a/x.png\nx.png\n")
    with pytest.raises(UserError, match=r"list.txt:2: several images are named 'x.png'"):
        indices_from_names(data, tmp_path / "list.txt")
    with pytest.raises(UserError, match="no file names"):
        indices_from_names(
            ImageDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)), tmp_path / "list.txt"
        )
