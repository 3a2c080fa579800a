"""`simclrv2 export`: ONNX and TorchScript files that compute what PyTorch computes, for any batch
size, with the preprocessing contract inside; a run's final model; model cards; bad input."""

import json
import sys

import pytest
import torch

from conftest import TINY_OVERRIDES
from simclrv2 import load_exported, save_exported
from simclrv2.cli import main
from simclrv2.deploy import EXTRA_FILE, export, final_model
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel
from simclrv2.model_card import CARD, format_metric, parameter_count
from simclrv2.models import LinearClassifier, ProjectionHead, build_encoder

CLASSES = [f"class {k}" for k in range(10)]
INFO = {"stage": "finetune", "classes": CLASSES, "data": {"source": "tiny", "image_size": 28}}


def _tiny(classifier: bool = True, seed: int = 0) -> ExportedModel:
    """An eighth-width ResNet-18 at 28 px on one channel with non-trivial BatchNorm statistics
    (a file that ignored eval mode would differ) and, optionally, a classifier on head layer 1."""
    torch.manual_seed(seed)
    encoder = build_encoder("r18_0.125x_sk0", image_size=28, in_channels=1)
    head = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=16)
    for module in [*encoder.modules(), *head.modules()]:
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    linear = LinearClassifier(head.output_dim(1), 10) if classifier else None
    return ExportedModel(encoder, head, linear, 1 if classifier else 0, dict(INFO))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two exports: a fine-tuned classifier and a pretrained encoder without one."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "classifier": save_exported(_tiny(), root / "classifier"),
        "encoder": save_exported(_tiny(classifier=False), root / "encoder"),
    }


def _pytorch(directory, part: str, images: torch.Tensor) -> torch.Tensor:
    model = load_exported(directory)
    network = model.classifier_model() if part == "classifier" else model.encoder
    with torch.no_grad():
        return network.eval()(images)


def _decoded(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cell(card: str, metric: str) -> str:
    """The value of ``metric`` in the card's metrics table (its first split)."""
    row = next(line for line in card.splitlines() if line.startswith(f"| {metric} "))
    return row.split("|")[2].strip()


def _run(path, fmt: str, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The file's output on ``images`` and the contract it records, read as a user would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": images.numpy()})[0]
        return torch.from_numpy(out), session.get_modelmeta().custom_metadata_map
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        return module(images), json.loads(extra[EXTRA_FILE])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: TorchScript's age
@pytest.mark.parametrize("part", ["encoder", "classifier"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_file_computes_what_pytorch_computes_for_any_batch_size(saved, fmt, part, tmp_path):
    out = tmp_path / f"model.{fmt}"
    deployed = export(load_exported(saved[part]), fmt, out, part)
    assert deployed.path == out and deployed.max_difference < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no staging file left
    for batch in (1, 5):  # the exported example had 2 images
        images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        got, recorded = _run(out, fmt, images)
        want = _pytorch(saved[part], part, images)
        assert got.shape == want.shape == (batch, 10 if part == "classifier" else 64)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    if fmt == "onnx":  # metadata_props are strings: JSON but for the strings themselves
        recorded = {k: _decoded(v) for k, v in recorded.items()}
    assert recorded["input_side_px"] == 28 and recorded["input_channels"] == 1
    assert recorded["input_range"] == [0.0, 1.0] and recorded["input_layout"] == "NCHW"
    assert recorded["output"] == ("logits" if part == "classifier" else "h")
    assert recorded.get("classes") == (CLASSES if part == "classifier" else None)


def test_the_cli_exports_a_runs_final_model_and_prints_the_contract(tmp_path, capsys):
    run = tmp_path / "run"
    save_exported(_tiny(classifier=False, seed=1), run / "pretrain" / "model")
    save_exported(_tiny(seed=2), run / "distill-10%" / "model")
    out = tmp_path / "deploy" / "student.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"model: {run / 'distill-10%' / 'model'} (the distilled student)" in printed
    assert "its classifier as onnx" in printed
    assert "input: images, float32 (N, 1, 28, 28) NCHW, values in [0, 1]" in printed
    assert f"classes: {', '.join(CLASSES)}" in printed
    images = torch.rand(4, 1, 28, 28)
    got, recorded = _run(out, "onnx", images)
    want = _pytorch(run / "distill-10%" / "model", "classifier", images)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert json.loads(recorded["classes"]) == CLASSES


def test_a_run_s_final_model_is_the_student_else_the_fine_tuned_else_the_pretrained(tmp_path):
    def make(*folders):
        for folder in folders:
            (tmp_path / folder).mkdir(parents=True)
            (tmp_path / folder / "model.json").write_text("{}")

    make("pretrain/model", "supervised-10%/model")
    (tmp_path / "distill-1%" / "checkpoints").mkdir(parents=True)  # interrupted: no model yet
    assert final_model(tmp_path) == (tmp_path / "pretrain/model", "the pretrained model")
    make("finetune-1%/model", "finetune-10%/model")
    assert final_model(tmp_path)[0] == tmp_path / "finetune-10%/model"  # the most labels
    make("distill-1%/model")
    assert final_model(tmp_path) == (tmp_path / "distill-1%/model", "the distilled student")
    assert final_model(tmp_path / "pretrain/model")[0] == tmp_path / "pretrain/model"
    make("single/model")
    assert final_model(tmp_path / "single") == (tmp_path / "single/model", "the run's model")
    with pytest.raises(UserError, match="neither an exported model nor a run") as error:
        final_model(tmp_path / "distill-1%" / "checkpoints")
    assert "\n" not in str(error.value)


def test_the_card_shows_the_metrics_and_the_parameter_count(tmp_path):
    model = _tiny()
    confusion = [[3 if k == j else 0 for j in range(10)] for k in range(9)] + [[1] * 4 + [0] * 6]
    metrics = {"top1": 68.75, "top5": 97.123456, "confusion": confusion, "images": 40}
    config = "model:\n  arch: r18_0.125x_sk0\n"
    save_exported(model, tmp_path / "m", metrics={"test": metrics}, config=config)
    card = (tmp_path / "m" / CARD).read_text()
    parts = (model.encoder, model.projection_head, model.classifier)
    count = sum(p.numel() for part in parts for p in part.parameters())
    assert f"- parameters: {count:,} (encoder {parameter_count(model.encoder):,}" in card
    assert "| metric " in card and " test " in card.split("| metric ")[1].splitlines()[0]
    for name in ("top1", "top5", "images"):
        assert _cell(card, name) == format_metric(metrics[name])
    assert format_metric(97.123456) == "97.12"
    assert "| confusion " not in card  # shown as per-class accuracy instead
    assert "(the confusion matrix's rows): class 0 100.00, class 1 100.00," in card
    assert "class 8 100.00, class 9 0.00." in card
    assert "```yaml\nmodel:\n  arch: r18_0.125x_sk0\n```" in card
    assert f'simclrv2.load_exported("{tmp_path / "m"}")' in card
    assert f"simclrv2 export {tmp_path / 'm'} --format onnx --out model.onnx" in card
    assert "onnxruntime.InferenceSession" in card


def test_a_finetune_stage_s_card_holds_its_results(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["finetune", "--labels", "50%", "--data", str(tiny_data), "--out", str(run)]
    assert main([*argv, *TINY_OVERRIDES]) == 0
    results = json.loads((run / "results.json").read_text())
    card = (run / "model" / CARD).read_text()
    assert _cell(card, "top1") == format_metric(results["top1"])
    assert "- train: 80 images, 80 labelled" in card and "- test: 40 images, 40 labelled" in card
    assert "| T-shirt/top " in card  # labels per class, by name
    assert "arch: r18_0.125x_sk0" in card  # the resolved config
    info = load_exported(run / "model").info
    assert info["classes"][0] == "T-shirt/top" and info["data"]["image_size"] == 28
    assert sum(info["data"]["splits"]["train"]["labels_per_class"].values()) == 80


def test_bad_requests_are_one_line_errors(saved, tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.onnx"
    argv = ["export", str(saved["classifier"]), "--out", str(out)]
    assert main([*argv, "--format", "tensorflow"]) == 2
    assert main(["export", str(saved["encoder"]), "--out", str(out), "--format", "onnx", "--part", "classifier"]) == 2  # fmt: skip
    assert main([*argv, "--format", "onnx", "--part", "head"]) == 2
    assert main(["export", str(tmp_path), "--out", str(out), "--format", "onnx"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and all(e.startswith("simclrv2: error: ") for e in errors)
    assert (
        "unknown export format 'tensorflow'; use --format onnx or --format torchscript" in errors[0]
    )
    assert "no classifier; use --part encoder" in errors[1]
    assert "unknown part 'head'" in errors[2] and "neither an exported model" in errors[3]
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(UserError, match=r'pip install "simclrv2\[deploy\]"'):
        export(load_exported(saved["classifier"]), "onnx", out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_exports_without_recorded_data_assume_the_stem_s_side(tmp_path):
    assert _tiny().input_side() == (28, "the side it was trained at")
    for image_size, side in ((28, 32), (64, 224)):  # the CIFAR stem, the ImageNet stem
        model = ExportedModel(build_encoder("r18_0.125x_sk0", image_size=image_size))
        assert model.input_side()[0] == side
        card = (save_exported(model, tmp_path / str(side)) / CARD).read_text()
        assert f"Not recorded in this export. Input side: {side} px (not recorded;" in card
