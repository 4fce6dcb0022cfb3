"""Typed, validated service settings: a ``[services.<name>]`` table of the topology becomes a
frozen dataclass, or a :class:`~simulator.errors.ConfigError` naming the file and the entry.

Each service declares its settings as a dataclass with a docstring under every field (STYLE.md
section 5) and loads them once, at start::

    settings = ctx.typed_settings(XmppProxySettings)   # services: ServiceContext does it

A field's annotation says what the table may hold: ``bool``, ``int``, ``float`` (an integer is
taken), ``str``, ``tuple[str, ...]`` and ``frozenset[str]`` (from a list of strings),
``dict[str, str]`` (a table of strings), another settings dataclass (a sub-table, loaded the same
way), and ``X | None`` of any of them. A key the dataclass does not name, a value of the wrong
type, and a negative limit (a field declared with :func:`simulator.limits.limit`) are errors.
No I/O: the caller hands the table in.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from simulator.errors import ConfigError

T = TypeVar("T")


def load_settings(cls: type[T], table: Mapping[str, object], path: Path | str, entry: str) -> T:
    """``cls`` from ``table`` (the ``entry`` table of the topology file at ``path``)."""
    if isinstance(table, cls):
        return table
    if not isinstance(table, Mapping):
        raise ConfigError(Path(path), entry, "must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            Path(path), entry, f"unknown key '{unknown[0]}' (known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{entry}.{key}"
        converted = _convert(hints[key], value, Path(path), where)
        limited = "limit" in fields[key].metadata and isinstance(converted, int | float)
        if limited and converted < 0:
            raise ConfigError(Path(path), where, "must not be negative")
        values[key] = converted
    return cls(**values)


def _convert(kind: Any, value: object, path: Path, where: str) -> Any:
    def fail(what: str) -> ConfigError:
        return ConfigError(path, where, f"must be {what}, not {_name(value)}")

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors: list[ConfigError] = []
        for option in options:
            try:
                return _convert(option, value, path, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else fail(" or ".join(_kind(o) for o in options))
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise fail("a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    if origin in (tuple, frozenset) and args[0] is str:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return origin(value)
        raise fail("a list of strings")
    if origin is dict and args == (str, str):
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return dict(value)
        raise fail("a table of strings")
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return load_settings(kind, value, path, where)  # type: ignore[arg-type]
    raise TypeError(f"{where}: settings of type {kind!r} are not supported")


def _kind(kind: Any) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(kind, "a list of strings" if typing.get_origin(kind) in (tuple, frozenset) else "a table")


def _name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
