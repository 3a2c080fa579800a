"""The model card: ``README.md`` beside an export's weights, for whoever picks the model up later.

It says what the network is (architecture, parameter count), what it saw (the data recorded in the
export's ``info``: source, image side, images and labels per split and class), how well it did (the
metrics of each evaluated split, named), how it was trained (the resolved config as YAML) and how to
load it: in Python, as ONNX through ``simclrv2 export``, with onnxruntime. What an export does not
record (a converted TF checkpoint has no data or metrics) is left out or said to be unknown. The
card is text derived from ``model.json`` and the stage's results; nothing reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from simclrv2.tables import format_table
from simclrv2.version import __version__

CARD = "README.md"


def format_metric(value: object) -> str:
    """A metric as the card prints it: floats to two decimals (accuracies are in percent)."""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def parameter_count(module: nn.Module | None) -> int:
    """Trainable tensors' elements (BatchNorm statistics are buffers, not parameters)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def model_card(
    description: dict,
    modules: dict[str, nn.Module | None],
    input_side: tuple[int, str],
    directory: Path,
    metrics: dict[str, dict] | None = None,
    config: str | None = None,
) -> str:
    """The Markdown card of the export in ``directory``: ``description`` is its ``model.json``,
    ``modules`` its parts by tensor prefix, ``input_side`` (px, where it comes from) the
    images it expects, ``metrics`` {split name: {metric: value}}, ``config`` YAML."""
    info = description.get("info", {})
    stage = info.get("stage")
    title = f"{description['arch']}" + (f" ({stage})" if isinstance(stage, str) else "")
    sections = [
        f"# {title}\n\nAn export of simclrv2 {__version__}: `model.safetensors` (the weights) and "
        "`model.json` (the architecture and provenance); this card is written with them.",
        _architecture(description, modules),
        _data(info, input_side),
        _metrics(metrics or {}, _classes(info, description)),
        _provenance(info),
        "## Config\n\n" + (f"```yaml\n{config.rstrip()}\n```" if config else "Not recorded."),
        _usage(description, modules, input_side[0], directory),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _architecture(description: dict, modules: dict[str, nn.Module | None]) -> str:
    spec, head, classifier = (
        description["encoder"],
        description["projection_head"],
        description["classifier"],
    )
    encoder = modules["encoder"]
    stem = "CIFAR stem" if spec["cifar_stem"] else "ImageNet stem"
    sk = f"selective kernels (ratio {spec['sk_ratio']:g})" if spec["sk_ratio"] else "no SK"
    lines = [
        f"- encoder: `{description['arch']}`, ResNet-{spec['depth']} at width {spec['width']:g}x, "
        f"{sk}, {stem}, input channels {spec['in_channels']}; h of {encoder.out_dim} features",
        "- projection head: none"
        if head is None
        else f"- projection head: {head['num_layers']} layers to z of {head['out_dim']}",
    ]
    if classifier is None:
        lines.append("- classifier: none")
    else:
        reads = "h" if not classifier["head_input"] else f"head output {classifier['head_input']}"
        lines.append(f"- classifier: linear, {classifier['num_classes']} classes, reading {reads}")
    counts = {name: parameter_count(module) for name, module in modules.items()}
    parts = ", ".join(f"{name.replace('_', ' ')} {n:,}" for name, n in counts.items() if n)
    lines.append(f"- parameters: {sum(counts.values()):,} ({parts})")
    return "## Architecture\n\n" + "\n".join(lines)


def _data(info: dict, input_side: tuple[int, str]) -> str:
    data = info.get("data")
    side, where = input_side
    if not isinstance(data, dict):
        return f"## Data\n\nNot recorded in this export. Input side: {side} px ({where})."
    splits = data.get("splits") if isinstance(data.get("splits"), dict) else {}
    named = [key for key in ("source", "labelled", "unlabelled", "test") if data.get(key)]
    sources = {key: data[key] if isinstance(data[key], list) else [data[key]] for key in named}
    lines = [f"- {key}: {', '.join(f'`{s}`' for s in sources[key])}" for key in named]
    lines.append(f"- image side: {side} px ({where})")
    for name, split in splits.items():
        if isinstance(split, dict):
            labelled = f", {_count(split['labelled'])} labelled" if "labelled" in split else ""
            lines.append(f"- {name}: {_count(split.get('images'))} images{labelled}")
    per_class = {
        name: split["labels_per_class"]
        for name, split in splits.items()
        if isinstance(split, dict) and isinstance(split.get("labels_per_class"), dict)
    }
    text = "## Data\n\n" + "\n".join(lines)
    if per_class:
        classes = list(dict.fromkeys(c for counts in per_class.values() for c in counts))
        rows = [
            {"class": c, **{name: counts.get(c, 0) for name, counts in per_class.items()}}
            for c in classes
        ]
        text += "\n\nLabels per class:\n\n" + format_table(rows, markdown=True)
    return text


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _classes(info: dict, description: dict) -> list[str]:
    """The class names the export records, else "0".."K-1" (K from its classifier; [] if none)."""
    count = (description["classifier"] or {}).get("num_classes", 0)
    names = info.get("classes")
    valid = isinstance(names, list) and len(names) == count
    return [str(name) for name in names] if valid else [str(k) for k in range(count)]


def _metrics(metrics: dict[str, dict], classes: list[str]) -> str:
    if not metrics:
        return "## Metrics\n\nNot recorded with this export."
    names = list(
        dict.fromkeys(
            k
            for values in metrics.values()
            for k, v in values.items()
            if not isinstance(v, (list, dict))
        )
    )
    rows = [
        {
            "metric": name,
            **{split: format_metric(values.get(name, "-")) for split, values in metrics.items()},
        }
        for name in names
    ]
    text = "## Metrics\n\n" + format_table(rows, markdown=True)
    for split, values in metrics.items():
        confusion = values.get("confusion")
        square = isinstance(confusion, list) and len(confusion) == len(classes)
        if square and all(
            isinstance(row, list) and len(row) == len(classes) and all(type(n) is int for n in row)
            for row in confusion
        ):
            accuracy = [
                format_metric(100.0 * row[k] / sum(row)) if sum(row) else "-"
                for k, row in enumerate(confusion)
            ]
            pairs = ", ".join(f"{c} {a}" for c, a in zip(classes, accuracy))
            text += f"\n\nTop-1 per class on {split} (the confusion matrix's rows): {pairs}."
    return text


def _provenance(info: dict) -> str:
    """The export's other scalar facts (stage, preset, TF source, step, ...)."""
    facts = {
        k: v
        for k, v in info.items()
        if k not in ("data", "classes") and isinstance(v, (str, int, float, bool))
    }
    lines = [f"- {k}: {json.dumps(v) if isinstance(v, bool) else v}" for k, v in facts.items()]
    return "## Provenance\n\n" + "\n".join(lines) if lines else ""


def _usage(
    description: dict, modules: dict[str, nn.Module | None], side: int, directory: Path
) -> str:
    channels = description["encoder"]["in_channels"]
    classifier = description["classifier"] is not None
    network = "model.classifier_model()" if classifier else "model.encoder"
    output = "logits" if classifier else "h"
    dim = description["classifier"]["num_classes"] if classifier else modules["encoder"].out_dim
    return f"""## Use

Inputs: float32 images (N, {channels}, {side}, {side}), NCHW, values in [0, 1], no mean/std
normalisation; the output is `{output}` (N, {dim}).

```python
import simclrv2

model = simclrv2.load_exported("{directory}")
network = {network}.eval()
{output} = network(images)
```

For inference without simclrv2 (`pip install "simclrv2[deploy]"`):

```bash
simclrv2 export {directory} --format onnx --out model.onnx
simclrv2 export {directory} --format torchscript --out model.pt
```

```python
import numpy as np
import onnxruntime

session = onnxruntime.InferenceSession("model.onnx")
{output} = session.run(None, {{"images": images.astype(np.float32)}})[0]
```"""
