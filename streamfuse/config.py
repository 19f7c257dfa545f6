"""YAML files into (nested) dataclasses, validated up front with errors naming key and line.

A config is a dataclass whose fields have defaults; a YAML mapping fills it. Unknown keys, wrong
types and malformed YAML are one-line :class:`StreamFuseError`\\ s: ``FILE:LINE: key 'a.b' ...``.
``--set a.b=value`` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from streamfuse.errors import StreamFuseError

T = TypeVar("T")


def _line_index(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Map each dotted key path of a YAML mapping to its 1-based line number."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            lines[path] = key_node.start_mark.line + 1
            lines.update(_line_index(value_node, path + "."))
    return lines


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")


def _coerce(value: Any, expected: Any, path: str) -> Any:
    """Check ``value`` (at dotted key ``path``) against the annotation ``expected``; return it
    (ints are accepted for floats)."""
    where = f"key '{path}'"
    origin = typing.get_origin(expected)
    if expected is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except StreamFuseError as error:
                errors.append(error)
        raise errors[0] if len(errors) == 1 else StreamFuseError(
            f"{where} must be one of {' | '.join(_type_name(o) for o in options)}, got {value!r}"
        )
    if origin is typing.Literal:
        allowed = typing.get_args(expected)
        if value not in allowed:
            raise StreamFuseError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise StreamFuseError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(expected)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise StreamFuseError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise StreamFuseError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StreamFuseError(f"{where} must be a number, got {value!r}")
        return float(value)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StreamFuseError(f"{where} must be an integer, got {value!r}")
        return value
    if expected is bool:
        if not isinstance(value, bool):
            raise StreamFuseError(f"{where} must be true or false, got {value!r}")
        return value
    if expected is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise StreamFuseError(f"{where} must be a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(expected):
        return _build(expected, value, path)
    return value


def _build(cls: type[T], mapping: Any, path: str) -> T:
    """``cls`` from the mapping found at dotted key ``path`` ("" for the top level)."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise StreamFuseError(f"key '{path}' must be a mapping of keys, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in mapping.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise StreamFuseError(
                f"unknown key '{key_path}' (valid keys here: {', '.join(sorted(fields))})"
            )
        values[key] = _coerce(value, hints[key], key_path)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        prefix = f"{path}." if path else ""
        raise StreamFuseError(f"missing required key '{prefix}{missing[0]}'")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise StreamFuseError(_validation_message(str(error), path, fields)) from None


def _validation_message(message: str, path: str, fields: dict) -> str:
    """A dataclass's own check (``__post_init__``) as ``key 'a.b': ...``. A message that starts
    with a quoted field name (``'fps' must be positive``) is attributed to that field, so the
    error points at its line."""
    field = _key_of(message)
    if field in fields and message.startswith(f"'{field}'"):
        key_path = f"{path}.{field}" if path else field
        return f"key '{key_path}'{message[len(field) + 2:]}"
    return f"key '{path}': {message}" if path else f"config: {message}"


def _key_of(message: str) -> str | None:
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1 : end] if start >= 0 and end > start else None


def from_mapping(cls: type[T], mapping: Any, source: str = "config", lines: dict | None = None) -> T:
    """Build ``cls`` from a plain mapping; errors name ``source`` and, when known, the line.
    ``lines`` maps dotted keys to line numbers, or to ``"--set"`` for keys set on the command
    line (errors in those name the option, not the file)."""
    try:
        return _build(cls, mapping, "")
    except StreamFuseError as error:
        key = _key_of(str(error))
        line = None
        while key and lines is not None:
            key = key.split("[")[0]
            if key in lines:
                line = lines[key]
                break
            key = key.rpartition(".")[0]
        if line == "--set":
            location = f"--set {key}"
        else:
            location = f"{source}:{line}" if line else source
        raise StreamFuseError(f"{location}: {error}") from None


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}`` (values read as YAML scalars)."""
    nested: dict = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise StreamFuseError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                                  "--set inference.batch_size=4 (run) or --set optim.epochs=10 (train)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StreamFuseError(f"--set {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict, overrides: dict) -> dict:
    """Recursively overlay ``overrides`` on ``base`` (new dict)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read ``path`` into ``cls``; ``overrides`` are ``KEY=VALUE`` strings (see --set)."""
    path = Path(path)
    if not path.is_file():
        raise StreamFuseError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise StreamFuseError(f"{where}: malformed YAML ({problem})") from None
    lines = _line_index(root) if root is not None else {}
    if mapping is not None and not isinstance(mapping, dict):
        raise StreamFuseError(f"{path}:1: the file must be a mapping of keys, got {type(mapping).__name__}")
    overridden = parse_overrides(overrides)
    lines.update(dict.fromkeys(_dotted_keys(overridden), "--set"))
    return from_mapping(cls, merge(mapping or {}, overridden), str(path), lines)


def _dotted_keys(nested: dict, prefix: str = "") -> list[str]:
    """``{"a": {"b": 1}}`` -> ``["a.b"]``: the leaf keys of parsed ``--set`` options."""
    keys = []
    for key, value in nested.items():
        if isinstance(value, dict) and value:
            keys.extend(_dotted_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def to_dict(config: Any) -> dict:
    """A dataclass config as plain nested dicts/lists (for YAML/JSON/checkpoint metadata)."""
    return dataclasses.asdict(config)
