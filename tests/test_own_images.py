"""End to end on a user's own folders (written by the tests): a flat unlabelled pool, labelled
class folders with uneven classes (or a CSV), no test set; through pretrain, finetune, distill,
pipeline and predict; and every choice reads validation only."""

import csv
import json
import shutil

import pytest

from conftest import TINY_OVERRIDES
from own_images import CLASSES, LABELLED, POOL, write_own_images
from simclrv2.cli import main


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return write_own_images(tmp_path_factory.mktemp("own"))


def roles(own, labelled="labelled", test=None) -> list[str]:
    argv = ["--labelled", str(own / labelled), "--unlabelled", str(own / "pool")]
    return argv + (["--test", str(test)] if test else []) + ["data.validation_fraction=0.2"]


@pytest.fixture(scope="module")
def pipeline_run(own, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    assert main(["pipeline", *roles(own), "--out", str(out), *TINY_OVERRIDES]) == 0
    return out


def test_pipeline_on_two_folders_uses_every_image_and_reports_validation(pipeline_run, own, capsys):
    rows = json.loads((pipeline_run / "results.json").read_text())
    assert {row["split"] for row in rows} == {"validation"}  # no test set: validation, named
    labelled = sum(LABELLED.values())
    held = sum(max(1, round(0.2 * n)) for n in LABELLED.values())
    finetuned = [row for row in rows if row["method"].startswith("SimCLR + fine-tune")]
    assert [row["labels"] for row in finetuned] == [f"all ({labelled - held})"]
    for row in rows:
        for key in ("top1", "balanced_accuracy", "macro_f1"):
            assert 0 <= row[key] <= 100
    pretrain = json.loads((pipeline_run / "pretrain" / "model" / "model.json").read_text())
    assert pretrain["info"]["data"]["splits"]["train"]["images"] == labelled + POOL
    distill = json.loads((pipeline_run / "distill-all" / "model" / "model.json").read_text())
    assert distill["info"]["data"]["splits"]["train"]["images"] == labelled + POOL
    assert distill["info"]["classes"] == list(CLASSES)  # class names kept in the export
    listed = (pipeline_run / "validation.txt").read_text().splitlines()[1:]
    assert len(listed) == held and all(name.split("/")[0] in CLASSES for name in listed)
    results = json.loads((pipeline_run / "finetune-all" / "results.json").read_text())
    assert set(results["per_class"]) == set(CLASSES)
    assert results["per_class"]["sneaker"]["support"] == 1  # 3 sneakers: 1 held out


def test_predict_on_the_pool_with_the_run_directory(pipeline_run, own, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    capsys.readouterr()
    argv = ["predict", "--model", str(pipeline_run), "--data", str(own / "pool")]
    assert main([*argv, "--out", str(out), "--top-k", "2"]) == 0
    assert "distill-all" in capsys.readouterr().out  # the final model: the distilled student
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == POOL
    assert {row["predicted"] for row in rows} <= set(CLASSES)  # class names, from the folders


def test_stages_one_by_one_with_csv_labels(own, tmp_path, capsys):
    pre, ft, dist = tmp_path / "pre", tmp_path / "ft", tmp_path / "dist"
    pool_only = ["--unlabelled", str(own / "pool")]
    assert main(["pretrain", *pool_only, "--out", str(pre), *TINY_OVERRIDES]) == 0
    pretrained = json.loads((pre / "results.json").read_text())
    assert "top1" not in pretrained  # no labels, no monitor: pretraining alone
    labels = roles(own, "labels.csv")
    init = ["--init", str(pre / "model")]
    assert main(["finetune", *init, *labels, "--out", str(ft), *TINY_OVERRIDES]) == 0
    finetuned = json.loads((ft / "results.json").read_text())
    assert finetuned["split"] == "validation"
    assert finetuned["labelled_images"] == sum(LABELLED.values()) - 4  # all, less validation
    teacher = ["--teacher", str(ft / "model")]
    assert main(["distill", *teacher, *labels, "--out", str(dist), *TINY_OVERRIDES]) == 0
    distilled = json.loads((dist / "results.json").read_text())
    assert set(distilled["splits"]) == {"validation"}


@pytest.mark.parametrize(("balanced", "steps"), [(False, 8), (True, 12)])
def test_balanced_sampling_repeats_the_smaller_classes(own, tmp_path, balanced, steps):
    """15 training labels (8 bags, 5 coats, 2 sneakers): 4 batches of at most 4 an epoch as they
    are; balanced, each class repeated to 8: 24 images, 6 batches."""
    out = tmp_path / "sup"
    argv = ["finetune", *roles(own), *TINY_OVERRIDES, "finetune.batch_size=4"]
    assert main([*argv, f"finetune.balanced_sampling={balanced}", "--out", str(out)]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert int(last[header.index("step")]) == steps


def _shuffle_test_labels(own, tmp_path):
    """A copy of the test folder whose images sit in the wrong class folders."""
    shuffled = tmp_path / "shuffled"
    for k, name in enumerate(CLASSES):
        wrong = CLASSES[(k + 1) % len(CLASSES)]
        shutil.copytree(own / "test" / name, shuffled / wrong)
    return shuffled


def test_choices_read_validation_only(pipeline_run, own, tmp_path, capsys):
    """Linear evaluation chooses its L2 penalty; with the test labels shuffled, the choice and
    every validation number stay as they were, while the test scores change."""
    model = str(pipeline_run / "pretrain" / "model")
    outcomes = []
    for test in (own / "test", _shuffle_test_labels(own, tmp_path)):
        capsys.readouterr()
        argv = ["linear", "--init", model, *roles(own, test=test), "linear.l2=[1e-5,1,1e3]"]
        assert main([*argv, *TINY_OVERRIDES]) == 0
        outcomes.append(json.loads(capsys.readouterr().out))
    right, shuffled = outcomes
    assert right["chosen_on"] == "validation" and len(right["validation_top1_by_l2"]) == 3
    assert right["l2"] == shuffled["l2"]
    assert right["validation_top1_by_l2"] == shuffled["validation_top1_by_l2"]
    assert right["split"] == shuffled["split"] == "test"
    assert right["top1"] != shuffled["top1"]


def test_stl10_preset_pipeline_on_written_binaries(tmp_path, capsys):
    """The STL-10 protocol on small files in its binary format: pretraining and distillation
    on train + unlabeled, fine-tuning on every train label, scores on test."""
    import numpy as np

    from test_data_stl10 import CLASSES as STL_CLASSES
    from test_data_stl10 import column_major

    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10), ("unlabeled", 30)):
        (folder / f"{split}_X.bin").write_bytes(
            column_major(rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8))
        )
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8))
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    out = tmp_path / "run"
    tiny = [*TINY_OVERRIDES, "finetune.label_fractions=[1.0]", "finetune.batch_size=10"]
    argv = ["pipeline", "--preset", "stl10", "--data", str(folder), "--out", str(out), *tiny]
    assert main([*argv, "data.image_size=32"]) == 0
    pretrain = json.loads((out / "pretrain" / "model" / "model.json").read_text())
    assert pretrain["info"]["data"]["splits"]["train"]["images"] == 50
    finetuned = json.loads((out / "finetune-100%" / "results.json").read_text())
    assert finetuned["labelled_images"] == 20 and finetuned["split"] == "test"
    assert set(finetuned["splits"]) == {"test"}  # no validation in the protocol
    assert finetuned["per_class"]["airplane"]["support"] == 1
