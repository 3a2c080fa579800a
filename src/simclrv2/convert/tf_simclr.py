"""The authors' TensorFlow SimCLR checkpoints -> this project's exported-model format.

Three layouts hold the same variables under different names:

- TF1 (``model.ckpt-N``, the released v1 and v2 files): graph scopes ``base_model``,
  ``head_contrastive`` and ``head_supervised``; layers numbered per type in construction order
  (``conv2d``, ``conv2d_1``, ..., ``batch_normalization_N``); ``ema_model/`` holds a
  moving-average copy.
- TF2 checkpoints and SavedModels: keys are object paths, but the object graph stored beside them
  gives each variable its Keras ``full_name`` (``resnet/block_group1/.../conv2d_5/kernel``,
  ``projection_head/nl_0/...``), numbered the same way (``sync_batch_normalization_N`` under
  synchronised BN).

So every variable is named by a *role*: (part, layer kind, index, attribute), where the index of an
encoder conv or BN is its rank among TF's counters. The PyTorch encoder registers its layers in the
order the TF code builds them (a block's projection shortcut first, SK convs in call order), so role
``("encoder", "conv", i, "kernel")`` is the i-th ``Conv2d`` of ``ResNet.modules()``. The
architecture is inferred from the kernel shapes, and the model built from it on the meta device must
account for every variable, shape for shape: nothing missing, nothing unused.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from simclrv2.convert.locate import find_prefix
from simclrv2.convert.object_graph import object_graph_names
from simclrv2.convert.tensorbundle import TensorBundle
from simclrv2.convert.tf_names import (
    EMA_PREFIX,
    Role,
    checkpoint_roles,
    ignore_reason,
    model_roles,
    tf_shape,
    to_torch,
)
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel, check_destination, save_exported
from simclrv2.models import LinearClassifier, ProjectionHead, ResNet, ResNetSpec, arch_name
from simclrv2.models.registry import SK_RATIO
from simclrv2.models.resnet import DEPTHS

_FINETUNED = re.compile(r"^finetuned_(\d+)pct$")  # the authors' fine-tuned folders

# ----------------------------------------------------------------------------------------------
# Architecture


def infer_encoder(kernels: list[tuple[int, ...]], source: str) -> ResNetSpec:
    """The ResNet whose conv kernels (HWIO, in TF construction order) these are.

    Stem: one 7x7 conv (standard), three 3x3 convs of 32w, 32w and 64w filters (ResNet-D), or one
    3x3 conv (CIFAR). Next come the first block's projection shortcut (1x1) and its first conv:
    1x1 in a bottleneck, 3x3 in a basic block; under SK, a bottleneck's 3x3 conv has 2x filters.
    A block has 2 (basic), 3 (bottleneck) or 5 (SK bottleneck) convs, and 4 blocks have shortcuts.
    Anything this misreads is caught by the shape-for-shape check that follows.
    """
    if len(kernels) < 6 or any(len(k) != 4 for k in kernels):
        raise UserError(f"{source} is not a SimCLR ResNet checkpoint: {len(kernels)} conv kernels")
    first, second = kernels[0], kernels[1]
    resnet_d = first[0] == 3 and second[:2] == (3, 3) and second[2] == second[3] == first[3]
    stem = 3 if resnet_d else 1
    bottleneck = kernels[stem + 1][0] == 1
    sk = bottleneck and kernels[stem + 2][3] == 2 * kernels[stem + 2][2]
    per_block = (5 if sk else 3) if bottleneck else 2
    blocks, remainder = divmod(len(kernels) - stem - 4, per_block)
    kind = "bottleneck" if bottleneck else "basic"
    depth = next((d for d, (k, b) in DEPTHS.items() if k == kind and sum(b) == blocks), None)
    if remainder or depth is None:
        raise UserError(
            f"{source} is not a SimCLR ResNet checkpoint: {len(kernels)} conv kernels fit no "
            f"{kind} ResNet of depth {sorted(DEPTHS)}"
        )
    width = kernels[stem - 1][3] / 64
    return ResNetSpec(
        depth, width, SK_RATIO if sk else 0.0, first[0] == 3 and not resnet_d, first[2]
    )


def head_input_rule(source: str | Path) -> tuple[int, str]:
    """The head output the released classifier reads, which the checkpoint does not record: from
    the folder name, fine-tuned on 1% or 10% of the labels -> first head layer (1), else h (0)."""
    for part in reversed(Path(source).resolve().parts):
        match = _FINETUNED.match(part)
        if match:
            head_input = 0 if match[1] == "100" else 1
            return head_input, f"rule: folder {part}"
    return 0, "rule: default h, no finetuned_<N>pct folder in the path; set --head-input"


def _build(
    spec: ResNetSpec,
    roles: Mapping[Role, str],
    shapes: Mapping[str, tuple[int, ...]],
    head_input: int,
    source: str,
) -> ExportedModel:
    """Encoder, projection head and classifier on the meta device, sized from the checkpoint."""
    head_layers = sorted({role[2] for role in roles if role[0] == "head"})
    if any(("head", "dense", j, "kernel") not in roles for j in head_layers):
        raise UserError(f"{source} has a projection head layer without its dense kernel")
    with torch.device("meta"):
        encoder = ResNet(spec)
        head = None
        if head_layers:
            widths = [shapes[roles[("head", "dense", j, "kernel")]][1] for j in head_layers]
            head = ProjectionHead(encoder.out_dim, len(widths), widths[0], widths[-1])
        classifier = None
        if ("supervised", "dense", 0, "kernel") in roles:
            in_dim = head.output_dim(head_input) if head is not None else encoder.out_dim
            classes = shapes[roles[("supervised", "dense", 0, "kernel")]][1]
            classifier = LinearClassifier(in_dim, classes)
    return ExportedModel(encoder, head, classifier, head_input)


@dataclass
class Plan:
    """What a conversion does, decided from names and shapes alone (no tensor is read)."""

    model: ExportedModel  # on the meta device
    sources: dict[str, dict[str, tuple[str, Role]]]  # part -> torch key -> (checkpoint key, role)
    ignored: dict[str, list[str]]  # reason -> checkpoint keys
    head_input_rule: str
    layout: str

    def summary(self) -> list[str]:
        """Lines for a person: architecture, parameter count, what was mapped and ignored, why."""
        model, head, classifier = self.model, self.model.projection_head, self.model.classifier
        modules = [m for m in (model.encoder, head, classifier) if m is not None]
        params = sum(p.numel() for m in modules for p in m.parameters())
        stats = sum(b.numel() for m in modules for n, b in m.named_buffers() if "running" in n)
        lines = [
            f"layout: {self.layout}",
            f"architecture: {arch_name(model.encoder.spec)}, h of {model.encoder.out_dim}; "
            + (
                "no projection head"
                if head is None
                else f"projection head of {head.num_layers} layers ({head.hidden_dim} -> {head.out_dim})"
            ),
            "classifier: none"
            if classifier is None
            else f"classifier: {classifier.out_features} classes on head output {model.head_input} "
            f"({self.head_input_rule})",
            f"parameters: {params:,} + {stats:,} BatchNorm statistics",
            "mapped: "
            + ", ".join(f"{len(keys)} tensors to {part}" for part, keys in self.sources.items())
            + " (CRC-32C checked)",
        ]
        lines += [f"ignored: {len(k)} {reason}, e.g. {k[0]}" for reason, k in self.ignored.items()]
        return lines


def plan_conversion(
    shapes: Mapping[str, tuple[int, ...]],
    names: Mapping[str, str],
    source: str,
    head_input: int | None = None,
    ema: bool = False,
    layout: str = "TF1 checkpoint",
) -> Plan:
    """Map checkpoint keys (with their shapes and full names) onto a model inferred from them.

    ``head_input`` is the head output the classifier reads (None: :func:`head_input_rule` on
    ``source``); ``ema`` takes each weight from its ``ema_model/`` copy where there is one.
    """
    all_names = set(names.values())
    if ema and not any(name.startswith(EMA_PREFIX) for name in all_names):
        raise UserError(f"{source} has no {EMA_PREFIX} copy of the weights; drop --ema")
    ignored: dict[str, list[str]] = defaultdict(list)
    model_names = {}  # checkpoint key -> full name without the EMA prefix
    for key, name in names.items():
        base = name.removeprefix(EMA_PREFIX)
        reason = ignore_reason(key)
        if reason is None and name != base and not ema:
            reason = "moving-average (EMA) copies; convert them with --ema"
        if reason is None and name == base and ema and EMA_PREFIX + name in all_names:
            reason = "live weights replaced by their EMA copy (--ema)"
        if reason:
            ignored[reason].append(key)
        else:
            model_names[key] = base
    roles = checkpoint_roles(model_names, source)
    conv_keys = sorted((r, k) for r, k in roles.items() if r[:2] == ("encoder", "conv"))
    spec = infer_encoder([tuple(shapes[k]) for _, k in conv_keys], source)

    has_head = any(role[0] == "head" for role in roles)
    if head_input is not None and not has_head and head_input != 0:
        raise UserError(f"{source} has no projection head; --head-input must be 0 (h)")
    head_input, rule = (
        (head_input, "--head-input") if head_input is not None else head_input_rule(source)
    )
    if not has_head:
        head_input, rule = 0, "h: there is no projection head"
    model = _build(spec, roles, shapes, head_input, source)

    _check_layer_counts(model, roles, source)
    sources: dict[str, dict[str, tuple[str, Role]]] = defaultdict(dict)
    for part, torch_key, shape, role in model_roles(model):
        key = roles.pop(role, None)
        if key is None:
            raise UserError(
                f"{source} does not hold a complete {arch_name(spec)}: nothing for {part}.{torch_key}"
            )
        expected = tf_shape(shape, role)
        if tuple(shapes[key]) != expected:
            hint = "; set --head-input to the head output it reads" if part == "classifier" else ""
            raise UserError(
                f"{source} does not fit {arch_name(spec)}: {model_names[key]} has shape "
                f"{tuple(shapes[key])}, {part}.{torch_key} needs {expected}{hint}"
            )
        sources[part][torch_key] = (key, role)
    if roles:
        extra = model_names[next(iter(roles.values()))]
        raise UserError(
            f"{source} has {len(roles)} variables that {arch_name(spec)} does not use, e.g. "
            f"{extra}; it is not a SimCLR checkpoint this converter knows"
        )
    return Plan(model, dict(sources), dict(ignored), rule, layout)


def _check_layer_counts(model: ExportedModel, roles: Mapping[Role, str], source: str) -> None:
    """Name a missing or extra layer by its count: with layers matched by rank, one missing layer
    would otherwise show up as a shape mismatch further on."""
    wanted = {role[:3] for *_, role in model_roles(model)}
    found = {role[:3] for role in roles}
    differences = []
    for part, kind in sorted({layer[:2] for layer in wanted | found}):
        have = sum(layer[:2] == (part, kind) for layer in found)
        need = sum(layer[:2] == (part, kind) for layer in wanted)
        if have != need:
            label = {"bn": "BatchNorm", "dense": "dense", "conv": "conv"}[kind]
            differences.append(f"{have} {label} layers in the {part}, {need} expected")
    if differences:
        raise UserError(
            f"{source} does not hold a complete {arch_name(model.encoder.spec)}: "
            + "; ".join(differences)
        )


# ----------------------------------------------------------------------------------------------
# Conversion


def _layout(bundle: TensorBundle, names: Mapping[str, str]) -> str:
    if bundle.prefix.name == "variables" and bundle.prefix.parent.name == "variables":
        return "TF2 SavedModel"
    return "TF2 checkpoint" if names else "TF1 checkpoint"


def convert(
    source: str | Path,
    out: str | Path,
    head_input: int | None = None,
    ema: bool = False,
    overwrite: bool = False,
) -> Plan:
    """Convert the checkpoint that ``source`` names into an export in ``out``; return the plan.

    Tensors are read one at a time, CRC-32C checked, and copied into modules allocated once, so
    peak memory is about twice the weights (the export writer serialises a copy).
    """
    check_destination(out, overwrite)
    bundle = TensorBundle(find_prefix(source))
    graph_names = object_graph_names(bundle)
    names = {key: graph_names.get(key, key) for key in bundle.entries}
    shapes = {key: entry.shape for key, entry in bundle.entries.items()}
    plan = plan_conversion(
        shapes, names, str(source), head_input, ema, _layout(bundle, graph_names)
    )
    model = plan.model
    with torch.no_grad():
        for part, keys in plan.sources.items():
            module = getattr(model, part).to_empty(device="cpu")  # in place: memory, no values
            state = module.state_dict(keep_vars=True)
            for torch_key, (key, role) in keys.items():
                state[torch_key].copy_(to_torch(bundle.read(key), role))
            for buffer_name, buffer in module.named_buffers():
                if buffer_name.endswith("num_batches_tracked"):
                    buffer.zero_()
    step_key = next((k for k in bundle.entries if k.split("/")[0] == "global_step"), None)
    model.info = {
        "source": str(bundle.prefix),
        "layout": plan.layout,
        "ema": ema,
        "head_input_rule": plan.head_input_rule,
    }
    if step_key is not None:
        model.info["global_step"] = int(bundle.read(step_key).reshape(-1)[0])
    save_exported(model, out, overwrite)
    return plan
