import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.errors import UserError
from simclrv2.models import (
    ResNetSpec,
    arch_name,
    build_encoder,
    parse_arch,
    resnet18,
    resnet50,
)
from simclrv2.models.resnet import ResNet, ResNetDPool, SelectiveKernel, TFSameMaxPool


def test_plain_resnet50_has_23_5m_parameters():
    with torch.device("meta"):
        encoder = resnet50()
    assert round(sum(p.numel() for p in encoder.parameters()) / 1e5) == 235


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("r152_3x_sk1", ResNetSpec(152, 3.0, 0.0625)),
        ("r50_1x_sk0", ResNetSpec(50, 1.0, 0.0)),
        ("r18_0.25x_sk0", ResNetSpec(18, 0.25, 0.0)),
        ("resnet101", ResNetSpec(101, 1.0, 0.0)),
        ("R50_2X_SK1", ResNetSpec(50, 2.0, 0.0625)),
    ],
)
def test_arch_names_parse(name, spec):
    assert parse_arch(name) == spec


def test_arch_name_round_trips():
    for name in ["r152_3x_sk1", "r18_0.25x_sk0", "r50_1x_sk0"]:
        assert arch_name(parse_arch(name)) == name


@pytest.mark.parametrize(
    ("bad", "must_mention"),
    [
        ("r51_1x_sk0", "[18, 34, 50, 101, 152, 200]"),
        ("vit_b16", "r<depth>_<width>x_sk<0|1>"),
        ("r50_1x_sk2", "sk<0|1>"),
    ],
)
def test_unknown_arch_is_a_one_line_error_listing_choices(bad, must_mention):
    with pytest.raises(UserError) as info:
        build_encoder(bad)
    assert must_mention in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_depth_and_width_in_constructor():
    with pytest.raises(UserError, match=r"\[18, 34, 50, 101, 152, 200\]"):
        ResNet(ResNetSpec(depth=42))
    with pytest.raises(UserError, match="width multiplier"):
        resnet50(width=8)
    with pytest.raises(UserError, match="width multiplier"):
        resnet50(width=0)


def test_cifar_stem_is_chosen_for_small_inputs():
    small, large = (
        build_encoder("r18_1x_sk0", image_size=32),
        build_encoder("r18_1x_sk0", image_size=96),
    )
    assert small.spec.cifar_stem and not large.spec.cifar_stem
    assert small.stem.kernel_size == (3, 3) and small.stem.stride == (1, 1)
    assert isinstance(small.max_pool, nn.Identity) and isinstance(large.max_pool, TFSameMaxPool)


@pytest.mark.parametrize(
    ("kwargs", "size", "dim"),
    [
        ({"depth": 18, "width": 0.25, "cifar_stem": True}, 28, 128),
        ({"depth": 34, "width": 0.25}, 64, 128),
        ({"depth": 50, "width": 0.125, "sk_ratio": 0.0625}, 64, 256),
        ({"depth": 50, "width": 0.25, "in_channels": 1, "cifar_stem": True}, 32, 512),
    ],
)
def test_forward_shapes_and_named_features(kwargs, size, dim):
    encoder = ResNet(ResNetSpec(**kwargs)).eval()
    x = torch.rand(2, kwargs.get("in_channels", 3), size, size)
    h = encoder(x)
    assert h.shape == (2, dim) and encoder.out_dim == dim
    features = encoder.features(x)
    assert list(features) == [
        "initial_conv", "initial_max_pool", "block_group1", "block_group2", "block_group3",
        "block_group4", "final_avg_pool",
    ]  # fmt: skip
    torch.testing.assert_close(features["final_avg_pool"], h)
    stride = 1 if kwargs.get("cifar_stem") else 4
    assert features["block_group1"].shape[-1] == size // stride
    assert features["block_group4"].shape[-1] == -(-size // (stride * 8))


@pytest.mark.parametrize("zero_init_residual", [True, False])
def test_no_conv_bias_and_zero_init_last_bn_of_each_branch(zero_init_residual):
    for build, kwargs in [(resnet18, {"width": 0.25}), (resnet50, {"width": 0.125, "sk_ratio": 0.0625})]:  # fmt: skip
        encoder = build(**kwargs, zero_init_residual=zero_init_residual)
        convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(c.bias is None for c in convs)
        blocks = [m for m in encoder.modules() if hasattr(m, "branch")]
        assert len(blocks) == sum(
            len(g) for g in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4)
        )
        last_bns = set()
        for block in blocks:
            last_bn = [m for m in block.branch.modules() if isinstance(m, nn.BatchNorm2d)][-1]
            assert torch.all(last_bn.weight == (0.0 if zero_init_residual else 1.0))
            last_bns.add(last_bn)
        other_bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d) and m not in last_bns]  # fmt: skip
        assert other_bns and all(torch.all(bn.weight == 1) for bn in other_bns)


def test_the_config_key_zero_init_residual_reaches_the_stage_encoder():
    from simclrv2.build import encoder as stage_encoder
    from simclrv2.config import load_config
    from simclrv2.data import ImageDataset

    data = ImageDataset(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    gammas = {}
    for value in ("true", "false"):
        config = load_config("fashion-mnist", overrides=[f"model.zero_init_residual={value}"])
        encoder = stage_encoder(config.model, "r18_0.125x_sk0", data)
        gammas[value] = encoder.layer1[0].branch[-1][0].weight
    assert torch.all(gammas["true"] == 0) and torch.all(gammas["false"] == 1)


def test_sk_uses_resnet_d_stem_and_shortcuts():
    encoder = resnet50(width=0.125, sk_ratio=0.0625)
    assert [m.kernel_size for m in encoder.stem if isinstance(m, nn.Conv2d)] == [(3, 3)] * 3
    shortcut = encoder.layer2[0].shortcut
    assert isinstance(shortcut[0], ResNetDPool) and shortcut[1].stride == (1, 1)
    assert isinstance(encoder.layer1[0].branch[2], SelectiveKernel)


@pytest.mark.parametrize("size", [6, 7, 112])
def test_stem_max_pool_pads_like_tf_same(size):
    x = torch.randn(1, 2, size, size)
    out = TFSameMaxPool()(x)
    expected_side = -(-size // 2)
    assert out.shape[-1] == expected_side
    # independent reference: window [2i - pad_before, 2i - pad_before + 3) clipped to the image
    pad_before = max((expected_side - 1) * 2 + 3 - size, 0) // 2
    for i, j in itertools.product(range(expected_side), repeat=2):
        r0, c0 = 2 * i - pad_before, 2 * j - pad_before
        window = x[..., max(r0, 0) : r0 + 3, max(c0, 0) : c0 + 3]
        torch.testing.assert_close(out[..., i, j], window.amax((-1, -2)))
    if size % 2 == 0:  # torch's symmetric padding=1 would shift the grid by a pixel
        assert not torch.equal(out, F.max_pool2d(x, 3, 2, padding=1))


@pytest.mark.parametrize("size", [5, 8])
def test_resnet_d_stride1_pool_excludes_padding(size):
    x = torch.randn(1, 3, size, size)
    out = ResNetDPool(1)(x)
    assert out.shape == x.shape
    for i, j in itertools.product(range(size), repeat=2):
        torch.testing.assert_close(out[..., i, j], x[..., i : i + 2, j : j + 2].mean((-1, -2)))


def test_resnet_d_stride2_pool_is_valid_2x2_after_end_padding():
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(ResNetDPool(2)(x), F.avg_pool2d(x, 2, 2))
    odd = torch.randn(1, 1, 5, 5)
    out = ResNetDPool(2)(odd)
    assert out.shape[-1] == 3
    torch.testing.assert_close(out[..., 2, 2], odd[..., 4, 4] / 4)  # zero padding counted


def test_selective_kernel_matches_direct_formula():
    torch.manual_seed(0)
    sk = SelectiveKernel(8, 8, stride=1, sk_ratio=0.0625).eval()
    x = torch.randn(2, 8, 6, 6)
    both = F.relu(sk.streams[1][0](F.conv2d(x, sk.streams[0].weight, padding=1)))
    a, b = both[:, :8], both[:, 8:]
    s = (a + b).mean((2, 3), keepdim=True)
    mid = sk.squeeze(s)
    assert mid.shape[1] == 32  # max(8 * 0.0625, 32)
    logits = sk.excite(mid)
    wa = torch.exp(logits[:, :8]) / (torch.exp(logits[:, :8]) + torch.exp(logits[:, 8:]))
    torch.testing.assert_close(sk(x), a * wa + b * (1 - wa))


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    encoder = resnet50(width=0.125, sk_ratio=0.0625).eval()
    x = torch.rand(2, 3, 64, 64)
    reference = encoder(x)
    encoder = encoder.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        encoder(x.to(memory_format=torch.channels_last)), reference, atol=1e-5, rtol=1e-4
    )
