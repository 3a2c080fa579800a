"""Optimisation of SimCLR: LARS, parameter groups by role, learning-rate scaling, warm-up + cosine.

LARS as in the authors' ``lars_optimizer.py`` (classic momentum, trust coefficient eta = 0.001):
    g <- g + wd * w;  trust = eta * ||w|| / ||g|| (1 if either norm is 0);
    v <- m * v + lr * trust * g;  w <- w - v.
BatchNorm parameters and biases get neither weight decay nor the trust ratio; the supervised
(linear) head gets weight decay but no trust ratio, as the authors exclude ``head_supervised``
from LARS and add its L2 term to the loss instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from simclrv2.errors import UserError

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., arXiv 1708.03888), the SimCLR variant.

    Each parameter group may set ``lars=False`` to skip the trust ratio (its own ``weight_decay``
    decides decay); see :func:`parameter_groups`.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_device_and_dtype: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_device_and_dtype.setdefault((p.device, p.dtype), []).append(p)
            for params in by_device_and_dtype.values():
                self._update(params, group)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict) -> None:
        """One vectorised update of ``params`` (one device and dtype, each with a grad):

            g <- g + wd * w;  trust = eta * ||w|| / ||g|| (1 if either norm is 0, or lars=False);
            v <- m * v + lr * trust * g;  w <- w - v.

        The learning rate stays a Python float and the trust ratios stay on the device: the step
        never waits for the device.
        """
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        velocities = [self.state[p]["momentum_buffer"] for p in params]
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_mul_(velocities, group["momentum"])
        if group["lars"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0)
            torch._foreach_addcmul_(velocities, grads, trust.unbind(), value=group["lr"])
        else:
            torch._foreach_add_(velocities, grads, alpha=group["lr"])
        torch._foreach_sub_(params, velocities)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    classifiers: Iterable[nn.Module] = (),
    classifier_lr_scale: float = 1.0,
) -> list[dict]:
    """Split parameters by role, found by module type and tensor rank (never by name):

    - ``weights``: conv and linear weights; weight decay and the LARS trust ratio.
    - ``norm_and_bias``: parameters of normalisation layers and every 1-D tensor; neither.
    - ``classifier``: weights of the given supervised heads; weight decay, no trust ratio.
    - ``classifier_bias``: their biases; neither (the authors' L2 term skips them).

    The two classifier roles take ``classifier_lr_scale`` times the schedule's rate
    (:func:`set_learning_rate`), the others the rate itself.
    """
    heads = {id(p) for head in classifiers for p in head.parameters()}
    roles: dict[str, list[nn.Parameter]] = {
        "weights": [],
        "norm_and_bias": [],
        "classifier": [],
        "classifier_bias": [],
    }
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            flat = isinstance(module, NORM_TYPES) or p.ndim <= 1
            if id(p) in heads:
                roles["classifier_bias" if flat else "classifier"].append(p)
            else:
                roles["norm_and_bias" if flat else "weights"].append(p)
    settings = {  # weight decay, trust ratio, learning-rate scale
        "weights": (weight_decay, True, 1.0),
        "norm_and_bias": (0.0, False, 1.0),
        "classifier": (weight_decay, False, classifier_lr_scale),
        "classifier_bias": (0.0, False, classifier_lr_scale),
    }
    return [
        {
            "params": params,
            "role": role,
            "weight_decay": settings[role][0],
            "lars": settings[role][1],
            "lr_scale": settings[role][2],
        }
        for role, params in roles.items()
        if params
    ]


def describe_groups(groups: list[dict]) -> str:
    """One line for the log: how many tensors and values fall in each role."""
    parts = [
        f"{g['role']}: {len(g['params'])} tensors / {sum(p.numel() for p in g['params']):,}"
        for g in groups
    ]
    return "; ".join(parts)


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    classifiers: Iterable[nn.Module] = (),
    classifier_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """LARS (SimCLR's choice), SGD with Nesterov momentum (plain SGD at momentum 0), or AdamW,
    over :func:`parameter_groups`."""
    groups = parameter_groups(model, weight_decay, classifiers, classifier_lr_scale)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def scaled_learning_rate(
    base_lr: float, batch_size: int, scaling: Literal["linear", "sqrt"]
) -> float:
    """SimCLR's scaling rules: ``base * B / 256`` (linear, base 0.3) or ``base * sqrt(B)`` (sqrt)."""
    if scaling == "linear":
        return base_lr * batch_size / 256
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise UserError(f"unknown learning-rate scaling {scaling!r}; choose linear or sqrt")


@dataclass(frozen=True)
class WarmupCosine:
    """Learning rate at optimiser step ``step`` (0-based): linear warm-up from 0 to ``peak_lr`` over
    ``warmup_steps``, then cosine decay to 0 at ``total_steps`` (the authors' WarmUpAndCosineDecay)."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0

    @classmethod
    def from_warmup(
        cls,
        peak_lr: float,
        total_steps: int,
        warmup: float,
        unit: Literal["epochs", "fraction"],
        steps_per_epoch: int,
    ) -> WarmupCosine:
        """Warm-up given in epochs (v1: 10) or as a fraction of training (v2: 0.05)."""
        if unit == "epochs":
            steps = round(warmup * steps_per_epoch)
        elif unit == "fraction":
            steps = round(warmup * total_steps)
        else:
            raise UserError(f"unknown warm-up unit {unit!r}; choose epochs or fraction")
        return cls(peak_lr, total_steps, min(steps, total_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * step / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return self.peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` for every parameter group, times the group's ``lr_scale`` where it has one (a head
    with its own peak rate on the same schedule)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
