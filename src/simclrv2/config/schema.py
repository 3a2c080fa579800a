"""The settings of a run: one dataclass per section, every default once, ranges on the fields.

A numeric field may declare its range (:func:`positive`, :func:`at_least`, :func:`within`);
:func:`check_ranges` is the one rule that checks them all, for overrides, YAML files and saved
configs alike. Types are checked when values are set (:mod:`simclrv2.config.overrides`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

from simclrv2.errors import UserError

RANGE = "range"  # the field-metadata key of a declared range


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; an open end excludes its bound, a missing one is infinite."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return "positive" if (self.low, self.low_open) == (0, True) else f">= {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def _ranged(default: Any, allowed: Range) -> Any:
    if isinstance(default, list):  # a mutable default: each instance gets its own copy
        return field(default_factory=default.copy, metadata={RANGE: allowed})
    return field(default=default, metadata={RANGE: allowed})


def positive(default: Any) -> Any:
    """A field whose value must be above 0."""
    return _ranged(default, Range(0, low_open=True))


def at_least(low: float, default: Any) -> Any:
    """A field whose value must be at least ``low``."""
    return _ranged(default, Range(low))


def within(low: float, high: float, default: Any, *, low_open=False, high_open=False) -> Any:
    """A field (or each item of a list field) whose value must lie between ``low`` and ``high``."""
    return _ranged(default, Range(low, high, low_open, high_open))


@dataclass
class ModelConfig:
    arch: str = "r50_1x_sk0"  # r<depth>_<width>x_sk<0|1>, the authors' naming
    head_layers: int = positive(3)  # projection head depth: 2 in v1, 3 in v2 (SimCLRv2 Sec. 2)
    head_hidden_dim: int | None = positive(None)  # None = the encoder's width (authors' code)
    proj_dim: int = positive(128)  # z dimension (both papers)
    # the head output a classifier reads: 1 (first layer) in v2, 0 (= h) in v1, -1 = z
    head_input: int = at_least(-1, 1)
    # None: the CIFAR stem for inputs of 32 px or less (the authors' rule)
    cifar_stem: bool | None = None
    # the last BN of each residual branch starts at gamma 0 (authors); false: 1 (torchvision)
    zero_init_residual: bool = True


@dataclass
class DataConfig:
    """The images of a run (README, "Your own images"): either ``source``, the benchmark protocol
    (a labelled data set whose labels are hidden but for the label fractions), or your own
    ``labelled`` and ``unlabelled`` images; ``test`` optional in both."""

    source: str | None = None  # None = the embedded Fashion-MNIST subset; else a path (README)
    labelled: str | None = None  # your labelled images: class folders or a path,label CSV
    unlabelled: list[str] = field(default_factory=list)  # your unlabelled pools; labels unread
    test: str | None = None  # a test set: reported, never used to choose
    test_split: str = "test"  # the split of ``source`` that is its test set, when it has one
    # the split of ``source`` added to the pool without labels, when it has one (STL-10's 100,000)
    unlabelled_split: str | None = "unlabeled"
    # share of each class's labelled images held out for validation (>= 1 each); 0 = none
    validation_fraction: float = within(0, 1, 0.1, high_open=True)
    validation_seed: int = 0  # seed of the validation hold-out
    image_size: int | None = at_least(8, None)  # training side in px; None = the data's own
    # image folders: each whole image's longer side in px as stored; None = 8/7 * 4/3 of image_size
    stored_side: int | None = at_least(8, None)
    cache_dir: str | None = None  # on-disk uint8 cache for decoded image folders
    num_workers: int = at_least(0, 2)  # decoding processes for image folders; 0 = one per CPU
    strict: bool = False  # a corrupt image is an error (else skipped with a warning and a count)
    # 16-bit and float images into 0-255: the type's full range, or each image's min-max
    depth_scaling: Literal["full", "image"] = "full"

    @property
    def own_images(self) -> bool:
        """Whether the run reads your own images (``labelled``/``unlabelled``), not ``source``."""
        return self.labelled is not None or bool(self.unlabelled)


JitterOp = Literal["brightness", "contrast", "saturation", "hue"]


@dataclass
class AugmentConfig:
    """Pretraining views: the defaults are SimCLR's (App. A); vflip, rot90 and leaving colour
    ops out are for images whose orientation or colour carries no meaning (README examples)."""

    jitter_strength: float = at_least(0, 1.0)  # s: 1.0 ImageNet, 0.5 CIFAR-10 (SimCLR App. A)
    jitter_p: float = within(0, 1, 0.8)  # probability of colour jitter; 0 = none
    jitter_ops: list[JitterOp] = field(
        default_factory=lambda: ["brightness", "contrast", "saturation", "hue"]
    )  # the jitter's ops (in a random order per image); those left out never run
    grayscale_p: float = within(0, 1, 0.2)  # probability of random grayscale; 0 = none
    blur: bool = True  # off for 32 px CIFAR-10 in the reference
    brightness: Literal["v1", "v2"] = "v2"  # v2 multiplies, v1 adds a shift
    crop_min_area: float = within(0, 1, 0.08, low_open=True)  # crop area fraction U(min, max)
    crop_max_area: float = within(0, 1, 1.0, low_open=True)
    vflip: float = within(0, 1, 0.0)  # probability of a vertical flip (horizontal: 0.5)
    rot90: bool = False  # turn each view by 0, 90, 180 or 270 degrees, uniformly
    size: int | None = at_least(8, None)  # side of the views in px; None = data.image_size


@dataclass
class OptimizerConfig:
    """An optimiser and its learning-rate schedule."""

    optimizer: Literal["lars", "sgd", "adamw"] = "lars"
    base_lr: float = at_least(0, 0.3)  # before scaling
    lr_scaling: Literal["linear", "sqrt"] = "linear"  # linear: base*B/256; sqrt: base*sqrt(B)
    weight_decay: float = at_least(0, 1e-6)
    momentum: float = within(0, 1, 0.9, high_open=True)
    warmup: float = at_least(0, 10.0)
    warmup_unit: Literal["epochs", "fraction"] = "epochs"


@dataclass
class TrainingConfig(OptimizerConfig):
    """A training stage: its budget and its optimiser."""

    epochs: int = positive(100)
    batch_size: int = positive(4096)  # global batch, over all processes


@dataclass
class PretrainConfig(TrainingConfig):
    temperature: float = positive(0.1)  # NT-Xent tau: 0.1 ImageNet, 0.5 CIFAR-10
    online_linear: bool = True  # linear classifier on stop-gradient h, trained alongside
    # its peak rate on the schedule (not batch-scaled); None = the encoder's, as the authors
    online_lr: float | None = at_least(0, None)
    knn_every: int = at_least(0, 1)  # epochs between kNN monitor runs; 0 = only at the end
    checkpoint_every: int = at_least(0, 200)  # optimiser steps between checkpoints (+ epoch ends)
    global_bn: bool = True  # BatchNorm statistics over all processes (SimCLR's global BN)
    chunk_size: int = at_least(0, 0)  # views per pass with gradient caching; 0 = whole batch
    memory_size: int = at_least(0, 0)  # SimCLRv2's queue of past z as negatives: 65,536; 0 = off
    memory_momentum: float = within(0, 1, 0.999, high_open=True)  # EMA network's decay (v2)


@dataclass
class FinetuneConfig(TrainingConfig):
    # SimCLRv2 Sec. 3: no weight decay, no warm-up, lr 0.005*sqrt(B), batch 1024, 60/30 epochs.
    label_fractions: list[float] = within(0, 1, [0.01, 0.1], low_open=True)
    label_seed: int = 0  # seed of the class-balanced label subsets
    # repeat the images of smaller classes so each epoch sees every class equally often
    balanced_sampling: bool = False
    epochs: int = positive(60)
    batch_size: int = positive(1024)
    base_lr: float = at_least(0, 0.005)
    lr_scaling: Literal["linear", "sqrt"] = "sqrt"
    weight_decay: float = at_least(0, 0.0)
    warmup: float = at_least(0, 0.0)


@dataclass
class SupervisedConfig(OptimizerConfig):
    """The supervised-from-scratch baseline: its own optimiser (a network trained from scratch
    needs a larger learning rate than fine-tuning) on fine-tuning's budget (``finetune.epochs`` and
    ``finetune.batch_size``), so that the comparison is at equal cost."""

    weight_decay: float = at_least(0, 1e-4)
    warmup: float = at_least(0, 0.0)


@dataclass
class DistillConfig(TrainingConfig):
    student_arch: str | None = None  # None = self-distillation (the teacher's architecture)
    temperature: float = positive(0.1)  # 0.1 self-distillation, 1.0 big-to-small (SimCLRv2 Sec. 3)
    alpha: float = within(0, 1, 1.0)  # weight of the distillation loss; 1 - alpha: labelled CE
    scale_by_t2: bool = False  # multiply by tau^2 as the authors' colab does
    # the student's encoder: new weights (the paper), or the teacher's for self-distillation
    student_init: Literal["scratch", "teacher"] = "scratch"
    # SimCLRv2 Sec. 3: the pretraining schedule, weight decay and batch size; 400 epochs.
    epochs: int = positive(400)


@dataclass
class LinearEvalConfig:
    method: Literal["lbfgs", "sgd"] = "lbfgs"  # L-BFGS logistic regression on cached h, or SGD
    # L2 penalties of the logistic regression (lbfgs): the best on validation is kept, the
    # first without a validation split (and on ties)
    l2: list[float] = at_least(0, [1e-4, 1e-5, 1e-3])
    epochs: int = positive(90)  # SGD on cached features (SimCLR: 90 epochs, Nesterov, no decay)
    batch_size: int = positive(4096)
    base_lr: float = at_least(0, 0.1)
    lr_scaling: Literal["linear", "sqrt"] = "linear"


@dataclass
class KnnConfig:
    """The weighted kNN evaluation of h: the pretraining monitor and ``simclrv2 knn``."""

    k: int = positive(200)  # neighbours that vote (the peers' k = 200)
    temperature: float = positive(0.1)  # votes weigh exp(cosine / temperature)


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    # auto: bf16 autocast where the device has native bf16 (CUDA; CPUs with AVX512-BF16 or AMX)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the networks
    # CPU: glibc keeps freed blocks for reuse instead of returning them (simclrv2.runtime)
    retain_freed_memory: bool = True
    tf32: bool = True  # CUDA: TF32 for fp32 matmuls and convolutions (simclrv2.runtime)
    # minutes a process waits in a collective (e.g. for rank 0 writing a checkpoint) before failing
    process_group_timeout: float = positive(30.0)


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
    knn: KnnConfig = field(default_factory=KnnConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def check_ranges(config: Config) -> Config:
    """Every field's value (each item of a list) inside its declared range, else a one-line error."""
    for section in dataclasses.fields(config):
        settings = getattr(config, section.name)
        if not dataclasses.is_dataclass(settings):
            continue
        for setting in dataclasses.fields(settings):
            allowed, value = setting.metadata.get(RANGE), getattr(settings, setting.name)
            key = f"{section.name}.{setting.name}"
            if allowed is None or value is None:
                continue
            if isinstance(value, list):
                for item in value:
                    if item not in allowed:
                        raise UserError(f"{key} holds {item}; each must be {allowed}")
            elif value not in allowed:
                raise UserError(f"{key} must be {allowed}, got {value}")
    crops = config.augment
    if crops.crop_min_area > crops.crop_max_area:
        raise UserError(
            f"augment.crop_min_area ({crops.crop_min_area}) is above augment.crop_max_area "
            f"({crops.crop_max_area}); lower the first or raise the second"
        )
    return config
