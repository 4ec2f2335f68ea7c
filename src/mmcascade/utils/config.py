"""Strict nested-dataclass configs from YAML/JSON: unknown keys and wrong types fail with the key's path."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(config_class: type[T], data: Any, where: str = "") -> T:
    """Build ``config_class`` (a dataclass, possibly nested) from plain data, rejecting unknown keys."""
    label = where or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{label} must be a mapping; got {type(data).__name__}")
    hints = typing.get_type_hints(config_class)
    known = {field.name: field for field in dataclasses.fields(config_class)}
    values = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config key '{path}'{hint}; valid keys here: {sorted(known)}")
        values[key] = _convert(hints[key], value, path)
    missing = [
        name
        for name, field in known.items()
        if name not in values and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing config key(s) {[f'{where}.{m}' if where else m for m in missing]}")
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{label}: {error}") from error


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config_file(config_class: type[T], path: str | os.PathLike) -> T:
    """Read a YAML (or JSON) file into ``config_class``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    try:
        return config_from_dict(config_class, data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if errors else f"'{path}' has an invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"'{path}' must be a list; got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"'{path}' must have {len(args)} entries; got {value!r}")
            return tuple(
                _convert(arg, item, f"{path}[{i}]") for i, (arg, item) in enumerate(zip(args, value, strict=True))
            )
        item_hint = args[0] if args else Any
        converted = [_convert(item_hint, item, f"{path}[{i}]") for i, item in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"'{path}' must be a mapping; got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"'{path}' must be a number; got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"'{path}' must be an integer; got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"'{path}' must be true or false; got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"'{path}' must be a string; got {value!r}")
        return value
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"'{path}' must be one of {list(typing.get_args(hint))}; got {value!r}")
        return value
    return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``"training.max_steps"``) in a nested dict; unknown sections are caught later."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ValueError(f"cannot set '{dotted}': '{part}' is not a config section")
            node = child
        node[parts[-1]] = value
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` with the value read as YAML (``3``, ``true``, ``[1, 2]``, ``null``)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)
