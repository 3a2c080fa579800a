"""Setting a config from text: ``section.key=value`` overrides, YAML files and saved configs, each
value converted to its field's type and checked against its range, every mistake a one-line error
that names the nearest valid key.

A config is resolved as: preset -> YAML file (optional) -> overrides -> values set by command-line
flags; the resolved config is saved in every run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from simclrv2.config.presets import preset
from simclrv2.config.schema import Config, check_ranges
from simclrv2.errors import UserError, first_line


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


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply ``section.key=value`` strings, e.g. ``pretrain.epochs=5`` or ``model.arch=r18_1x_sk0``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value; write e.g. pretrain.epochs=5")
        config = _set(config, key.strip(), value.strip())
    return check_ranges(config)


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
    name: str = "demo",
    file: str | Path | None = None,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Config:
    """Preset ``name``, then the YAML ``file`` (whose own ``preset:`` key, if any, picks the base),
    then the ``key=value`` overrides, then ``values`` (``{"data.source": ...}``: what command-line
    flags set; None values are skipped); checked against every range."""
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
    config = apply_overrides(config, overrides)
    for key, value in (values or {}).items():
        if value is not None:
            config = _set(config, key, value)
    return check_ranges(config)


def config_from_dict(mapping: dict) -> Config:
    """Rebuild a saved (resolved) config, e.g. from a checkpoint."""
    base = preset(mapping.get("preset", "demo"))
    values = {k: v for k, v in mapping.items() if k != "preset"}
    return check_ranges(apply_mapping(base, values, "saved config"))
