import copy
import io
import math

import pytest
import torch
from torch import nn

from simclrv2.errors import UserError
from simclrv2.models import Classifier, LinearClassifier, ProjectionHead, resnet18
from simclrv2.optim import (
    LARS,
    WarmupCosine,
    build_optimizer,
    parameter_groups,
    scaled_learning_rate,
    set_learning_rate,
)


def test_one_lars_step_equals_the_hand_computed_update():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0, -2.0]))  # excluded: no decay, no trust ratio
    w.grad, b.grad = torch.tensor([0.6, 0.8]), torch.tensor([0.5, 0.25])
    lr, wd, eta, m = 0.4, 0.1, 0.001, 0.9
    opt = LARS(
        [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0, "lars": False}],
        lr=lr,
        momentum=m,
        eta=eta,
    )
    opt.step()
    # w: g = [0.6, 0.8] + 0.1 * [3, 4] = [0.9, 1.2], ||g|| = 1.5; trust = 0.001 * 5 / 1.5
    trust = 0.001 * 5 / 1.5
    v_w = [lr * trust * 0.9, lr * trust * 1.2]
    torch.testing.assert_close(w.detach(), torch.tensor([3.0 - v_w[0], 4.0 - v_w[1]]))
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - lr * 0.5, -2.0 - lr * 0.25]))
    # second step: momentum carries the first velocity
    w.grad, b.grad = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0])
    before = w.detach().clone()
    opt.step()
    g2 = wd * before
    trust2 = eta * before.norm() / g2.norm()
    expected = before - (m * torch.tensor(v_w) + lr * trust2 * g2)
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(
        b.detach(), torch.tensor([1.0 - lr * 0.5 * (1 + m), -2.0 - lr * 0.25 * (1 + m)])
    )


def test_lars_trust_ratio_is_one_when_a_norm_is_zero():
    w = nn.Parameter(torch.zeros(3))
    w.grad = torch.tensor([1.0, 2.0, 2.0])
    LARS([w], lr=0.5, momentum=0.9).step()  # 1-D, but forced into the trust group: ||w|| = 0
    torch.testing.assert_close(w.detach(), torch.tensor([-0.5, -1.0, -1.0]))


class TwoHeads(nn.Module):
    """A conv trunk with BatchNorm, a head, a second head with zero weights, a tensor whose grad is
    zero and one whose grad stays None."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(16, 3)
        self.zero_head = nn.Linear(16, 2)
        nn.init.zeros_(self.zero_head.weight)
        self.muted = nn.Parameter(torch.randn(3))
        self.unused = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return self.head(h).square().mean() + self.zero_head(h).sin().sum() + 0 * self.muted.sum()

    def groups(self) -> list[dict]:
        """Every combination of trust ratio and weight decay, one group with its own lr."""
        conv, bn = self.trunk[0], self.trunk[1]
        return [
            {"params": [conv.weight], "weight_decay": 0.01, "lr": 5.0},
            {
                "params": [self.zero_head.weight, self.muted, self.unused],
                "weight_decay": 0.0,
                "lr": 5.0,
            },
            {
                "params": [conv.bias, bn.weight, bn.bias, self.head.bias, self.zero_head.bias],
                "weight_decay": 0.0,
                "lars": False,
            },
            {"params": [self.head.weight], "weight_decay": 0.01, "lars": False, "lr": 0.02},
        ]


def reference_lars_update(w, g, v, lr, momentum, weight_decay, eta, lars):
    """One tensor's update, written out from the formula."""
    g = g + weight_decay * w
    trust = eta * w.norm() / g.norm() if lars and w.norm() > 0 and g.norm() > 0 else 1.0
    v = momentum * v + lr * trust * g
    return w - v, v


def test_lars_equals_a_per_tensor_reference_over_five_steps():
    torch.manual_seed(0)
    model = TwoHeads()
    opt = LARS(model.groups(), lr=0.05, momentum=0.9, eta=0.01)
    reference = {p: (p.detach().clone(), torch.zeros_like(p)) for p in model.parameters()}
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 3, 4, 4)).backward()
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    w, v = reference[p]
                    settings = [group[k] for k in ("lr", "momentum", "weight_decay", "eta", "lars")]
                    reference[p] = reference_lars_update(w, p.grad, v, *settings)
        opt.step()
        for p, (w, _) in reference.items():
            torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-7)
        for group in opt.param_groups:
            group["lr"] *= 0.8  # the schedule changes the Python float between steps
    assert model.unused.grad is None and model.unused not in opt.state
    torch.testing.assert_close(model.unused.detach(), torch.ones(5), rtol=0, atol=0)
    assert model.zero_head.weight.abs().min() > 0  # the zero-weight tensor moved (trust 1 at first)
    for p, (_, v) in reference.items():
        if p is not model.unused:
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], v, rtol=1e-6, atol=1e-7)


def test_lars_continues_identically_after_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = TwoHeads()
    opt = LARS(model.groups(), lr=0.05, momentum=0.9, eta=0.01)
    grads = torch.Generator().manual_seed(1)

    def step(model: TwoHeads, optimizer: LARS, seed: int) -> None:
        grads.manual_seed(seed)
        for p in model.parameters():
            if p is not model.unused:
                p.grad = torch.randn(p.shape, generator=grads)
        optimizer.step()

    for seed in range(3):
        step(model, opt, seed)
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    restored = copy.deepcopy(model)
    restored_opt = LARS(restored.groups(), lr=0.05, momentum=0.9, eta=0.01)
    saved.seek(0)
    restored_opt.load_state_dict(torch.load(saved))
    assert all("momentum_buffer" in s for s in restored_opt.state.values())
    for seed in range(3, 6):
        step(model, opt, seed)
        step(restored, restored_opt, seed)
    for p, q in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0)


def test_parameter_groups_by_role_not_by_name():
    encoder = resnet18(width=0.25, cifar_stem=True)
    head = ProjectionHead(encoder.out_dim)
    model = Classifier.from_pretrained(encoder, head, head_input=1, num_classes=10)
    groups = {
        g["role"]: g for g in parameter_groups(model, weight_decay=1e-4, classifiers=[model.linear])
    }
    ids = {role: {id(p) for p in g["params"]} for role, g in groups.items()}
    bn_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for p in m.parameters(recurse=False)
    }
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert bn_params <= ids["norm_and_bias"] and ids["classifier_bias"] == {id(model.linear.bias)}
    assert conv_weights <= ids["weights"] and ids["classifier"] == {id(model.linear.weight)}
    assert sum(len(v) for v in ids.values()) == len(list(model.parameters()))
    assert (groups["weights"]["weight_decay"], groups["weights"]["lars"]) == (1e-4, True)
    assert (groups["norm_and_bias"]["weight_decay"], groups["norm_and_bias"]["lars"]) == (
        0.0,
        False,
    )
    assert (groups["classifier"]["weight_decay"], groups["classifier"]["lars"]) == (1e-4, False)
    bias = groups["classifier_bias"]
    assert (bias["weight_decay"], bias["lars"]) == (0.0, False)


def test_the_classifier_groups_take_their_own_rate_on_the_same_schedule():
    model = Classifier(resnet18(width=0.125), nn.Sequential(), LinearClassifier(64, 10))
    optimizer = build_optimizer("lars", model, 1.0, 1e-4, classifiers=[model.linear],
                                classifier_lr_scale=0.01)  # fmt: skip
    set_learning_rate(optimizer, 2.0)
    rates = {g["role"]: g["lr"] for g in optimizer.param_groups}
    assert rates == {"weights": 2.0, "norm_and_bias": 2.0, "classifier": 0.02,
                     "classifier_bias": 0.02}  # fmt: skip


def test_renamed_parameters_keep_their_role():
    model = nn.Sequential()
    model.add_module("weights_of_bn", nn.BatchNorm2d(4))
    model.add_module("bn_named_conv", nn.Conv2d(4, 4, 3))
    groups = {g["role"]: g["params"] for g in parameter_groups(model, 1e-4)}
    assert groups["weights"] == [model.bn_named_conv.weight]
    assert len(groups["norm_and_bias"]) == 3


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_every_optimizer_decreases_a_quadratic(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)  # a bias would take LARS's raw learning rate
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    opt = build_optimizer(
        name, model, lr={"lars": 100.0, "sgd": 0.05, "adamw": 0.05}[name], weight_decay=0.0
    )

    def loss():
        return ((model(x).squeeze(1) - y) ** 2).mean()

    start = loss().item()
    for _ in range(50):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.5 * start


def test_unknown_optimizer_lists_choices():
    with pytest.raises(UserError, match="lars, sgd, adamw"):
        build_optimizer("adam", nn.Linear(2, 2), 0.1, 0.0)


def test_learning_rate_scaling_rules():
    assert scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    with pytest.raises(UserError, match="linear or sqrt"):
        scaled_learning_rate(0.3, 256, "log")


def test_warmup_cosine_values():
    schedule = WarmupCosine.from_warmup(
        peak_lr=2.0, total_steps=1000, warmup=10, unit="epochs", steps_per_epoch=10
    )
    assert schedule.warmup_steps == 100
    assert schedule(0) == 0.0 and schedule(50) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(2.0)  # end of warm-up: the peak
    assert schedule(550) == pytest.approx(1.0)  # half-way through the cosine
    assert schedule(999) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 899 / 900)))
    assert schedule(999) < 1e-4 and schedule(1000) == 0.0
    fraction = WarmupCosine.from_warmup(1.0, 2000, warmup=0.05, unit="fraction", steps_per_epoch=7)
    assert fraction.warmup_steps == 100
    assert WarmupCosine(1.0, 10)(0) == 1.0  # no warm-up


def test_sgd_at_momentum_zero_is_plain_gradient_descent():
    model = nn.Linear(3, 1, bias=False)
    before = model.weight.detach().clone()
    opt = build_optimizer("sgd", model, lr=0.1, weight_decay=0.0, momentum=0.0)
    model(torch.ones(1, 3)).sum().backward()  # gradient of the weights: ones
    opt.step()
    torch.testing.assert_close(model.weight.detach(), before - 0.1)
