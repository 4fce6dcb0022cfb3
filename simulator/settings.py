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

:func:`convert` underneath is edgesim's one converter from parsed values to annotated types; the
records written as JSON and read back (:mod:`simulator.records`) go through it too.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from simulator.errors import ConfigError, EdgesimError

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
    hints = type_hints(cls)
    source = _Settings(Path(path))
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{entry}.{key}"
        converted = convert(hints[key], value, where, source)
        limited = "limit" in fields[key].metadata and isinstance(converted, int | float)
        if limited and converted < 0:
            raise ConfigError(Path(path), where, "must not be negative")
        values[key] = converted
    return cls(**values)


class _Settings:
    """Values from the topology file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> EdgesimError:
        return ConfigError(self.path, where, message)

    def nested(self, cls: type[Any], value: object, where: str) -> Any:
        return load_settings(cls, value, self.path, where)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the one converter


class Source(Protocol):
    """Where typed values come from: how it reports a bad one, how it reads a dataclass."""

    def fail(self, where: str, message: str) -> EdgesimError: ...

    def nested(self, cls: type[Any], value: object, where: str) -> Any: ...


_HINTS: dict[type[Any], dict[str, Any]] = {}


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of the dataclass ``cls`` (resolved once)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def convert(kind: Any, value: object, where: str, source: Source) -> Any:
    """``value`` as the annotation ``kind`` says, or ``source.fail(where, ...)``.

    Besides the settings' kinds: lists, tuples and sets of any kind, ``dict[str, X]`` and
    ``Counter[str]``, an ``Enum`` (by value), a ``Path`` (from a string), ``Any``, and a
    dataclass (``source.nested``). Elements of a scalar kind are judged with their container
    (``must be a list of strings``); records and containers in a container by their index or key
    (``listeners[0].port``).
    """

    def fail(what: str) -> EdgesimError:
        return source.fail(where, f"must be {what}, not {_name(value)}")

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or kind is object:
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors: list[EdgesimError] = []
        for option in options:
            try:
                return convert(option, value, where, source)
            except EdgesimError as exc:
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
    if kind is str or kind is Path:
        if isinstance(value, str):
            return kind(value)
        raise fail("a string")
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise fail(_kind(kind)) from None
    if origin in (list, tuple, frozenset, set) and (origin is not tuple or args[1:] == (...,)):
        if not isinstance(value, list | tuple):
            raise fail(_kind(kind))
        return origin(_items(args[0], enumerate(value), where, source, lambda: fail(_kind(kind))))
    if origin in (dict, Counter) and args[0] is str:
        element = int if origin is Counter else args[1]
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail(_kind(kind))
        items = _items(element, value.items(), where, source, lambda: fail(_kind(kind)))
        return origin(dict(zip(value, items, strict=True)))
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return source.nested(kind, value, where)
    raise TypeError(f"{where}: values of type {kind!r} are not supported")


def _items(
    kind: Any,
    items: Iterable[tuple[object, object]],
    where: str,
    source: Source,
    fail: Callable[[], EdgesimError],
) -> list[Any]:
    if kind in _SCALARS:
        try:
            return [convert(kind, v, where, source) for _, v in items]
        except EdgesimError:
            raise fail() from None
    return [
        convert(kind, v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}", source)
        for k, v in items
    ]


_SCALARS: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    Path: ("a string", "strings"),
}


def _kind(kind: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in _SCALARS:
        return _SCALARS[kind][1 if plural else 0]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return f"one of {', '.join(str(m.value) for m in kind)}"
    if origin in (list, tuple, frozenset, set):
        return "lists" if plural else f"a list of {_kind(args[0], True)}"
    if origin is Counter:
        return "tables" if plural else "a table of integers"
    if origin is dict and args[1] not in (Any, object):
        return "tables" if plural else f"a table of {_kind(args[1], True)}"
    if kind is Any or kind is object:
        return "values"
    return "tables" if plural else "a table"


def _name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
        type(None): "null",
    }.get(type(value), type(value).__name__)
