import pytest
import torch
from torch import nn

from simclrv2.errors import UserError
from simclrv2.models import Classifier, ProjectionHead, resnet18
from simclrv2.models.heads import BatchNormNoShift


def test_v2_head_has_three_layers_with_bn_and_no_shift_on_the_last():
    head = ProjectionHead(64, num_layers=3, out_dim=128)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64), (64, 64), (64, 128)]
    assert all(m.bias is None for m in linears)
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 3 and bns[0].bias is not None and isinstance(bns[-1], BatchNormNoShift)
    assert bns[-1].bias is None and "bias" not in dict(bns[-1].named_parameters())
    relus = [m for m in head.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 2  # none after the last layer


def test_v1_head_and_custom_widths():
    head = ProjectionHead(32, num_layers=2, hidden_dim=48, out_dim=16)
    z = head(torch.randn(4, 32))
    assert z.shape == (4, 16)
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [48, 16]


def test_last_bn_has_no_shift_so_z_is_centred_in_training():
    head = ProjectionHead(8, num_layers=3, out_dim=4).train()
    with torch.no_grad():
        head.layers[-1][1].weight.fill_(2.0)
    z = head(torch.randn(64, 8) + 5)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("head_input", "layers", "dim"), [(0, 0, 32), (1, 1, 48), (2, 2, 48), (3, 3, 16), (-1, 3, 16)]
)
def test_head_input_picks_the_head_output(head_input, layers, dim):
    head = ProjectionHead(32, num_layers=3, hidden_dim=48, out_dim=16).eval()
    prefix = head.prefix(head_input)
    assert len(prefix) == layers and head.output_dim(head_input) == dim
    h = torch.randn(3, 32)
    expected = h
    for layer in head.layers[:layers]:
        expected = layer(expected)
    torch.testing.assert_close(prefix(h), expected)


def test_bad_head_input_and_depth():
    with pytest.raises(UserError, match="use 0"):
        ProjectionHead(8, num_layers=2).prefix(3)
    with pytest.raises(UserError, match="at least 1 layer"):
        ProjectionHead(8, num_layers=0)


def test_classifier_from_pretrained_shares_the_first_head_layer():
    encoder = resnet18(width=0.125, cifar_stem=True)
    head = ProjectionHead(encoder.out_dim, num_layers=3)
    model = Classifier.from_pretrained(encoder, head, head_input=1, num_classes=10).eval()
    assert model.head[0] is head.layers[0]
    x = torch.rand(2, 3, 16, 16)
    logits = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, model.linear(head.layers[0](encoder(x))))
    assert model.linear.weight.std() < 0.02 and torch.all(model.linear.bias == 0)
