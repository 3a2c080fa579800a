"""``pretrain --init MODEL``: SimCLR continued from an export (an earlier run's or a converted
authors' checkpoint), its head reused when of the configured shape; and the supervised baseline
started from a converted supervised checkpoint (``finetune --init``)."""

import json
import math

import pytest
import torch

from conftest import TINY_OVERRIDES
from simclrv2 import build
from simclrv2.cli import main
from simclrv2.config import load_config
from simclrv2.data import load_dataset
from simclrv2.export import ExportedModel, load_exported, save_exported
from simclrv2.metrics import read_metrics, setup_logging


def parameters(model: ExportedModel) -> dict[str, torch.Tensor]:
    """The trained tensors of the encoder and the head (not BatchNorm's running statistics)."""
    modules = {"encoder": model.encoder, "projection_head": model.projection_head}
    return {
        f"{part}.{name}": p.detach()
        for part, module in modules.items()
        for name, p in module.named_parameters()
    }


def contrastive_loss(run) -> list[float]:
    rows = read_metrics(run / "metrics.csv")
    return [row["value"] for row in rows if row["name"] == "loss"]


@pytest.fixture(scope="module")
def earlier_run(tiny_data, tmp_path_factory):
    """A finished tiny pretraining: the export to continue from."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    argv = ["pretrain", "--data", str(tiny_data), "--out", str(out), *TINY_OVERRIDES]
    assert main([*argv, "pretrain.epochs=1"]) == 0
    return out


def test_the_model_takes_the_exports_encoder_and_a_head_of_the_configured_shape(
    earlier_run, tiny_data, capsys
):
    setup_logging(None)
    config = load_config("demo", overrides=TINY_OVERRIDES)
    data = load_dataset(str(tiny_data), "test")
    init = load_exported(earlier_run / "model")
    model = build.contrastive_model(config, data, (init.encoder, init.projection_head))
    assert model.encoder is init.encoder and model.projection_head is init.projection_head
    assert "r18_0.125x_sk0 encoder and its projection head" in capsys.readouterr().err
    other = load_config("demo", overrides=[*TINY_OVERRIDES, "model.proj_dim=64"])
    model = build.contrastive_model(other, data, (init.encoder, init.projection_head))
    assert model.encoder is init.encoder and model.projection_head.out_dim == 64
    assert "a new projection head (its head, 3 layers 64 -> 64 -> 128, is not" in (
        capsys.readouterr().err
    )
    assert build.contrastive_model(config, data, (init.encoder, None)).projection_head is not None
    assert "a new projection head (it has none)" in capsys.readouterr().err


def test_pretrain_continues_from_an_earlier_runs_export(earlier_run, tiny_data, tmp_path):
    """With a learning rate of 0 the parameters never move: the run's step-0 weights are the
    export's (BatchNorm's running statistics do move)."""
    out = tmp_path / "continued"
    init = earlier_run / "model"
    argv = ["pretrain", "--init", str(init), "--data", str(tiny_data), "--out", str(out)]
    assert main([*argv, *TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.base_lr=0"]) == 0
    assert json.loads((out / "inputs.json").read_text()) == {
        "command": "pretrain",
        "init": str(init),
    }
    final, start = parameters(load_exported(out / "model")), parameters(load_exported(init))
    assert final.keys() == start.keys()
    assert all(torch.equal(final[name], start[name]) for name in start)
    losses = contrastive_loss(out)
    assert losses and all(math.isfinite(v) for v in losses)


def test_pretrain_continues_from_a_converted_tf_checkpoint(converted_tf, tiny_data, tmp_path):
    out = tmp_path / "from-tf"
    argv = ["pretrain", "--init", str(converted_tf), "--data", str(tiny_data), "--out", str(out)]
    head = "model.proj_dim=16"  # the fixture's head: 3 layers 256 -> 256 -> 16
    assert main([*argv, *TINY_OVERRIDES, "pretrain.epochs=1", head]) == 0
    log = (out / "log.txt").read_text()
    assert "r50_0.125x_sk1 encoder and its projection head" in log
    assert "grey images repeated to 3 channels" in log  # the authors' model takes RGB
    losses = contrastive_loss(out)
    assert losses and all(math.isfinite(v) for v in losses)
    exported = load_exported(out / "model")
    assert exported.encoder.spec == load_exported(converted_tf).encoder.spec
    # --resume rebuilds the r50 from the recorded --init (the config names an r18)
    (out / "model" / "model.safetensors").unlink()
    assert main(["pretrain", "--resume", str(out)]) == 0
    assert load_exported(out / "model").encoder.spec == exported.encoder.spec


def test_the_supervised_baseline_may_start_from_a_converted_supervised_checkpoint(
    converted_tf, tiny_data, tmp_path
):
    """A supervised release: encoder and classifier on h, no projection head."""
    converted = load_exported(converted_tf)
    supervised = ExportedModel(converted.encoder, classifier=converted.classifier, head_input=0)
    init = save_exported(supervised, tmp_path / "supervised")
    out = tmp_path / "baseline"
    argv = ["finetune", "--init", str(init), "--labels", "2-per-class", "--out", str(out)]
    assert main([*argv, "--data", str(tiny_data), *TINY_OVERRIDES]) == 0
    assert "no projection head; fine-tuning from h" in (out / "log.txt").read_text()
    assert json.loads((out / "results.json").read_text())["labelled_images"] == 20
    assert load_exported(out / "model").encoder.spec == converted.encoder.spec
