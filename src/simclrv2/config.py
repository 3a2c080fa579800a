"""Configuration: dataclasses that hold every default once, presets that say where each number comes
from, YAML files and ``key=value`` overrides that reject unknown keys and bad values.

A config is resolved as: preset -> YAML file (optional) -> ``section.key=value`` overrides; the
resolved config is saved in every run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from simclrv2.errors import UserError, first_line


@dataclass
class ModelConfig:
    arch: str = "r50_1x_sk0"  # r<depth>_<width>x_sk<0|1>, the authors' naming
    head_layers: int = 3  # projection head depth: 2 in v1, 3 in v2 (SimCLRv2 Sec. 2)
    head_hidden_dim: int | None = None  # None = the encoder's output width (authors' code)
    proj_dim: int = 128  # z dimension (both papers)
    head_selector: int = 1  # fine-tune from head layer: 1 in v2, 0 (= h) in v1, -1 = z
    cifar_stem: bool | None = (
        None  # None: the CIFAR stem for inputs of 32 px or less (authors' rule)
    )
    # the last BN of each residual branch starts at gamma 0 (authors); false: 1 (torchvision)
    zero_init_residual: bool = True


@dataclass
class DataConfig:
    source: str | None = None  # None = the embedded Fashion-MNIST subset; else a path (see README)
    image_size: int | None = None  # training side in px; None = the data's own size
    test_split: str = "test"  # held-out split for the kNN monitor and every evaluation
    cache_dir: str | None = None  # on-disk uint8 cache for decoded image folders
    num_workers: int = 2  # decoding processes for image folders
    strict: bool = False  # a corrupt image is an error (else skipped with a warning and a count)


@dataclass
class AugmentConfig:
    jitter_strength: float = 1.0  # s: 1.0 ImageNet, 0.5 CIFAR-10 (SimCLR App. A)
    blur: bool = True  # off for 32 px CIFAR-10 in the reference
    brightness: Literal["v1", "v2"] = "v2"  # v2 multiplies, v1 adds a shift
    crop_min_area: float = 0.08  # random resized crop area fraction U(crop_min_area, 1)


@dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: Literal["lars", "sgd", "adamw"] = "lars"
    base_lr: float = 0.3  # before scaling
    lr_scaling: Literal["linear", "sqrt"] = "linear"  # linear: base*B/256; sqrt: base*sqrt(B)
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup: float = 10.0
    warmup_unit: Literal["epochs", "fraction"] = "epochs"


@dataclass
class OptimConfig(OptimizerConfig):
    """A training stage: its budget and its optimiser."""

    epochs: int = 100
    batch_size: int = 4096  # global batch, over all processes


@dataclass
class SupervisedConfig(OptimizerConfig):
    """The supervised-from-scratch baseline: its own optimiser settings (a network trained from
    scratch needs a larger learning rate than fine-tuning), and fine-tuning's budget (epochs and batch
    size of ``finetune``) so that the comparison is at equal cost."""

    base_lr: float = 0.3
    lr_scaling: Literal["linear", "sqrt"] = "linear"
    weight_decay: float = 1e-4
    warmup: float = 0.0


@dataclass
class PretrainConfig(OptimConfig):
    temperature: float = 0.1  # NT-Xent tau: 0.1 ImageNet, 0.5 CIFAR-10
    online_linear: bool = True  # linear classifier on stop-gradient h, trained alongside
    knn_k: int = 200  # weighted kNN monitor (k = 200, cosine)
    knn_temperature: float = 0.1
    knn_every: int = 1  # epochs between kNN evaluations; 0 = only at the end
    checkpoint_every: int = 200  # optimiser steps between checkpoints (and at every epoch end)
    global_bn: bool = True  # BatchNorm statistics over all processes (SimCLR's global BN)
    chunk_size: int = 0  # views per forward pass with gradient caching; 0 = the whole batch at once
    memory_size: int = 0  # SimCLRv2's queue of past embeddings as negatives: 65,536 in v2; 0 = off
    memory_momentum: float = 0.999  # decay of the EMA network that fills the queue (SimCLRv2)


@dataclass
class FinetuneConfig(OptimConfig):
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    label_seed: int = 0  # seed of the class-balanced label subsets
    # SimCLRv2 Sec. 3: no weight decay, no warm-up, lr 0.005*sqrt(B), batch 1024, 60/30 epochs.
    epochs: int = 60
    batch_size: int = 1024
    base_lr: float = 0.005
    lr_scaling: Literal["linear", "sqrt"] = "sqrt"
    weight_decay: float = 0.0
    warmup: float = 0.0


@dataclass
class DistillConfig(OptimConfig):
    student_arch: str | None = None  # None = self-distillation (the teacher's architecture)
    temperature: float = 0.1  # 0.1 self-distillation, 1.0 big-to-small (SimCLRv2 Sec. 3)
    alpha: float = 1.0  # weight of the distillation loss; 1 - alpha on labelled cross-entropy
    scale_by_t2: bool = False  # multiply by tau^2 as the authors' colab does
    # SimCLRv2 Sec. 3: the pretraining schedule, weight decay and batch size; 400 epochs.
    epochs: int = 400


@dataclass
class LinearEvalConfig:
    method: Literal["lbfgs", "sgd"] = "lbfgs"  # L-BFGS logistic regression on cached h, or SGD
    l2: float = 1e-4  # L2 penalty of the logistic regression (lbfgs)
    epochs: int = 90  # SGD on cached features (SimCLR: 90 epochs, Nesterov, no decay)
    batch_size: int = 4096
    base_lr: float = 0.1
    lr_scaling: Literal["linear", "sqrt"] = "linear"


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    # auto: bf16 autocast where the device has native bf16 (CUDA; CPUs with AVX512-BF16 or AMX)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the encoder
    # CPU: serve every block from the process heap (glibc) and keep freed ones there, instead of
    # fresh pages that fault one by one; 1.23-1.27x faster ResNet-18 steps (benchmarks/heap.py)
    retain_freed_memory: bool = True


@dataclass
class Config:
    preset: str = "imagenet-v2"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    linear: LinearEvalConfig = field(default_factory=LinearEvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# Presets: each returns a full Config; the comments say where the numbers come from.


def _imagenet_v2() -> Config:
    """SimCLRv2 on ImageNet (Sec. 3): batch 4096, LARS lr 0.1*sqrt(B) = 6.4, wd 1e-4, 5% warm-up,
    800 epochs, tau 0.1, 3-layer head, fine-tune from its first layer, distil for 400 epochs."""
    pretrain = PretrainConfig(
        epochs=800, batch_size=4096, base_lr=0.1, lr_scaling="sqrt", weight_decay=1e-4,
        warmup=0.05, warmup_unit="fraction", temperature=0.1,
    )  # fmt: skip
    distill = DistillConfig(
        epochs=400, batch_size=4096, base_lr=0.1, lr_scaling="sqrt", weight_decay=1e-4,
        warmup=0.05, warmup_unit="fraction", temperature=0.1,
    )  # fmt: skip
    return Config(
        preset="imagenet-v2",
        model=ModelConfig(arch="r50_1x_sk1", head_layers=3, head_selector=1),
        data=DataConfig(image_size=224),
        augment=AugmentConfig(jitter_strength=1.0, blur=True),
        pretrain=pretrain,
        distill=distill,
    )


def _cifar10_v1() -> Config:
    """SimCLR v1 on CIFAR-10 (App. B.9; SPEC): ResNet-50 with the CIFAR stem, batch 1024, 1000 epochs,
    LARS lr 1.0*B/256, wd 1e-4, 10 warm-up epochs, tau 0.5, jitter 0.5, no blur, 2-layer head, fine-tune
    from h. The authors' README command uses ResNet-18 and batch 512 with the same other values."""
    pretrain = PretrainConfig(
        epochs=1000, batch_size=1024, base_lr=1.0, lr_scaling="linear", weight_decay=1e-4,
        warmup=10, warmup_unit="epochs", temperature=0.5,
    )  # fmt: skip
    finetune = FinetuneConfig(epochs=100, batch_size=512, base_lr=0.005, lr_scaling="sqrt")
    distill = DistillConfig(
        epochs=200, batch_size=1024, base_lr=1.0, lr_scaling="linear", weight_decay=1e-4,
        warmup=10, warmup_unit="epochs", temperature=0.1,
    )  # fmt: skip
    return Config(
        preset="cifar10-v1",
        model=ModelConfig(arch="r50_1x_sk0", head_layers=2, head_selector=0),
        data=DataConfig(image_size=32),
        augment=AugmentConfig(jitter_strength=0.5, blur=False, brightness="v1"),
        pretrain=pretrain,
        finetune=finetune,
        distill=distill,
    )


def _fashion_mnist() -> Config:
    """The full Fashion-MNIST (60,000 + 10,000, 28 px, 1 channel) on a CPU: ResNet-18 at half width
    with the standard stem (the CIFAR stem at 28 px costs about 5x more on a CPU), and the CIFAR
    recipe's optimiser (LARS lr 1.0*B/256, tau 0.5, jitter 0.5, no blur). The supervised baseline's
    optimiser (SGD, 0.4*B/256, weight decay 5e-4) is one of the two best of a grid on the demo's 1%
    labels (0.4: 65.1%, 0.8: 65.8%; README, "The demo preset"). Fine-tuning stays SimCLRv2's."""
    config = _cifar10_v1()
    return replace(
        config,
        preset="fashion-mnist",
        model=ModelConfig(arch="r18_0.5x_sk0", head_layers=3, head_selector=1, cifar_stem=False),
        data=DataConfig(
            source="/usr/share/datasets/fashion-mnist", image_size=28
        ),  # Debian package path
        pretrain=replace(config.pretrain, epochs=30, batch_size=512, warmup=1, knn_every=5),
        finetune=replace(config.finetune, epochs=100, batch_size=64),
        distill=replace(config.distill, epochs=10, batch_size=512, warmup=0),
        supervised=SupervisedConfig(
            optimizer="sgd", base_lr=0.4, lr_scaling="linear", weight_decay=5e-4
        ),
    )


def _demo() -> Config:
    """The embedded Fashion-MNIST subset (10,000 + 2,000) on a 2-core CPU: the whole pipeline in at
    most 10 minutes. Chosen by sweeps on this subset (README, "The demo preset"): ResNet-18 at
    quarter width with the standard stem (as good as half width after fine-tuning, 2.3x faster),
    pretraining lr 3.0*B/256 (better than 0.3, 1.0 and 10), 25 epochs. Fine-tuning and the
    supervised baseline use the same optimiser (SGD with Nesterov momentum, weight decay 5e-4),
    each with the learning rate best on a grid at 1% labels: 0.05*B/256 and 0.8*B/256."""
    config = _cifar10_v1()
    return replace(
        config,
        preset="demo",
        model=ModelConfig(arch="r18_0.25x_sk0", head_layers=3, head_selector=1, cifar_stem=False),
        data=DataConfig(source=None, image_size=28),
        pretrain=replace(
            config.pretrain, epochs=25, batch_size=256, base_lr=3.0, warmup=1, knn_every=5
        ),
        finetune=replace(
            config.finetune,
            epochs=100,
            batch_size=64,
            optimizer="sgd",
            base_lr=0.05,
            lr_scaling="linear",
            weight_decay=5e-4,
        ),
        distill=replace(config.distill, epochs=20, batch_size=256, warmup=0),
        supervised=SupervisedConfig(
            optimizer="sgd", base_lr=0.8, lr_scaling="linear", weight_decay=5e-4
        ),
    )


PRESETS = {
    "demo": _demo,
    "fashion-mnist": _fashion_mnist,
    "cifar10-v1": _cifar10_v1,
    "imagenet-v2": _imagenet_v2,
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown preset {name!r}; {hint}choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ----------------------------------------------------------------------------------------------
# Overrides: "section.key=value" strings and YAML mappings, checked against the dataclasses.


def _all_keys(config: Config) -> list[str]:
    keys = []
    for section in fields(config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{section.name}.{f.name}" for f in fields(value)]
        else:
            keys.append(section.name)
    return keys


def _unknown_key(key: str, config: Config) -> UserError:
    close = difflib.get_close_matches(key, _all_keys(config), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "run `simclrv2 config` to list the keys"
    return UserError(f"unknown config key {key!r}; {hint}")


def _convert(key: str, value: Any, annotation: Any) -> Any:
    """Check/convert ``value`` (a YAML scalar, a list, or a string from the command line) to the type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(key, value, arg)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0])
    if origin is Literal:
        if value not in args:
            raise UserError(
                f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, args))}"
            )
        return value
    if origin is list:
        items = value
        if isinstance(value, str):
            items = [v for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(items, list):
            raise UserError(f"{key} needs a list such as [0.01,0.1], got {value!r}")
        return [_convert(key, item, args[0]) for item in items]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{key} needs true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{key} needs a number, got {value!r}")
        try:
            number = annotation(value) if isinstance(value, str) else value
        except ValueError:
            raise UserError(
                f"{key} needs {'an integer' if annotation is int else 'a number'}, got {value!r}"
            ) from None
        if annotation is int and isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, (int, float)) or (
            annotation is int and not isinstance(number, int)
        ):
            raise UserError(
                f"{key} needs {'an integer' if annotation is int else 'a number'}, got {value!r}"
            )
        try:
            number = annotation(number)
        except OverflowError:  # an integer beyond the range of a float
            number = math.inf
        if not math.isfinite(number):
            raise UserError(f"{key} needs a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{key} needs a string, got {value!r}")
        return str(value)
    raise TypeError(f"no conversion for {annotation}")  # a bug in this module, not user input


def _set(config: Config, key: str, value: Any) -> Config:
    section_name, _, field_name = key.partition(".")
    hints = typing.get_type_hints(Config)
    if section_name not in hints:
        raise _unknown_key(key, config)
    section = getattr(config, section_name)
    if not dataclasses.is_dataclass(section):  # the preset: its name is what the sections came from
        raise UserError(
            f"{key!r} cannot be set; choose the preset with --preset or a config file's 'preset:'"
        )
    section_hints = typing.get_type_hints(type(section))
    if field_name not in section_hints:
        raise _unknown_key(key, config)
    new_value = _convert(key, value, section_hints[field_name])
    return replace(config, **{section_name: replace(section, **{field_name: new_value})})


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings, e.g. ``pretrain.epochs=5`` or ``model.arch=r18_1x_sk0``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value; write e.g. pretrain.epochs=5")
        config = _set(config, key.strip(), value.strip())
    return validate(config)


def apply_mapping(config: Config, mapping: dict, origin: str) -> Config:
    """Apply a nested mapping (from YAML) onto ``config``."""
    if not isinstance(mapping, dict):
        raise UserError(f"{origin} must hold a mapping of sections, e.g. 'pretrain: {{epochs: 5}}'")
    for section, values in mapping.items():
        if isinstance(values, dict):
            for key, value in values.items():
                config = _set(config, f"{section}.{key}", value)
        else:
            config = _set(config, str(section), values)
    return config


def load_config(
    name: str = "demo", file: str | Path | None = None, overrides: list[str] = ()
) -> Config:
    """Preset ``name``, then the YAML ``file`` (whose own ``preset:`` key, if any, picks the base),
    then the overrides; validated."""
    mapping: dict = {}
    if file is not None:
        path = Path(file)
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} does not exist; check the path") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(
                f"config file {path} cannot be read ({first_line(error)}); give a YAML text file"
            ) from None
        except yaml.YAMLError as error:
            line = getattr(getattr(error, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise UserError(
                f"config file {path} is not valid YAML{where}; fix the syntax"
            ) from None
        if isinstance(mapping, dict) and "preset" in mapping:
            name = str(mapping.pop("preset"))
    config = preset(name)
    if file is not None:
        config = apply_mapping(config, mapping, str(file))
    return apply_overrides(config, list(overrides))


def config_from_dict(mapping: dict) -> Config:
    """Rebuild a saved (resolved) config, e.g. from a checkpoint."""
    base = preset(mapping.get("preset", "demo"))
    return validate(
        apply_mapping(base, {k: v for k, v in mapping.items() if k != "preset"}, "saved config")
    )


def validate(config: Config) -> Config:
    """Range checks that types alone cannot express."""
    positive = {
        "pretrain.epochs": config.pretrain.epochs, "pretrain.batch_size": config.pretrain.batch_size,
        "finetune.epochs": config.finetune.epochs, "finetune.batch_size": config.finetune.batch_size,
        "distill.epochs": config.distill.epochs, "distill.batch_size": config.distill.batch_size,
        "pretrain.temperature": config.pretrain.temperature, "distill.temperature": config.distill.temperature,
        "model.proj_dim": config.model.proj_dim, "model.head_layers": config.model.head_layers,
        "pretrain.knn_k": config.pretrain.knn_k, "linear.epochs": config.linear.epochs,
    }  # fmt: skip
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key} must be positive, got {value}")
    for key, value in {
        "pretrain.chunk_size": config.pretrain.chunk_size,
        "pretrain.memory_size": config.pretrain.memory_size,
        "pretrain.base_lr": config.pretrain.base_lr,
        "finetune.base_lr": config.finetune.base_lr,
    }.items():
        if value < 0:
            raise UserError(f"{key} must be >= 0, got {value}")
    for fraction in config.finetune.label_fractions:
        if not 0 < fraction <= 1:
            raise UserError(
                f"finetune.label_fractions holds {fraction}; each must be in (0, 1], e.g. 0.01 for 1%"
            )
    if not 0 <= config.pretrain.memory_momentum < 1:
        raise UserError(
            f"pretrain.memory_momentum must be in [0, 1), got {config.pretrain.memory_momentum}"
        )
    if not 0 <= config.distill.alpha <= 1:
        raise UserError(f"distill.alpha must be in [0, 1], got {config.distill.alpha}")
    if not 0 < config.augment.crop_min_area <= 1:
        raise UserError(
            f"augment.crop_min_area must be in (0, 1], got {config.augment.crop_min_area}"
        )
    if config.data.image_size is not None and config.data.image_size < 8:
        raise UserError(f"data.image_size must be at least 8 px, got {config.data.image_size}")
    return config
