import json

import pytest
import torch

from simclrv2 import load_encoder, load_exported, save_exported
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel
from simclrv2.models import LinearClassifier, ProjectionHead, resnet50


def _model() -> ExportedModel:
    torch.manual_seed(0)
    encoder = resnet50(width=0.125, sk_ratio=0.0625)
    head = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=16)
    classifier = LinearClassifier(head.output_dim(1), 10)
    for module in encoder.modules():  # non-trivial BN statistics so the test can fail
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    return ExportedModel(encoder, head, classifier, head_input=1, info={"source": "test"})


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    save_exported(model, tmp_path / "export")
    loaded = load_exported(tmp_path / "export")
    assert loaded.head_input == 1
    assert loaded.info == {"source": "test"}
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded.encoder.eval()(x), model.encoder.eval()(x), rtol=0, atol=0)
    want = model.classifier_model().eval()(x)
    torch.testing.assert_close(loaded.classifier_model().eval()(x), want, rtol=0, atol=0)
    torch.testing.assert_close(
        load_encoder(tmp_path / "export")(x), model.encoder(x), rtol=0, atol=0
    )
    meta = json.loads((tmp_path / "export" / "model.json").read_text())
    assert meta["arch"] == "r50_0.125x_sk1"


def test_existing_directory_is_not_overwritten(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        save_exported(_model(), tmp_path / "export")
    assert (tmp_path / "export" / "keep.txt").read_text() == "mine"


def test_a_killed_writers_staging_directory_is_cleared_by_the_next_export(tmp_path, monkeypatch):
    import simclrv2.atomic as atomic
    import simclrv2.export as export

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the writer dies inside the staging directory

    monkeypatch.setattr(export, "save_file", killed)
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *a, **k: None)  # SIGKILL: no clean-up
    with pytest.raises(KeyboardInterrupt):
        save_exported(_model(), tmp_path / "export")
    monkeypatch.undo()
    assert len(list(tmp_path.iterdir())) == 1  # the killed writer's staging directory
    (tmp_path / "export-other").mkdir()  # a sibling with a similar name is not touched
    save_exported(_model(), tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export-other"]


def test_bad_exports_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not an exported model"):
        load_exported(tmp_path)
    save_exported(_model(), tmp_path / "e")
    weights = tmp_path / "e" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_exported(tmp_path / "e")
    save_exported(_model(), tmp_path / "f")
    meta = json.loads((tmp_path / "f" / "model.json").read_text())
    meta["encoder"]["depth"] = 18
    (tmp_path / "f" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match"):
        load_exported(tmp_path / "f")


def test_flipped_bits_in_the_weights_are_caught_by_the_checksum(tmp_path):
    save_exported(_model(), tmp_path / "e")
    weights = tmp_path / "e" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor: a valid file with one wrong weight
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its checksum"):
        load_exported(tmp_path / "e")


def test_a_description_asking_for_a_huge_model_fails_before_allocating(tmp_path):
    save_exported(_model(), tmp_path / "e")
    meta = json.loads((tmp_path / "e" / "model.json").read_text())
    meta["encoder"]["in_channels"] = 10**12  # terabytes of stem weights, were it built
    (tmp_path / "e" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match"):
        load_exported(tmp_path / "e")
