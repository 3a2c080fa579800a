"""The variable names of the authors' TF checkpoints, as *roles*: (part, layer kind, index, TF
attribute). TF1 names (``base_model/conv2d_5/kernel``) and the Keras full names of TF2 checkpoints
(``resnet/block_group1/.../conv2d_5/kernel``) parse to the same role; an encoder layer's index is
its rank among TF's counters of its kind, which is the order the PyTorch encoder registers its
layers in (:mod:`simclrv2.convert.tf_simclr`)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from simclrv2.convert.tensorbundle import OBJECT_GRAPH_KEY
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel

ENCODER_SCOPES = ("base_model", "resnet")  # TF1 graph scope, TF2 Keras name scope
HEAD_SCOPES = ("head_contrastive", "projection_head")
SUPERVISED_SCOPE = "head_supervised"
EMA_PREFIX = "ema_model/"  # TF1: moving-average copy of the weights
PARTS = {"encoder": "encoder", "head": "projection_head", "supervised": "classifier"}

# TF attribute -> PyTorch parameter or buffer, per layer kind
ATTRIBUTES = {
    "conv": {"kernel": "weight"},
    "dense": {"kernel": "weight", "bias": "bias"},
    "bn": {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    },
}
_LAYER = re.compile(r"^(conv2d|(?:sync_)?batch_normalization|dense)(?:_(\d+))?$")
_HEAD_LAYER = re.compile(r"^n?l_(\d+)$")  # nl_j (non-linear head), l_0 (linear head)

Role = tuple[str, str, int, str]  # (part, kind, index, TF attribute): ("encoder", "bn", 3, "gamma")


def tf_shape(shape: tuple[int, ...], role: Role) -> tuple[int, ...]:
    """The TF shape of a PyTorch tensor: conv kernels OIHW -> HWIO, dense kernels transposed."""
    if role[1] == "conv":
        return (shape[2], shape[3], shape[1], shape[0])
    if role[1] == "dense" and role[3] == "kernel":
        return (shape[1], shape[0])
    return tuple(shape)


def to_torch(array: np.ndarray, role: Role) -> torch.Tensor:
    """Inverse of :func:`tf_shape` on the values, as float32."""
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if role[1] == "conv":
        return tensor.permute(3, 2, 0, 1)
    if role[1] == "dense" and role[3] == "kernel":
        return tensor.T
    return tensor


def model_roles(model: ExportedModel) -> Iterator[tuple[str, str, tuple[int, ...], Role]]:
    """(part, torch key, torch shape, role) for every tensor a checkpoint must provide."""
    for role_part, part in PARTS.items():
        module = getattr(model, part)
        if module is None:
            continue
        counters: dict[str, int] = defaultdict(int)
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Conv2d):
                kind = "conv"
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                kind = "bn"
            elif isinstance(layer, nn.Linear):
                kind = "dense"
            else:
                continue
            index, counters[kind] = counters[kind], counters[kind] + 1
            for tf_attr, torch_attr in ATTRIBUTES[kind].items():
                tensor = getattr(layer, torch_attr)
                if tensor is not None:
                    key = f"{name}.{torch_attr}" if name else torch_attr
                    yield part, key, tuple(tensor.shape), (role_part, kind, index, tf_attr)


def tf1_names(model: ExportedModel) -> dict[str, tuple[int, ...]]:
    """The TF1 variable names and shapes the authors' code saves for ``model`` (global step and
    optimiser slots aside): what a released checkpoint of this architecture holds."""
    layers = {"conv": "conv2d", "bn": "batch_normalization", "dense": "dense"}
    names = {}
    for _, _, shape, role in model_roles(model):
        part, kind, index, attr = role
        if part == "encoder":
            name = f"{ENCODER_SCOPES[0]}/{layers[kind]}{f'_{index}' if index else ''}/{attr}"
        elif part == "head":
            name = f"{HEAD_SCOPES[0]}/nl_{index}/{layers[kind]}/{attr}"
        else:
            name = f"{SUPERVISED_SCOPE}/linear_layer/{layers[kind]}/{attr}"
        names[name] = tf_shape(shape, role)
    return names


# ----------------------------------------------------------------------------------------------
# Checkpoint variables -> roles


def ignore_reason(key: str) -> str | None:
    """Why a checkpoint key holds no model weight, or None if it should hold one."""
    if key == OBJECT_GRAPH_KEY:
        return "TF2 object graph, read for the Keras names"
    if key.endswith("/Momentum") or "/.OPTIMIZER_SLOT/" in key or key.startswith("optimizer/"):
        return "optimiser state"
    if key.split("/")[0] in ("global_step", "save_counter"):
        return "training step counter"
    return None


def _parse_role(name: str) -> Role | None:
    """(part, kind, TF layer number or head layer index, attribute) of a variable's full name."""
    parts = name.split("/")
    match = _LAYER.match(parts[-2]) if len(parts) >= 3 else None
    if not match:
        return None
    kind = {"conv2d": "conv", "dense": "dense"}.get(match[1], "bn")
    attr, number = parts[-1], int(match[2] or 0)
    if attr not in ATTRIBUTES[kind]:
        return None
    if parts[0] in ENCODER_SCOPES and kind != "dense":
        return "encoder", kind, number, attr
    if parts[0] in HEAD_SCOPES and kind != "conv":
        layer = next((m for p in parts[1:-2] if (m := _HEAD_LAYER.match(p))), None)
        return None if layer is None else ("head", kind, int(layer[1]), attr)
    if parts[0] == SUPERVISED_SCOPE and kind == "dense":
        return "supervised", kind, 0, attr
    return None


def checkpoint_roles(names: Mapping[str, str], source: str) -> dict[Role, str]:
    """Role -> checkpoint key, encoder layer numbers replaced by their rank among their kind."""
    parsed = {key: _parse_role(name) for key, name in names.items()}
    unknown = [key for key, role in parsed.items() if role is None]
    if unknown:
        raise UserError(
            f"{source} is not a SimCLR checkpoint: {len(unknown)} variables belong to no SimCLR "
            f"layer, e.g. {names[unknown[0]]!r}"
        )
    ranks = {
        kind: {
            n: i
            for i, n in enumerate(
                sorted({r[2] for r in parsed.values() if r[:2] == ("encoder", kind)})
            )
        }
        for kind in ("conv", "bn")
    }
    roles: dict[Role, str] = {}
    for key, (part, kind, number, attr) in parsed.items():
        role = (part, kind, ranks[kind][number] if part == "encoder" else number, attr)
        if role in roles:
            raise UserError(
                f"{source} holds two variables for one weight: {names[roles[role]]!r} and {names[key]!r}"
            )
        roles[role] = key
    return roles
