"""Exported models: ``model.safetensors`` + ``model.json`` in one directory, nothing pickled.

The JSON names the architecture (encoder spec, projection head, classifier and the head output the
classifier reads, ``head_input``), so :func:`load_exported` rebuilds the modules before loading the weights. The
tensors are stored under ``encoder.*``, ``projection_head.*`` and ``classifier.*``; the JSON also
holds the weights file's sha256, checked on loading (exports without one load unchecked). This is
the format that ``simclrv2 convert-tf`` writes and every stage's ``--init`` reads. A model card,
``README.md`` (:mod:`simclrv2.model_card`), is written with them, for people; nothing reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from simclrv2.atomic import atomic_directory, remove_stale_staging
from simclrv2.checkpoint import sha256
from simclrv2.data import ImageDataset
from simclrv2.errors import UserError, first_line
from simclrv2.metrics import LOG
from simclrv2.model_card import CARD, model_card
from simclrv2.models import (
    Classifier,
    LinearClassifier,
    ProjectionHead,
    ResNet,
    ResNetSpec,
    arch_name,
)

FORMAT_VERSION = 2  # 2: the classifier's "selector" is named "head_input"
WEIGHTS, METADATA = "model.safetensors", "model.json"
PARTS = ("encoder", "projection_head", "classifier")  # tensor-name prefixes, in this order


@dataclass
class ExportedModel:
    """What an export holds: an encoder, optionally g and a classifier reading output ``head_input``
    of g (0 = h)."""

    encoder: ResNet
    projection_head: ProjectionHead | None = None
    classifier: LinearClassifier | None = None
    head_input: int = 0
    info: dict = field(default_factory=dict)  # free-form provenance (source, step, ...)

    def classifier_model(self) -> Classifier:
        """The fine-tuned network: encoder -> head layers up to ``head_input`` -> classifier."""
        if self.classifier is None:
            raise UserError("this export has no classifier; fine-tune it first (simclrv2 finetune)")
        head = self.projection_head
        head = head.prefix(self.head_input) if head is not None else nn.Sequential()
        return Classifier(self.encoder, head, self.classifier)

    def input_side(self) -> tuple[int, str]:
        """The image side in px the network expects, and why: the side it was trained at where
        ``info`` records it (``info["data"]["image_size"]``), else CIFAR's 32 for the CIFAR stem
        and ImageNet's 224 for the other (converted TF checkpoints)."""
        data = self.info.get("data")
        side = data.get("image_size") if isinstance(data, dict) else None
        if type(side) is int and side > 0:
            return side, "the side it was trained at"
        if self.encoder.spec.cifar_stem:
            return 32, "not recorded; CIFAR's, for the CIFAR stem"
        return 224, "not recorded; ImageNet's, for the ImageNet stem"


def match_channels(channels: int, *datasets: ImageDataset | None) -> list[ImageDataset | None]:
    """``datasets`` (None stays None) as a network taking ``channels`` input channels reads
    them (:meth:`ImageDataset.with_channels`: grey repeated to three channels, grey stored as RGB
    made one, any other difference a one-line error), said once in the log when grey images are
    repeated: where a model's channels meet data, every command goes through here."""
    matched = [None if data is None else data.with_channels(channels) for data in datasets]
    if any(d is not None and d.channels == 1 for d in datasets) and channels == 3:
        LOG.info("grey images repeated to 3 channels: the model takes 3")
    return matched


def _architecture(model: ExportedModel) -> dict:
    head = model.projection_head
    return {
        "format_version": FORMAT_VERSION,
        "arch": arch_name(model.encoder.spec),
        "encoder": asdict(model.encoder.spec),
        "projection_head": None
        if head is None
        else {
            "num_layers": head.num_layers,
            "hidden_dim": head.hidden_dim,
            "out_dim": head.out_dim,
        },
        "classifier": None
        if model.classifier is None
        else {"num_classes": model.classifier.out_features, "head_input": model.head_input},
        "info": model.info,
    }


def check_destination(directory: str | Path, overwrite: bool = False) -> None:
    """Refuse a non-empty ``directory`` unless ``overwrite``: call it before long work too."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise UserError(
            f"{directory} already exists and is not empty; choose another --out or remove it"
        )


def save_exported(
    model: ExportedModel,
    directory: str | Path,
    overwrite: bool = False,
    metrics: dict[str, dict] | None = None,
    config: str | None = None,
) -> Path:
    """Write the export as an atomic directory (:mod:`simclrv2.atomic`): ``directory`` never holds
    a half-written export. What writers that were killed left beside it is removed first. Its
    model card (``README.md``, :mod:`simclrv2.model_card`) shows ``metrics`` ({split name:
    {metric: value}}, as evaluated before the export) and ``config`` (the resolved config, YAML)."""
    directory = Path(directory)
    check_destination(directory, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory.parent, f"{directory.name}.")
    modules = dict(zip(PARTS, (model.encoder, model.projection_head, model.classifier)))
    tensors = {
        f"{part}.{name}": tensor.detach().contiguous().cpu()
        for part, module in modules.items()
        if module is not None
        for name, tensor in module.state_dict().items()
    }
    description = _architecture(model)
    card = model_card(description, modules, model.input_side(), directory, metrics, config)
    with atomic_directory(directory) as staging:
        save_file(tensors, staging / WEIGHTS)
        meta = description | {"weights_sha256": sha256(staging / WEIGHTS)}
        (staging / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        (staging / CARD).write_text(card)
    return directory


def load_exported(directory: str | Path) -> ExportedModel:
    """Rebuild the modules an export describes and load its weights (strictly: no missing, no extra).

    The description is checked against the stored tensors' shapes on the meta device before any
    memory is allocated, and the weights against their checksum, so a damaged export is a one-line
    error whatever is damaged.
    """
    directory = Path(directory)
    meta_path, weights_path = directory / METADATA, directory / WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise UserError(
            f"{directory} is not an exported model (needs {METADATA} and {WEIGHTS}); give a "
            "stage's model/ folder or convert a TF checkpoint with `simclrv2 convert-tf`"
        )
    meta = _read_metadata(meta_path)
    with torch.device("meta"):  # shapes only: a damaged description cannot allocate terabytes
        described = _described_shapes(meta, meta_path)
    stored = _stored_shapes(weights_path)
    for prefix in PARTS:
        expected = {k: v for k, v in described.items() if k.startswith(prefix + ".")}
        found = {k: v for k, v in stored.items() if k.startswith(prefix + ".")}
        mismatched = sorted(
            k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
        )
        if mismatched:
            raise UserError(
                f"{weights_path} does not match {meta_path} for the {prefix} "
                f"({len(mismatched)} tensors differ, e.g. {mismatched[0]}); re-export the model"
            )
    if meta.get("weights_sha256") not in (None, sha256(weights_path)):
        raise UserError(f"{weights_path} does not match its checksum; the file is corrupt")
    try:
        tensors = load_file(weights_path)
    except Exception as error:  # safetensors raises its own error types for a corrupt file
        raise UserError(
            f"{weights_path} cannot be read ({first_line(error)}); the file is corrupt or truncated"
        ) from None
    encoder, head, classifier, head_input = _build(meta)
    for prefix, module in zip(PARTS, (encoder, head, classifier)):
        if module is not None:
            part = {
                k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")
            }
            module.load_state_dict(part)
    return ExportedModel(encoder, head, classifier, head_input, meta.get("info", {}))


def _read_metadata(path: Path) -> dict:
    """The parsed ``model.json`` in this format version (version 1, the same but for the name of
    the classifier's head input, is read too)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"{path} is not a valid model description ({first_line(error)}); re-export the model"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("info", {}), dict):
        raise UserError(f"{path} is not a valid model description; re-export the model")
    version = meta.get("format_version")
    if version == 1 and isinstance(meta.get("classifier"), dict):
        meta["classifier"]["head_input"] = meta["classifier"].pop("selector", None)
    elif version not in (1, FORMAT_VERSION):
        raise UserError(
            f"{path} has format version {version!r}; this simclrv2 reads 1 to {FORMAT_VERSION}"
        )
    return meta


def _build(
    meta: dict,
) -> tuple[ResNet, ProjectionHead | None, LinearClassifier | None, int]:
    """(encoder, projection head, classifier, head input) as ``meta`` describes them."""
    encoder = ResNet(ResNetSpec(**meta["encoder"]))
    head = (
        ProjectionHead(encoder.out_dim, **meta["projection_head"])
        if meta["projection_head"]
        else None
    )
    classifier, head_input = None, 0
    if meta["classifier"]:
        head_input = meta["classifier"]["head_input"]
        in_dim = head.output_dim(head_input) if head is not None else encoder.out_dim
        classifier = LinearClassifier(in_dim, meta["classifier"]["num_classes"])
    return encoder, head, classifier, head_input


def _described_shapes(meta: dict, path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the description asks for (call on the meta device)."""
    try:
        modules = zip(PARTS, _build(meta))
        return {
            f"{prefix}.{name}": tuple(tensor.shape)
            for prefix, module in modules
            if isinstance(module, nn.Module)
            for name, tensor in module.state_dict().items()
        }
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        RuntimeError,
        OverflowError,
    ) as error:
        raise UserError(
            f"{path} is not a valid model description ({type(error).__name__}: "
            f"{first_line(error)}); re-export the model"
        ) from None


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone."""
    try:
        with safe_open(path, "pt") as file:
            return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for a corrupt file
        raise UserError(
            f"{path} cannot be read ({first_line(error)}); the file is corrupt or truncated"
        ) from None


def load_encoder(directory: str | Path) -> ResNet:
    """The encoder of an exported model, in eval mode."""
    return load_exported(directory).encoder.eval()
