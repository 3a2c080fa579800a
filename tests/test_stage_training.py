"""What each training stage optimises, on tiny real data through the commands a user types:
fine-tuning's epochs see every labelled image, distillation starts near ln(classes) and falls,
pretraining's loss is the contrastive loss with the online classifier's apart."""

import json
import math

import torch

from conftest import TINY_OVERRIDES
from simclrv2 import load_encoder, training
from simclrv2.cli import main
from simclrv2.config import load_config
from simclrv2.metrics import read_metrics
from tiny_runs import assert_identical, newest_step, stop_at_check


def test_finetuning_trains_on_every_labelled_image_each_epoch(tiny_data, tmp_path, monkeypatch):
    """The supervised baseline (fine-tuning's function) at batch 32 on labels that do not fill
    whole batches: each epoch has a short last batch, and holds each labelled image once."""
    batches = []
    real = training.epoch_batches

    def recorded(*args, **kwargs):
        for batch in real(*args, **kwargs):
            batches.append(batch.images.flatten(1).clone())
            yield batch

    monkeypatch.setattr(training, "epoch_batches", recorded)
    out = tmp_path / "run"
    argv = ["finetune", "--labels", "30%", "--data", str(tiny_data), "--out", str(out)]
    overrides = ["finetune.batch_size=32", "finetune.epochs=2"]
    assert main([*argv, *TINY_OVERRIDES, *overrides]) == 0
    labelled = json.loads((out / "results.json").read_text())["labelled_images"]
    assert labelled % 32  # a short last batch
    per_epoch = -(-labelled // 32)
    assert [len(b) for b in batches] == ([32] * (per_epoch - 1) + [labelled % 32]) * 2
    epochs = [torch.cat(batches[:per_epoch]), torch.cat(batches[per_epoch:])]
    for seen in epochs:
        assert len(torch.unique(seen, dim=0)) == labelled  # every image, none twice
    assert torch.equal(torch.unique(epochs[0], dim=0), torch.unique(epochs[1], dim=0))
    assert newest_step(out) == 2 * per_epoch  # the schedule counted the same steps


def _curve(folder, name: str) -> list[tuple[int, float]]:
    return sorted((r["step"], r["value"]) for r in read_metrics(folder / "metrics.csv")
                  if r["name"] == name)  # fmt: skip


def test_pretraining_loss_is_the_contrastive_loss_and_the_online_classifier_learns_apart(
    tiny_data, tmp_path
):
    """With and without the online classifier, the run's loss curve is the same, bit for bit: it
    is the contrastive loss alone, and the classifier's gradient never reaches the encoder. The
    classifier's own loss, at its own rate, falls."""
    overrides = ["pretrain.epochs=6", "pretrain.knn_every=0", "pretrain.online_lr=0.1"]
    for online in ("true", "false"):
        argv = ["pretrain", "--data", str(tiny_data), "--out", str(tmp_path / online)]
        assert main([*argv, *TINY_OVERRIDES, *overrides, f"pretrain.online_linear={online}"]) == 0
    with_online, without = tmp_path / "true", tmp_path / "false"
    assert _curve(with_online, "loss") == _curve(without, "loss")
    assert not _curve(without, "online_loss")
    online = [value for _, value in _curve(with_online, "online_loss")]
    half = len(online) // 2
    assert len(online) >= 4 and online[-1] < online[0]
    assert sum(online[half:]) / (len(online) - half) < sum(online[:half]) / half


def test_distillation_starts_near_ln_classes_and_falls(tiny_data, tmp_path):
    """The demo preset's distillation at the demo's peak rate (1.0: base_lr 8 at batch 32) from a
    fine-tuned teacher, the student from scratch: Eq. 3's loss starts near ln(10), the value for
    a student knowing nothing, and falls over the first steps (the paper's settings reach 50 to
    180 here)."""
    data = ["--data", str(tiny_data), *TINY_OVERRIDES]
    assert main(["pretrain", "--out", str(tmp_path / "pretrain"), *data]) == 0
    finetune = ["finetune", "--init", str(tmp_path / "pretrain" / "model"), "--labels", "50%"]
    assert main([*finetune, "--out", str(tmp_path / "teacher"), *data]) == 0
    teacher = tmp_path / "teacher" / "model"
    distill = ["distill", "--preset", "demo", "--teacher", str(teacher), *data]
    demo = load_config("demo").distill
    same = [f"distill.warmup={demo.warmup}", "distill.epochs=6", "distill.base_lr=8"]
    same.append("distill.student_init=scratch")  # the paper's student (the demo's knows more)
    assert main([*distill, *same, "--out", str(tmp_path / "student")]) == 0
    losses = [value for _, value in _curve(tmp_path / "student", "distill_loss")]
    assert math.log(10) / 2 < losses[0] < 2 * math.log(10)
    assert losses[-1] < losses[0] and max(losses) < 2 * math.log(10)

    # self-distillation from the teacher's encoder (the demo's): the student ends near it
    own = [*distill, *same, "distill.student_init=teacher", "--out", str(tmp_path / "own")]
    assert main(own) == 0
    start = dict(load_encoder(teacher).named_parameters())

    def moved(student: str) -> float:
        weights = dict(load_encoder(tmp_path / student / "model").named_parameters())
        return sum(float((weights[k] - v).detach().norm()) for k, v in start.items())

    assert moved("own") < moved("student") / 2
    smaller = [*own[:-1], str(tmp_path / "smaller"), "distill.student_arch=r18_0.0625x_sk0"]
    assert main(smaller) == 2  # a one-line error: the teacher's encoder has another shape


def test_finetuning_with_a_short_last_batch_resumes_onto_the_same_weights(
    tiny_data, tmp_path, monkeypatch
):
    """Interrupted in its second epoch (of a 32, 32, short batch), resumed: the same loss curve
    and the same weights as the run that was not."""
    from safetensors.torch import load_file

    def run(out, *extra):
        argv = ["finetune", "--labels", "30%", "--data", str(tiny_data), "--out", str(out)]
        overrides = ["finetune.batch_size=32", "finetune.epochs=3"]
        assert main([*argv, *TINY_OVERRIDES, *overrides, *extra]) == 0

    run(tmp_path / "whole")
    with monkeypatch.context() as patch:
        patch.setattr(training, "StopSignal", stop_at_check(5, training.StopSignal))
        run(tmp_path / "split")
    assert not (tmp_path / "split" / "results.json").exists()
    assert main(["finetune", "--resume", str(tmp_path / "split")]) == 0
    assert _curve(tmp_path / "split", "loss") == _curve(tmp_path / "whole", "loss")
    assert_identical(
        load_file(tmp_path / "whole" / "model" / "model.safetensors"),
        load_file(tmp_path / "split" / "model" / "model.safetensors"),
        "export",
    )
