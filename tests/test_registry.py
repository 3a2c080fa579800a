"""One suite over every registered architecture (as timm's model tests iterate its registry): a
name added to ``simclrv2.models.ARCHITECTURES`` is tested the day it is added.

Each name is checked at its real size on the meta device (parameter count against the paper's,
the TF variable names of its release mapping back onto it) and at a tiny width for real
computation (forward and backward with a gradient for every parameter, channels_last equal to
contiguous, an export round trip)."""

from dataclasses import replace

import pytest
import torch

from simclrv2.convert.tf_names import tf1_names
from simclrv2.convert.tf_simclr import plan_conversion
from simclrv2.export import ExportedModel, load_exported, save_exported
from simclrv2.models import (
    ARCHITECTURES,
    LinearClassifier,
    ProjectionHead,
    ResNet,
    build_encoder,
    parse_arch,
)

NAMES = list(ARCHITECTURES)
TINY_WIDTH = 1 / 16  # 4 stem channels (2 in the first ResNet-D conv): milliseconds per pass
SIDE = 32  # px; the standard stem brings it to 1x1 in the last block group


def tiny(name: str, zero_init_residual: bool = True, cifar_stem: bool = False) -> ResNet:
    """The architecture ``name`` (depth, selective kernels, ResNet-D) at the tiny width."""
    spec = replace(parse_arch(name), width=TINY_WIDTH, cifar_stem=cifar_stem)
    return ResNet(spec, zero_init_residual)


def with_heads(encoder: ResNet, head: bool) -> ExportedModel:
    """A release's parts: the encoder, SimCLRv2's 3-layer head (v2) or none (v1), a classifier."""
    projection = ProjectionHead(encoder.out_dim, num_layers=3, out_dim=16) if head else None
    return ExportedModel(encoder, projection, LinearClassifier(encoder.out_dim, 10), 0)


@pytest.mark.parametrize("name", NAMES)
def test_the_parameter_count_is_the_papers(name):
    with torch.device("meta"):
        encoder = build_encoder(name)
    millions = sum(p.numel() for p in encoder.parameters()) / 1e6
    paper = ARCHITECTURES[name].paper_params_m
    if paper is not None:
        assert abs(millions - paper) <= 1.0  # the paper's figures are rounded
    assert millions > 10  # every registered encoder is a full-width network


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_receives_a_gradient(name):
    encoder = tiny(name, zero_init_residual=False)  # a zero gamma would stop its branch's gradient
    images = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    h = encoder(images)
    assert h.shape == (2, encoder.out_dim) and torch.isfinite(h).all()
    (h * torch.randn_like(h)).sum().backward()
    silent = [
        key for key, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum()
    ]
    assert not silent, f"{len(silent)} parameters got no gradient, e.g. {silent[0]}"


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_computes_what_contiguous_computes(name):
    torch.manual_seed(0)
    contiguous = tiny(name, zero_init_residual=False).eval()
    last = tiny(name, zero_init_residual=False).eval()
    last.load_state_dict(contiguous.state_dict())
    last = last.to(memory_format=torch.channels_last)
    images = torch.rand(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = contiguous(images)
        found = last(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_an_export_round_trips(name, tmp_path):
    torch.manual_seed(0)
    model = with_heads(tiny(name, cifar_stem=True), head=True)
    model.head_input = 1
    save_exported(model, tmp_path / name)
    loaded = load_exported(tmp_path / name)
    assert loaded.encoder.spec == model.encoder.spec and loaded.head_input == 1
    for ours, theirs in zip(
        (model.encoder, model.projection_head, model.classifier),
        (loaded.encoder, loaded.projection_head, loaded.classifier),
    ):
        original, reloaded = ours.state_dict(), theirs.state_dict()
        assert original.keys() == reloaded.keys()
        assert all(torch.equal(original[key], reloaded[key]) for key in original)
    images = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.classifier_model().eval()(images)
        torch.testing.assert_close(loaded.classifier_model().eval()(images), expected)


@pytest.mark.parametrize("name", NAMES)
def test_the_tf_names_of_its_release_map_back_onto_it(name):
    """The TF1 variables the authors' code saves for this architecture (with a v2 head where the
    name is a SimCLRv2 release) are each mapped to one tensor of the same model, none left over."""
    v2 = ARCHITECTURES[name].paper_params_m is not None
    with torch.device("meta"):
        model = with_heads(ResNet(parse_arch(name)), head=v2)
    shapes = tf1_names(model)
    plan = plan_conversion(shapes, {key: key for key in shapes}, f"pretrained/{name}")
    assert plan.model.encoder.spec == model.encoder.spec
    assert (plan.model.projection_head is None) == (not v2)
    mapped = [key for keys in plan.sources.values() for key, _ in keys.values()]
    assert sorted(mapped) == sorted(shapes)
