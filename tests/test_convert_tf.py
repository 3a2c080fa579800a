import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simclrv2 import load_exported
from simclrv2.cli import main
from simclrv2.convert.object_graph import object_graph_names
from simclrv2.convert.tensorbundle import OBJECT_GRAPH_KEY, TensorBundle, shard_path, write_bundle
from simclrv2.convert.tf_names import tf1_names
from simclrv2.convert.tf_simclr import convert, head_input_rule, plan_conversion
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel
from simclrv2.models import ARCHITECTURES, LinearClassifier, ProjectionHead, ResNet, parse_arch
from simclrv2.tfio import protowire

SOURCES = {"tf1": "tf1/ckpt", "tf2": "tf2/ckpt", "savedmodel": "tf2_savedmodel"}
OUTPUTS = {"tf1": "tf1", "tf2": "tf2", "savedmodel": "tf2"}  # folder of the stored TF outputs
V1_ARCHS = ("r50_1x_sk0", "r50_2x_sk0", "r50_4x_sk0")  # SimCLR v1: ResNet50_{1x,2x,4x}
V2_ARCHS = [name for name, a in ARCHITECTURES.items() if a.paper_params_m]  # SimCLRv2's 13
TF1_PREFIX = "tf1/ckpt/model.ckpt-250228"


def assert_matches(ours: torch.Tensor, reference: np.ndarray, rel: float = 1e-4) -> None:
    """max |ours - TF| within ``rel`` of the largest TF value (TF1 and TF2 agree to about 1e-4)."""
    ours = ours.detach().numpy()
    if ours.ndim == 4:
        ours = ours.transpose(0, 2, 3, 1)  # NCHW -> the stored NHWC
    assert ours.shape == reference.shape
    error = np.abs(ours - reference).max() / np.abs(reference).max()
    assert error <= rel, f"relative error {error:.2e}"


def _images(folder: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)  # NHWC -> NCHW


@pytest.mark.parametrize("layout", SOURCES)
def test_converted_model_computes_what_tf_computed(simclr_tf, tmp_path, layout):
    convert(simclr_tf / SOURCES[layout], tmp_path / "out", head_input=0)
    model = load_exported(tmp_path / "out")
    outputs = simclr_tf / OUTPUTS[layout]
    x = _images(outputs)
    with torch.no_grad():
        h = model.encoder.eval()(x)
        assert_matches(h, np.load(outputs / "final_avg_pool.npy"))
        assert_matches(model.classifier_model().eval()(x), np.load(outputs / "logits_sup.npy"))
        if (outputs / "proj_head_output.npy").exists():
            assert_matches(
                model.projection_head.eval()(h), np.load(outputs / "proj_head_output.npy")
            )


def test_tf1_intermediate_maps_match(simclr_tf, tmp_path):
    """Stem max-pool ("SAME": bottom/right padding at 32 px) and the stride-1 ResNet-D shortcut
    pool of block_group1 are on this path."""
    convert(simclr_tf / SOURCES["tf1"], tmp_path / "out")
    encoder = load_exported(tmp_path / "out").encoder.eval()
    with torch.no_grad():
        features = encoder.features(_images(simclr_tf / "tf1"))
    for name in ("initial_conv", "initial_max_pool", *(f"block_group{i}" for i in range(1, 5))):
        assert_matches(features[name], np.load(simclr_tf / "tf1" / f"{name}.npy"))


@pytest.mark.parametrize(("selector", "stored"), [(0, "logits_sup"), (1, "logits_sup_selector1")])
def test_tf1_supervised_head_on_both_inputs(simclr_tf, tmp_path, selector, stored):
    convert(simclr_tf / SOURCES["tf1"], tmp_path / "out", head_input=selector)
    model = load_exported(tmp_path / "out")
    assert model.head_input == selector
    classifier = model.classifier_model().eval()
    tf_h = torch.from_numpy(np.load(simclr_tf / "tf1" / "final_avg_pool.npy"))
    reference = np.load(simclr_tf / "tf1" / f"{stored}.npy")
    with torch.no_grad():
        assert_matches(classifier.linear(classifier.head(tf_h)), reference)  # the heads alone
        # End to end, the first head layer's BatchNorm (statistics of one small batch) amplifies
        # the encoder's float32 rounding: our own float32 and float64 runs differ by 2e-4 there.
        assert_matches(
            classifier(_images(simclr_tf / "tf1")), reference, rel=1e-4 if selector == 0 else 5e-4
        )


def test_head_input_rule_comes_from_the_release_folder(simclr_tf, tmp_path):
    assert head_input_rule("ckpts/finetuned_10pct/r50_1x_sk1")[0] == 1
    assert head_input_rule("ckpts/finetuned_1pct/r152_3x_sk1/")[0] == 1
    assert head_input_rule("ckpts/finetuned_100pct/r50_1x_sk1")[0] == 0
    assert head_input_rule("ckpts/pretrained/r50_1x_sk1")[0] == 0
    release = tmp_path / "finetuned_1pct" / "r50_0.125x_sk1"
    shutil.copytree(simclr_tf / SOURCES["tf1"], release)
    plan = convert(release, tmp_path / "out")
    assert load_exported(tmp_path / "out").head_input == 1
    assert "finetuned_1pct" in plan.head_input_rule


def test_tf1_names_are_the_names_tf_saved(simclr_tf):
    with torch.device("meta"):
        encoder = ResNet(parse_arch("r50_0.125x_sk1"))
        head = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=16)
        model = ExportedModel(encoder, head, LinearClassifier(encoder.out_dim, 10))
    bundle = TensorBundle(simclr_tf / TF1_PREFIX)
    saved = {name: entry.shape for name, entry in bundle.entries.items() if name != "global_step"}
    assert tf1_names(model) == saved


def _release(name: str, v2: bool) -> ExportedModel:
    """A released model on the meta device: v2 with its 3-layer head, v1 without; 1000 classes."""
    with torch.device("meta"):
        encoder = ResNet(parse_arch(name))
        head = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=128) if v2 else None
        return ExportedModel(encoder, head, LinearClassifier(encoder.out_dim, 1000))


@pytest.mark.parametrize(
    ("name", "v2"), [(n, True) for n in V2_ARCHS] + [(n, False) for n in V1_ARCHS]
)
def test_released_architectures_map_exactly(name, v2):
    """Names and shapes of each release, with optimiser slots, EMA copies and the step counter."""
    model = _release(name, v2)
    weights = tf1_names(model)
    shapes = dict(weights)
    shapes |= {f"{n}/Momentum": s for n, s in weights.items()}
    shapes |= {f"ema_model/{n}": s for n, s in weights.items() if v2}
    shapes["global_step"] = ()
    names = {key: key for key in shapes}
    for ema in (False, True) if v2 else (False,):
        plan = plan_conversion(shapes, names, f"pretrained/{name}", ema=ema)
        assert plan.model.encoder.spec == model.encoder.spec
        if v2:
            head = plan.model.projection_head
            assert (head.num_layers, head.hidden_dim, head.out_dim) == (
                3,
                model.encoder.out_dim,
                128,
            )
        else:
            assert plan.model.projection_head is None
        assert plan.model.classifier.out_features == 1000 and plan.model.head_input == 0
        mapped = [key for keys in plan.sources.values() for key, _ in keys.values()]
        assert len(mapped) == len(set(mapped)) == len(weights)
        assert all(key.startswith("ema_model/") == ema for key in mapped)
        assert sum(len(keys) for keys in plan.ignored.values()) == len(shapes) - len(weights)


def test_ema_weights_are_taken_with_ema(simclr_tf, tmp_path):
    live = TensorBundle(simclr_tf / TF1_PREFIX)
    tensors = {name: live.read(name) for name in live.entries}
    ema = {f"ema_model/{n}": v * 0.5 for n, v in tensors.items() if n.startswith("base_model/")}
    slots = {f"{n}/Momentum": np.zeros_like(v) for n, v in tensors.items() if n != "global_step"}
    write_bundle(tmp_path / "model.ckpt-7", tensors | ema | slots)
    kernel = tensors["base_model/conv2d/kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
    for use_ema, scale in ((False, 1.0), (True, 0.5)):
        out = tmp_path / f"out_{use_ema}"
        plan = convert(tmp_path / "model.ckpt-7", out, ema=use_ema)
        weight = load_exported(out).encoder.stem[0].weight.detach().numpy()
        np.testing.assert_array_equal(weight, kernel * np.float32(scale))
        assert len(plan.ignored["optimiser state"]) == len(slots)
        assert load_exported(out).info["global_step"] == 250228


def test_cli_prints_the_summary(simclr_tf, tmp_path, capsys):
    assert (
        main(["convert-tf", str(simclr_tf / "tf2_savedmodel"), "--out", str(tmp_path / "o")]) == 0
    )
    out = capsys.readouterr().out
    assert "layout: TF2 SavedModel" in out
    assert "architecture: r50_0.125x_sk1" in out
    assert "parameters: 736,422 + 9,680 BatchNorm statistics" in out  # 746,102 in the README
    assert "ignored: 1 TF2 object graph" in out
    card = (tmp_path / "o" / "README.md").read_text()  # the model card, with what is known
    assert card.startswith("# r50_0.125x_sk1\n") and "- layout: TF2 SavedModel" in card
    assert "- parameters: 736,422 (" in card and "## Data\n\nNot recorded" in card


def _other_model(folder: Path) -> None:
    rng = np.random.default_rng(0)
    write_bundle(folder / "model.ckpt-1", {
        "vgg_16/conv1/conv1_1/weights": rng.standard_normal((3, 3, 3, 64)).astype(np.float32),
        "vgg_16/conv1/conv1_1/biases": np.zeros(64, np.float32),
    })  # fmt: skip


def _missing_shard(folder: Path, fixture: Path) -> None:
    shutil.copy(fixture / f"{TF1_PREFIX}.index", folder)


def _truncated_index(folder: Path, fixture: Path) -> None:
    shutil.copy(shard_path(fixture / TF1_PREFIX, 0, 1), folder)
    index = (fixture / f"{TF1_PREFIX}.index").read_bytes()
    (folder / "model.ckpt-250228.index").write_bytes(index[: len(index) // 2])


def _missing_layer(folder: Path, fixture: Path) -> None:
    bundle = TensorBundle(fixture / TF1_PREFIX)
    tensors = {n: bundle.read(n) for n in bundle.entries if "batch_normalization_7/" not in n}
    write_bundle(folder / "model.ckpt-1", tensors)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder, fixture: None, "no checkpoint file"),
        (_missing_shard, "data-00000-of-00001 is missing"),
        (_truncated_index, "index is truncated"),
        (lambda folder, fixture: _other_model(folder), "is not a SimCLR checkpoint"),
        (_missing_layer, "does not hold a complete r50_0.125x_sk1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(simclr_tf, tmp_path, capsys, make, message):
    source = tmp_path / "source"
    source.mkdir()
    make(source, simclr_tf)
    out = tmp_path / "out"
    assert main(["convert-tf", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and str(source) in error and "\n" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # no DIR, no staging folder


def test_wrong_head_input_and_busy_destination_are_refused(simclr_tf, tmp_path):
    with pytest.raises(UserError, match="out of range"):
        convert(simclr_tf / SOURCES["tf1"], tmp_path / "out", head_input=5)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        convert(simclr_tf / SOURCES["tf1"], tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def _object_graph(full_names: dict[str, str]) -> bytes:
    """A TrackableObjectGraph whose nodes each carry one variable (checkpoint key, full name)."""
    nodes = []
    for key, full_name in full_names.items():
        attribute = protowire.field(1, b"VARIABLE_VALUE") + protowire.field(2, full_name.encode())
        attribute += protowire.field(3, key.encode())
        nodes.append(protowire.field(1, protowire.field(2, attribute)))
    return b"".join(nodes)


def test_synchronised_batchnorm_names_of_the_tf2_releases(simclr_tf, tmp_path):
    """The TF2 releases were exported with SyncBatchNormalization: Keras names its layers
    sync_batch_normalization_N. The fixture's SavedModel, renamed so, converts to the same model."""
    saved = TensorBundle(simclr_tf / "tf2_savedmodel" / "variables" / "variables")
    names = {
        key: name.replace("batch_normalization", "sync_batch_normalization")
        for key, name in object_graph_names(saved).items()
    }
    tensors = {key: saved.read(key) for key in names}
    folder = tmp_path / "saved_model" / "variables"
    folder.mkdir(parents=True)
    write_bundle(folder / "variables", tensors | {OBJECT_GRAPH_KEY: _object_graph(names)})
    convert(tmp_path / "saved_model", tmp_path / "sync")
    convert(simclr_tf / "tf2_savedmodel", tmp_path / "plain")
    sync, plain = (load_exported(tmp_path / name) for name in ("sync", "plain"))
    for part in ("encoder", "projection_head", "classifier"):
        expected = getattr(plain, part).state_dict()
        for key, value in getattr(sync, part).state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
