"""Every stage end to end on a tiny real data set, through the CLI a user types."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY_OVERRIDES
from simclrv2 import load_encoder
from simclrv2.cli import main
from simclrv2.metrics import read_metrics
from simclrv2.report import build_report, label_efficiency_curves
from tiny_runs import assert_stage_contract, stop_at_check


@pytest.fixture(scope="module")
def pipeline_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    assert main(["pipeline", "--data", str(tiny_data), "--out", str(out), *TINY_OVERRIDES]) == 0
    return out


def test_pipeline_writes_every_stage_and_one_table(pipeline_run, capsys):
    rows = json.loads((pipeline_run / "results.json").read_text())
    methods = list(dict.fromkeys(row["method"] for row in rows))
    assert methods[:2] == ["SimCLR + kNN (k=20)", "SimCLR + linear eval"] and len(methods) == 5
    assert [row["split"] for row in rows] == ["validation", "test"] * 5  # each number's split
    assert {r["labels"] for r in rows[4:]} == {"10% (20)"}
    for row in rows:
        assert 0 <= row["top1"] <= row["top5"] <= 100
    for stage in ("pretrain", "finetune-10%", "supervised-10%", "distill-10%"):
        assert_stage_contract(pipeline_run / stage)
    finetuned = json.loads((pipeline_run / "finetune-10%" / "results.json").read_text())
    assert finetuned["labelled_images"] == 20  # round(10% of 16) = 2 per class
    assert np.array(finetuned["confusion"]).sum() == 40  # every test image once
    assert np.array(finetuned["splits"]["validation"]["confusion"]).sum() == 20  # 2 per class
    assert (pipeline_run / "labels-10%.txt").is_file()
    assert (pipeline_run / "config.yaml").is_file() and (
        pipeline_run / "environment.json"
    ).is_file()


def test_the_pipeline_runs_under_bf16_autocast(tiny_data, tmp_path):
    """CUDA's default precision, tested with CPU autocast: every stage trains and evaluates."""
    out = tmp_path / "run"
    argv = ["pipeline", "--data", str(tiny_data), "--out", str(out), *TINY_OVERRIDES]
    assert main([*argv, "runtime.precision=bf16"]) == 0
    assert "precision: bf16" in (out / "config.yaml").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results and all(np.isfinite(row["top1"]) for row in results)
    losses = [row["value"] for row in read_metrics(out / "pretrain" / "metrics.csv")]
    assert losses and np.isfinite(losses).all()


def test_report_renders_the_runs_numbers(pipeline_run, capsys):
    assert main(["report", str(pipeline_run)]) == 0  # the command a user types
    assert str(pipeline_run / "report.html") in capsys.readouterr().out
    page = (pipeline_run / "report.html").read_text()
    rows = json.loads((pipeline_run / "results.json").read_text())
    for row in rows:
        assert row["method"] in page and f"{row['top1']:.4g}" in page
    assert "per class on test:" in page  # precision, recall, F1 and support of each class
    images = sorted((pipeline_run / "report").glob("*.png"))
    names = {p.name for p in images}
    assert {
        "label-efficiency.png",
        "pretrain-curves.png",
        "pretrain-accuracy.png",
        "finetune-10%-confusion.png",
        "embeddings.png",
        "augmentations.png",
    } <= names
    # the headline comes first: top-1 against the labelled images of each row
    split, curves = label_efficiency_curves(rows)
    assert split == "test" and {method: list(points) for method, points in curves.items()} == {
        "SimCLR + linear eval": [140],  # every training label, 2 per class held out
        "SimCLR + fine-tune (from head layer 1)": [20],
        "supervised from scratch": [20],
        "distilled into r18_0.125x_sk0": [20],
    }
    assert page.index("<img") == page.index('<img src="report/label-efficiency.png">')
    assert page.index("label-efficiency.png") < page.index("<h2>Results</h2>")
    for path in images:
        with Image.open(path) as image:
            image.load()
            assert image.size[0] > 100 and image.size[1] > 100
        assert f'src="report/{path.name}"' in page


def _images_in(page: str, run) -> set[str]:
    """The PNG files of a report: each decodes, is a real picture, and is shown on the page."""
    names = set()
    for path in sorted((run / "report").glob("*.png")):
        with Image.open(path) as image:
            image.load()
            assert image.size[0] > 100 and image.size[1] > 100
        assert f'src="report/{path.name}"' in page
        names.add(path.name)
    return names


def test_report_renders_a_pipeline_interrupted_in_pretraining(tiny_data, tmp_path, monkeypatch):
    import simclrv2.training as training

    # in epoch 2, after epoch 1's monitors
    monkeypatch.setattr(training, "StopSignal", stop_at_check(7, training.StopSignal))
    run = tmp_path / "run"
    assert main(["pipeline", "--data", str(tiny_data), "--out", str(run), *TINY_OVERRIDES]) == 0
    assert not (run / "pretrain" / "model").exists()  # interrupted: checkpoints only

    page = build_report(run).read_text()
    assert "No results yet: no stage of this run has finished." in page
    assert {
        "pretrain-curves.png",
        "pretrain-accuracy.png",
        "embeddings.png",  # from the newest checkpoint
        "augmentations.png",
    } <= _images_in(page, run)


def test_report_of_an_unfinished_pipeline_lists_the_finished_stages(pipeline_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run, ignore=shutil.ignore_patterns("report*"))
    for name in ("results.json", "results.md"):
        (run / name).unlink()
    shutil.rmtree(run / "distill-10%")  # the run stopped in its last stage

    page = build_report(run).read_text()
    assert "The run has not finished" in page
    knn = json.loads((run / "pretrain" / "results.json").read_text())["knn_top1"]
    assert "pretrain (kNN)" in page and f"{knn:.4g}" in page
    for stage in ("linear", "finetune-10%", "supervised-10%"):
        top1 = json.loads((run / stage / "results.json").read_text())["top1"]
        assert stage in page and f"{top1:.4g}" in page
    assert "distill-10%" not in page
    assert {"finetune-10%-confusion.png", "embeddings.png"} <= _images_in(page, run)


def test_a_finished_pipeline_is_reused_on_resume(pipeline_run, capsys):
    before = (pipeline_run / "pretrain" / "results.json").read_text()
    assert main(["pipeline", "--resume", str(pipeline_run)]) == 0
    assert (pipeline_run / "pretrain" / "results.json").read_text() == before
    assert "supervised from scratch" in capsys.readouterr().out


def test_each_stage_command(pipeline_run, tiny_data, tmp_path, capsys):
    data = ["--data", str(tiny_data)]
    pretrained = pipeline_run / "pretrain" / "model"
    assert (
        main(
            [
                "finetune",
                "--init",
                str(pretrained),
                "--labels",
                "3-per-class",
                "--out",
                str(tmp_path / "ft"),
                *data,
                *TINY_OVERRIDES,
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["labelled_images"] == 30
    assert (
        main(
            ["finetune", "--labels", "25%", "--out", str(tmp_path / "sup"), *data, *TINY_OVERRIDES]
        )
        == 0
    )
    teacher = tmp_path / "ft" / "model"
    assert (
        main(
            [
                "distill",
                "--teacher",
                str(teacher),
                "--labels",
                "0.1",
                "--out",
                str(tmp_path / "dist"),
                *data,
                *TINY_OVERRIDES,
                "distill.alpha=0.5",
            ]
        )
        == 0
    )
    losses = {r["name"] for r in read_metrics(tmp_path / "dist" / "metrics.csv")}
    assert {"distill_loss", "label_loss"} <= losses
    capsys.readouterr()
    for command in ("linear", "knn"):
        assert main([command, "--init", str(pretrained), *data, *TINY_OVERRIDES]) == 0
        result = json.loads(capsys.readouterr().out)
        assert 0 <= result["top1"] <= result["top5"] <= 100
    for name in ("h.npy", "h.safetensors"):
        assert (
            main(
                [
                    "embed",
                    "--init",
                    str(pretrained),
                    "--out",
                    str(tmp_path / name),
                    "--split",
                    "test",
                    *data,
                    *TINY_OVERRIDES,
                ]
            )
            == 0
        )
    embeddings = np.load(tmp_path / "h.npy")
    encoder = load_encoder(pretrained)
    assert embeddings.shape == (40, encoder.out_dim)
    assert len((tmp_path / "h.npy.names.txt").read_text().split()) == 40
    stored = load_file(tmp_path / "h.safetensors")
    torch.testing.assert_close(stored["embeddings"], torch.from_numpy(embeddings))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--data", "/no/such/folder"], "/no/such/folder does not exist"),
        (["pretrain", "--preset", "imagenet"], "unknown preset 'imagenet'"),
        (["pretrain", "pretrain.epoks=3"], "did you mean 'pretrain.epochs'"),
        (["finetune", "--init", "/no/model", "--labels", "1%"], "not an exported model"),
        (["finetune", "--labels", "150%"], "must be a fraction in (0, 1]"),
        (["pretrain", "--resume", "/no/run"], "not a run directory"),
        (["report", "/no/run"], "/no/run is not a directory"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simclrv2: error: ") and message in err
    assert "\n" not in err and "Traceback" not in err
