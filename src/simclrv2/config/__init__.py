"""Configuration: the schema (dataclasses with ranges on their fields), the presets with the source
of each number, and the parsing of YAML files and ``key=value`` overrides."""

from simclrv2.config.overrides import apply_mapping, apply_overrides, config_from_dict, load_config
from simclrv2.config.presets import PRESETS, preset
from simclrv2.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    DistillConfig,
    FinetuneConfig,
    KnnConfig,
    LinearEvalConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    RuntimeConfig,
    SupervisedConfig,
    TrainingConfig,
    check_ranges,
)

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "DistillConfig",
    "FinetuneConfig",
    "KnnConfig",
    "LinearEvalConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "RuntimeConfig",
    "SupervisedConfig",
    "TrainingConfig",
    "apply_mapping",
    "apply_overrides",
    "check_ranges",
    "config_from_dict",
    "load_config",
    "preset",
]
