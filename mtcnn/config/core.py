"""Typed configuration: YAML data checked against dataclasses.

Every config class is a (nested) dataclass whose fields may carry range metadata made with
:func:`bounded`. :func:`from_dict` rejects unknown keys with a "did you mean", checks types and
ranges, and :func:`apply_overrides` applies ``a.b=value`` command-line overrides through the same
checks, so a typo fails before any work starts. :func:`save_resolved` writes the config a run
actually used next to its outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtcnn.atomic import atomic_write_text
from mtcnn.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A config value or key is wrong; the message names the key and the problem."""


def bounded(default: Any, lo: float | None = None, hi: float | None = None, *, help: str = "") -> Any:
    """A dataclass field whose numeric value (or each element of a tuple value) must lie in [lo, hi]."""
    kwargs: dict[str, Any] = {"metadata": {"lo": lo, "hi": hi, "help": help}}
    if isinstance(default, (list, dict)):
        kwargs["default_factory"] = lambda: type(default)(default)
    else:
        kwargs["default"] = default
    return field(**kwargs)


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(options))})"


def _check_range(path: str, value: Any, meta: typing.Mapping) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    values = value if isinstance(value, (tuple, list)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ConfigError(f"{path}={value!r} is out of range: must be within {rng}")


def _coerce(path: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(path, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, prefix=path + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path} must have {len(args)} elements, got {len(value)}")
            return tuple(_coerce(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        seq = [_coerce(f"{path}[{i}]", v, elem) for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every range check; no setting means NaN or infinity
            raise ConfigError(f"{path}={value!r} must be a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: typing.Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and out-of-range values."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"unknown config key '{prefix}{key}'{_did_you_mean(key, list(fields))}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        coerced = _coerce(prefix + name, value, hints[name])
        _check_range(prefix + name, coerced, f.metadata)
        kwargs[name] = coerced
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01). Values are parsed as YAML scalars/lists, never eval'd."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (for example train.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cls: type[T], data: typing.Mapping[str, Any], overrides: typing.Iterable[str]) -> T:
    """Apply ``key=value`` overrides to raw config data, then validate the whole thing."""
    merged: dict[str, Any] = _deep_copy(dict(data or {}))
    for text in overrides:
        keys, value = parse_override(text)
        _check_key_path(cls, keys, text)
        node = merged
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return from_dict(cls, merged)


def _check_key_path(cls: Any, keys: list[str], text: str) -> None:
    current = cls
    walked = []
    for k in keys:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"override '{text}': '{'.'.join(walked)}' has no sub-key '{k}'")
        hints = typing.get_type_hints(current)
        names = [f.name for f in dataclasses.fields(current) if f.init]
        if k not in names:
            where = ".".join(walked + [k])
            raise ConfigError(f"unknown config key '{where}'{_did_you_mean(k, names)}")
        walked.append(k)
        current = hints[k]
        if typing.get_origin(current) in (typing.Union, types.UnionType):  # an optional section: its dataclass
            current = next((a for a in typing.get_args(current) if dataclasses.is_dataclass(a)), current)


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def find_config(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists, else the shipped default of that file name (so
    ``train_pnet.yaml`` or the old ``mtcnn/config/defaults/train_pnet.yaml`` name the packaged defaults)."""
    path = Path(path)
    if path.is_file():
        return path
    from mtcnn.config.paths import default_config_names, default_config

    if path.name in default_config_names():
        return default_config(path.name)
    raise ConfigError(f"{path}: config file not found (shipped defaults: {', '.join(default_config_names())})")


def load_yaml(path: str | os.PathLike) -> dict:
    path = find_config(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    data = load_yaml(path) if path is not None else {}
    try:
        return apply_overrides(cls, data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def save_resolved(config: Any, out_dir: str | os.PathLike, name: str = "config.resolved.yaml") -> Path:
    """Write the config a run used next to its outputs (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    atomic_write_text(target, yaml.safe_dump(to_dict(config), sort_keys=False))
    return target
