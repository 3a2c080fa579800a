"""Deployment files of an export: ONNX or TorchScript, to run a network without simclrv2.

One part of the export becomes one file: the classifier (images -> ``logits``), or the encoder
(images -> ``h``). The batch size is dynamic; the rest of the input is fixed by the preprocessing
contract, recorded in the file (ONNX ``metadata_props``; TorchScript's extra file
``simclrv2.json``) and returned for printing: float32 NCHW images of the side the network was
trained at, values in [0, 1], no mean/std normalisation, plus the class names of a classifier.
The file is written atomically after it was loaded back and run on random images against PyTorch.
ONNX needs the ``deploy`` extra (onnx, onnxscript, onnxruntime), imported only here, when asked.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from simclrv2.atomic import atomic_file
from simclrv2.errors import UserError
from simclrv2.export import METADATA, ExportedModel
from simclrv2.models import arch_name
from simclrv2.version import __version__

FORMATS = ("onnx", "torchscript")
PARTS = ("classifier", "encoder")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the deploy extra
EXTRA_FILE = "simclrv2.json"  # the contract inside a TorchScript file
INPUT = "images"  # the input's name in the file
ONNX_LIMIT = 2 << 30  # bytes: one ONNX protobuf holds at most 2 GiB
CHECK_BATCH = 3  # random images the written file is run on (the example traced has 2)
FINAL_MODELS = (  # where a run keeps its models, the final one first (a pipeline, then one stage)
    ("distill-*/model", "the distilled student"),
    ("finetune-*/model", "the fine-tuned model"),
    ("pretrain/model", "the pretrained model"),
    ("model", "the run's model"),
)


@dataclass
class Deployed:
    """A written deployment file, what it promises and how close it came to PyTorch."""

    path: Path
    format: str
    contract: dict  # the preprocessing contract and outputs, as recorded in the file
    max_difference: float  # max |file - PyTorch| over CHECK_BATCH random images
    output_scale: float  # max |PyTorch| there: fp32 rounding differs by ~1e-5 of it

    def summary(self) -> list[str]:
        """What the file expects and gives, in lines to print."""
        c = self.contract
        side, names = c["input_side_px"], c.get("classes", [])
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} classes)" if len(names) > 10 else "")
        return [
            f"input: {c['input']}, float32 (N, {c['input_channels']}, {side}, {side}) NCHW, "
            f"values in [0, 1], no mean/std normalisation; any batch size N",
            f"input side: {side} px ({c['input_side_source']})",
            f"output: {c['output']} (N, {c['output_dim']})",
            *([f"classes: {shown}"] if names else []),
            f"checked: max |{self.format} - PyTorch| = {self.max_difference:.2g} on "
            f"{CHECK_BATCH} random images, outputs up to {self.output_scale:.3g}",
        ]


def final_model(path: str | Path) -> tuple[Path, str]:
    """The export directory ``path`` names, and what it is: ``path`` itself, or a run's final model:
    the distilled student, else the fine-tuned model, else the pretrained one (a pipeline's
    ``distill-*/model``, ``finetune-*/model``, ``pretrain/model``; of several label fractions the
    largest), else a one-stage run's ``model/``."""
    path = Path(path)
    if (path / METADATA).is_file():
        return path, "an exported model"
    for pattern, what in FINAL_MODELS:
        found = [model for model in path.glob(pattern) if (model / METADATA).is_file()]
        if found:
            return max(found, key=lambda model: (_label_percent(model.parent.name), model)), what
    raise UserError(
        f"{path} is neither an exported model nor a run directory with one (distill-*/model, "
        "finetune-*/model, pretrain/model or model/); give an export or a finished run"
    )


def _label_percent(stage_folder: str) -> float:
    """The label fraction in a pipeline's stage folder name (``distill-10%`` -> 10; every
    label, ``distill-all``, -> 100), else -1."""
    spec = stage_folder.partition("-")[2]
    if spec == "all":
        return 100.0
    try:
        return float(spec.rstrip("%"))
    except ValueError:
        return -1.0


def export(model: ExportedModel, fmt: str, out: str | Path, part: str | None = None) -> Deployed:
    """Write ``part`` of ``model`` (default: the classifier where there is one, else the encoder)
    as ``fmt`` (onnx or torchscript) to ``out``, replacing it. The network is exported in fp32 on
    the CPU in eval mode: ``model``'s modules are moved and switched there."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use --format onnx or --format torchscript")
    part = part or ("classifier" if model.classifier is not None else "encoder")
    if part not in PARTS:
        raise UserError(f"unknown part {part!r}; use --part classifier or --part encoder")
    if part == "classifier" and model.classifier is None:
        raise UserError(
            "this export has no classifier; use --part encoder (its h), or fine-tune it first"
        )
    if fmt == "onnx":
        _require(ONNX_PACKAGES)
    network = (model.classifier_model() if part == "classifier" else model.encoder).float().cpu()
    network.eval()
    contract = _contract(model, part)
    shape = (contract["input_channels"], contract["input_side_px"], contract["input_side_px"])
    example, check = (
        torch.rand(n, *shape, generator=torch.Generator().manual_seed(n)) for n in (2, CHECK_BATCH)
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))  # torch's own
        want = network(check)
        with atomic_file(out) as staging:
            write, run = (_onnx, _run_onnx) if fmt == "onnx" else (_torchscript, _run_torchscript)
            write(network, example, contract, staging)
            difference = (run(staging, check) - want).abs().max().item()
    return Deployed(out, fmt, contract, difference, want.abs().max().item())


def _require(packages: tuple[str, ...]) -> None:
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f'ONNX export needs the package {name}; install it with pip install "simclrv2[deploy]"'
            ) from None


def _contract(model: ExportedModel, part: str) -> dict:
    """What the file expects and gives (JSON): its input, output and, for a classifier, the names
    of the classes (``info["classes"]`` where recorded, else "0".."K-1")."""
    side, where = model.input_side()
    contract = {
        "simclrv2": __version__,
        "arch": arch_name(model.encoder.spec),
        "part": part,
        "input": INPUT,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_channels": model.encoder.spec.in_channels,
        "input_side_px": side,
        "input_side_source": where,
        "input_range": [0.0, 1.0],
        "input_normalisation": "none (no mean/std)",
        "batch": "dynamic",
    }
    if part == "encoder":
        return contract | {"output": "h", "output_dim": model.encoder.out_dim}
    count = model.classifier.out_features
    names = model.info.get("classes")
    if not (isinstance(names, list) and len(names) == count):
        names = [str(k) for k in range(count)]
    return contract | {"output": "logits", "output_dim": count, "classes": [str(n) for n in names]}


def _onnx(network: nn.Module, example: torch.Tensor, contract: dict, path: Path) -> None:
    size = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    if size >= ONNX_LIMIT:
        raise UserError(
            f"the {contract['arch']} {contract['part']} has {size / 2**30:.1f} GiB of weights and "
            "an ONNX file holds under 2 GiB; use --format torchscript"
        )
    quiet = logging.getLogger("torch.onnx")  # its notes on optional torchvision operators
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            network,
            (example,),
            input_names=[contract["input"]],
            output_names=[contract["output"]],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    finally:
        quiet.setLevel(level)
    program.model.metadata_props.update(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in contract.items()}
    )
    program.save(path, external_data=False)


def _run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT: images.numpy()})[0])


def _torchscript(network: nn.Module, example: torch.Tensor, contract: dict, path: Path) -> None:
    with warnings.catch_warnings():  # sizes read in Python are the contract's fixed image side
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(network, example, check_trace=False)
    torch.jit.save(traced, path, _extra_files={EXTRA_FILE: json.dumps(contract)})


def _run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    return torch.jit.load(path)(images)
