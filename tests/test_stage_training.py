"""What each training stage optimises, on tiny real data through the commands a user types:
fine-tuning's epochs see every labelled image, distillation starts near ln(classes) and falls,
pretraining's loss is the contrastive loss with the online classifier's apart."""

import json

import torch

from conftest import TINY_OVERRIDES
from simclrv2 import training
from simclrv2.cli import main
from tiny_runs import newest_step


def test_finetuning_trains_on_every_labelled_image_each_epoch(tiny_data, tmp_path, monkeypatch):
    """The supervised baseline (fine-tuning's function) at batch 32 on labels that do not fill
    whole batches: each epoch has a short last batch, and holds each labelled image once."""
    batches = []
    real = training.epoch_batches

    def recorded(*args, **kwargs):
        for images, labels in real(*args, **kwargs):
            batches.append(images.flatten(1).clone())
            yield images, labels

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
