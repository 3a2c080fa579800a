"""One suite over the training stages (pretrain, fine-tune, the supervised baseline, distil),
asserting the contract they share through the commands a user types: the files a finished stage
leaves, and an interrupted run that resumes onto the same loss curve and the same weights."""

import pytest

from conftest import TINY_OVERRIDES
from simclrv2 import training
from simclrv2.cli import main
from simclrv2.metrics import read_metrics
from tiny_runs import assert_identical, assert_stage_contract, stop_at_check

# two epochs of 5 steps for every stage (160 images at batch 32; 80 labelled images at batch 16)
OVERRIDES = [*TINY_OVERRIDES, "distill.epochs=2", "pretrain.knn_every=0"]
STOP_AT = 7  # an optimiser step inside the second epoch


@pytest.fixture(scope="module")
def models(tiny_data, tmp_path_factory):
    """A pretrained export and a teacher fine-tuned from it, for the stages that start from one."""
    root = tmp_path_factory.mktemp("contract")
    data = ["--data", str(tiny_data), *OVERRIDES]
    assert main(["pretrain", "--out", str(root / "pretrain"), *data]) == 0
    pretrained = root / "pretrain" / "model"
    finetune = ["finetune", "--init", str(pretrained), "--labels", "50%"]
    assert main([*finetune, "--out", str(root / "teacher"), *data]) == 0
    return {"pretrained": pretrained, "teacher": root / "teacher" / "model"}


STAGES = {
    "pretrain": lambda models: ["pretrain"],
    "pretrain-memory-and-chunks": lambda models: [
        "pretrain",
        "pretrain.memory_size=48",
        "pretrain.chunk_size=8",
    ],
    "finetune": lambda models: ["finetune", "--init", str(models["pretrained"]), "--labels", "50%"],
    "supervised": lambda models: ["finetune", "--labels", "50%"],
    "distill": lambda models: ["distill", "--teacher", str(models["teacher"])],
}


def _run(command: list[str], tiny_data, out) -> None:
    assert main([*command, "--out", str(out), "--data", str(tiny_data), *OVERRIDES]) == 0


def _loss_curve(folder) -> list[tuple[int, float]]:
    rows = read_metrics(folder / "metrics.csv")
    return sorted((r["step"], r["value"]) for r in rows if r["name"] == "loss")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_finished_stage_leaves_its_results_model_metrics_and_checkpoints(
    stage, models, tiny_data, tmp_path
):
    _run(STAGES[stage](models), tiny_data, tmp_path / stage)
    results = assert_stage_contract(tmp_path / stage)
    if stage in ("finetune", "supervised"):
        assert results["labelled_images"] == 80  # 50% of 16 per class, 10 classes


@pytest.mark.parametrize("stage", list(STAGES))
def test_an_interrupted_stage_resumes_onto_the_same_loss_curve(
    stage, models, tiny_data, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    command = STAGES[stage](models)
    _run(command, tiny_data, tmp_path / "whole")
    with monkeypatch.context() as patch:
        patch.setattr(training, "StopSignal", stop_at_check(STOP_AT, training.StopSignal))
        _run(command, tiny_data, tmp_path / "split")  # interrupted: a checkpoint, exit 0
    assert not (tmp_path / "split" / "results.json").exists()
    assert max(step for step, _ in _loss_curve(tmp_path / "split")) < 10  # it stopped early
    assert main([command[0], "--resume", str(tmp_path / "split")]) == 0
    assert _loss_curve(tmp_path / "split") == _loss_curve(tmp_path / "whole")
    assert_identical(
        load_file(tmp_path / "whole" / "model" / "model.safetensors"),
        load_file(tmp_path / "split" / "model" / "model.safetensors"),
        "export",
    )


def test_the_same_command_line_again_continues_the_run(tiny_data, tmp_path, monkeypatch):
    """What ``torchrun --max-restarts N`` does after a crash: the unchanged command line, with the
    same --out, continues the run there; another config is refused."""
    with monkeypatch.context() as patch:
        patch.setattr(training, "StopSignal", stop_at_check(STOP_AT, training.StopSignal))
        _run(["pretrain"], tiny_data, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
    _run(["pretrain"], tiny_data, tmp_path / "run")  # the same command line: continued
    assert (
        f"resumed at epoch 1, batch 1, step {STOP_AT - 1}"
        in (tmp_path / "run" / "log.txt").read_text()
    )
    assert_stage_contract(tmp_path / "run")
    argv = ["pretrain", "--out", str(tmp_path / "run"), "--data", str(tiny_data), *OVERRIDES]
    assert main([*argv, "pretrain.epochs=3"]) == 2  # another config: refused, the run untouched
    assert_stage_contract(tmp_path / "run")
