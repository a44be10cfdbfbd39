"""Typed, validated settings built from plain YAML data.

Settings are frozen dataclasses. `build()` turns a mapping into one, checking every
key against the dataclass fields and every value against its annotation and the
constraints in the field's metadata. Every mistake becomes one `ConfigError` that
names the key path, so a user reads one line and knows what to fix.

Constraints (in ``field(metadata=...)``):
  ``gt`` / ``ge`` / ``le``  numeric bounds
  ``non_empty``            a string, list or mapping that must not be empty
  ``choices``              allowed values (also expressed by ``Literal``)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(Exception):
    """A user's mistake in a configuration file, pointing at one key path."""

    def __init__(self, path: str, problem: str, file: str | None = None) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
        self.file = file

    def in_file(self, file: str) -> ConfigError:
        return ConfigError(self.path, self.problem, file)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{where}{self.problem}"


def join(path: str, key: object) -> str:
    """The path of list item `key` (an int) or of mapping key `key` under `path`."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return join_key(path, key)


def join_key(path: str, key: object) -> str:
    """The path of mapping key `key` under `path`, whatever the key's type: YAML keys
    may be numbers, booleans or null (shown as written, not as list indices) or strings
    that would break the one-line message (shown quoted and escaped)."""
    plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40
    text = key if plain else describe(key)
    return f"{path}.{text}" if path else text


def describe(value: object) -> str:
    """How a wrong value is shown in an error: short, and recognisable in the YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    try:
        text = repr(value)
    except ValueError:  # an integer with more digits than Python will print
        return "a very large number"
    return text if len(text) <= 40 else text[:37] + "..."


_KIND = types.MappingProxyType(
    {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
)


def build(cls: type, data: object, path: str = "") -> Any:
    """Build the settings dataclass `cls` from `data`, or raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            raise unknown_key(path, key, fields)
    for name, field in fields.items():
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if required and name not in data:
            raise ConfigError(join(path, name), "required key is missing")
    hints = get_type_hints(cls)
    values = {
        name: convert(hints[name], data[name], join(path, name), field.metadata)
        for name, field in fields.items()
        if name in data
    }
    settings = cls(**values)
    check = getattr(settings, "check", None)
    if check is not None:
        check(path)
    return settings


def unknown_key(path: str, key: object, known: typing.Iterable[str]) -> ConfigError:
    """The error for a key the schema does not have, with the likeliest intended one."""
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(known)}"
    return ConfigError(join_key(path, key), f"unknown key ({hint})")


def convert(hint: Any, value: object, path: str, meta: typing.Mapping = {}) -> Any:
    """Check `value` against the type `hint` and the constraints in `meta`."""
    result = _convert_type(hint, value, path)
    _check_constraints(result, path, meta, value)
    return result


def _convert_type(hint: Any, value: object, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        others = [o for o in options if o is not type(None)]
        return _convert_type(others[0], value, path)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            listed = ", ".join(str(c) for c in choices)
            raise ConfigError(path, f"expected one of {listed}, got {describe(value)}")
        return value
    if origin in (tuple, list):
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {describe(value)}")
        return tuple(_convert_type(item, v, join(path, i)) for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        key_type, value_type = get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {describe(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, key_type):
                raise ConfigError(join_key(path, k), f"expected {_KIND[key_type]} as key")
            out[k] = _convert_type(value_type, v, join_key(path, k))
        return types.MappingProxyType(out)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {describe(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(path, f"expected a finite number, got {describe(value)}")
        return number
    if hint in (bool, int, str):
        if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
            raise ConfigError(path, f"expected {_KIND[hint]}, got {describe(value)}")
        return value
    raise TypeError(f"unsupported settings type {hint!r} at {path}")


def _check_constraints(value: Any, path: str, meta: typing.Mapping, written: object) -> None:
    """Check the converted `value`; errors show the value as `written` (0, not 0.0)."""
    if value is None:
        return
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(path, f"must be greater than {meta['gt']}, got {describe(written)}")
    if "ge" in meta and not value >= meta["ge"]:
        raise ConfigError(path, f"must be at least {meta['ge']}, got {describe(written)}")
    if "le" in meta and not value <= meta["le"]:
        raise ConfigError(path, f"must be at most {meta['le']}, got {describe(written)}")
    if meta.get("non_empty") and len(value) == 0:
        raise ConfigError(path, "must not be empty")


def setting(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A dataclass field with validation constraints; list and mapping defaults are
    frozen (a tuple, a read-only mapping) as the loader freezes what it reads."""
    if isinstance(default, list):
        frozen: Any = tuple(default)
    elif isinstance(default, collections.abc.Mapping):
        frozen = types.MappingProxyType(dict(default))
    else:
        return dataclasses.field(default=default, metadata=constraints)
    return dataclasses.field(default_factory=lambda: frozen, metadata=constraints)
