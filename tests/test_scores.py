"""The scores of a classifier, each against an independent computation written out longhand."""

import itertools

import pytest
import torch

from simclrv2.scores import auroc, by_split, classification_scores, confusion_matrix, headline


def _longhand(predicted: list[int], labels: list[int], k: int) -> dict:
    """Precision, recall and F1 per class in percent from counts, one pair at a time."""
    out = {}
    for c in range(k):
        tp = sum(p == c and y == c for p, y in zip(predicted, labels))
        fp = sum(p == c and y != c for p, y in zip(predicted, labels))
        fn = sum(p != c and y == c for p, y in zip(predicted, labels))
        precision = 100 * tp / (tp + fp) if tp + fp else 0.0
        recall = 100 * tp / (tp + fn) if tp + fn else None
        r = recall or 0.0
        f1 = 2 * precision * r / (precision + r) if precision + r else 0.0
        out[c] = (precision, recall, f1, tp + fn, tp + fp)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_the_longhand_counts_on_uneven_classes(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0] * 30 + [1] * 8 + [2] * 3 + [3] * 1)  # uneven; class 4 absent
    logits = torch.randn(len(labels), 5, generator=generator)
    logits[torch.arange(len(labels)), labels] += 1.0  # better than chance
    names = ["a", "b", "c", "d", "e"]
    scores = classification_scores(logits, labels, names)
    predicted = logits.argmax(1).tolist()
    expected = _longhand(predicted, labels.tolist(), 5)
    for c, name in enumerate(names):
        precision, recall, f1, support, _ = expected[c]
        got = scores["per_class"][name]
        assert got["precision"] == pytest.approx(precision)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support
        assert (got["recall"] is None) == (recall is None)
        if recall is not None:
            assert got["recall"] == pytest.approx(recall)
    present = [c for c in range(5) if expected[c][3]]
    assert scores["balanced_accuracy"] == pytest.approx(
        sum(expected[c][1] for c in present) / len(present)
    )
    scored = [c for c in range(5) if expected[c][3] or expected[c][4]]
    assert scores["macro_f1"] == pytest.approx(sum(expected[c][2] for c in scored) / len(scored))
    hits = sum(p == y for p, y in zip(predicted, labels.tolist()))
    assert scores["top1"] == pytest.approx(100 * hits / len(labels))
    for y, p in zip(labels.tolist(), predicted):
        assert scores["confusion"][y][p] >= 1
    assert sum(map(sum, scores["confusion"])) == len(labels)
    assert "auroc" not in scores


def test_balanced_accuracy_differs_from_top1_when_classes_are_uneven():
    labels = torch.tensor([0] * 9 + [1])
    logits = torch.tensor([[1.0, 0.0]] * 10)  # always class 0
    scores = classification_scores(logits, labels, ["big", "small"])
    assert scores["top1"] == pytest.approx(90.0)
    assert scores["balanced_accuracy"] == pytest.approx(50.0)
    assert scores["per_class"]["small"]["precision"] == 0.0  # never predicted


def test_confusion_rows_are_true_classes():
    matrix = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), 2)
    assert matrix.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_is_the_share_of_correctly_ordered_pairs(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (40,), generator=generator).double()  # many ties
    positive = torch.rand(40, generator=generator) < 0.4
    pairs = list(itertools.product(scores[positive].tolist(), scores[~positive].tolist()))
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(scores, positive) == pytest.approx(expected)


def test_two_classes_report_auroc_of_the_class_one_margin():
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 1.0], [0.0, 3.0]])
    assert classification_scores(logits, labels, ["no", "yes"])["auroc"] == pytest.approx(1.0)
    flipped = classification_scores(-logits, labels, ["no", "yes"])
    assert flipped["auroc"] == pytest.approx(0.0)


def test_by_split_reports_test_when_there_is_one_and_names_it():
    validation, test = {"top1": 50.0, "confusion": [[1]]}, {"top1": 70.0, "confusion": [[2]]}
    both = by_split({"validation": validation, "test": test})
    assert both["split"] == "test" and both["top1"] == 70.0
    assert both["splits"]["validation"]["top1"] == 50.0
    alone = by_split({"validation": validation})
    assert alone["split"] == "validation" and alone["top1"] == 50.0
    assert by_split({}) == {}
    assert headline(both) == {"split": "test", "top1": 70.0}
