"""Typed, validated service settings: a ``[services.<name>]`` table of the topology becomes a
frozen dataclass, or a :class:`~simulator.errors.ConfigError` naming the file and the entry.

Each service declares its settings as a dataclass with a docstring under every field (STYLE.md
section 5) and loads them once, at start::

    settings = ctx.typed_settings(XmppProxySettings)   # services: ServiceContext does it

A field's annotation says what the table may hold: ``bool``, ``int``, ``float`` (an integer is
taken), ``str``, ``tuple[str, ...]`` and ``frozenset[str]`` (from a list of strings),
``dict[str, X]`` (a table of any of these), another settings dataclass (a sub-table: the keys it
holds replace those of the field's default), and ``X | None`` of any of them. A key the
dataclass does not name, a value of the wrong type, and a negative limit (a field declared with
:func:`simulator.limits.limit`) are errors. A field declared with :func:`setting` may say more:
the smallest value it takes (``minimum=0``: "must be a non-negative integer"), how the error
words what it must be, or a ``parse`` function of its
own for values no annotation describes (``"low-high"`` port ranges, IPv4 networks).

:func:`convert` underneath is edgesim's one converter from parsed values to annotated types; the
records written as JSON and read back (:mod:`simulator.records`) go through it too.
No I/O: the caller hands the table in.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from simulator.errors import ConfigError

T = TypeVar("T")

_SCALARS: dict[Any, tuple[str, str, Callable[[object], bool]]] = {
    bool: ("true or false", "booleans", lambda v: isinstance(v, bool)),
    int: ("an integer", "integers", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: (
        "a number",
        "numbers",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    ),
    str: ("a string", "strings", lambda v: isinstance(v, str)),
    Path: ("a string", "strings", lambda v: isinstance(v, str)),
}
"""Scalar type -> (what a value of it must be, in an error; the plural; its test)."""


class Invalid(ValueError):
    """A value that does not fit its setting: ``why``, at ``where`` below the table (``.a.b``).
    A ``parse`` function of :func:`setting` may raise it, or any ValueError."""

    def __init__(self, why: str, where: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.where = where


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    what: str | None = None,
    minimum: float | None = None,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A settings field that says more than its annotation: ``what`` the value must be (the
    error's words), its ``minimum``, or ``parse`` (the raw TOML value -> the field's value, a
    ValueError saying what is wrong) instead of the annotation's conversion. ``factory`` for a
    mutable default."""
    metadata = {"what": what, "minimum": minimum, "parse": parse}
    return dataclasses.field(
        default=default,
        default_factory=factory if factory is not None else dataclasses.MISSING,
        metadata={k: v for k, v in metadata.items() if v is not None},
    )


def load_settings(cls: type[T], table: Mapping[str, object] | T, path: Path | str, entry: str) -> T:
    """``cls`` from ``table`` (the ``entry`` table of the topology file at ``path``; an
    instance of ``cls`` is taken as it is)."""
    try:
        return _load(cls, table, None)
    except Invalid as exc:
        raise ConfigError(Path(path), entry + exc.where, exc.why) from None


Nested = Callable[[type[Any], object], Any]
"""Reads a dataclass from a table, raising :class:`Invalid` (settings: a sub-table; records:
a nested record)."""


def convert(kind: Any, value: object, nested: Nested | None = None) -> Any:
    """``value`` as the annotation ``kind`` says, or :class:`Invalid` (``where`` is the path
    below ``value`` to the bad part: ``[0].port``).

    Besides the settings' kinds: lists, tuples and sets of any kind, ``dict[str, X]`` and
    ``Counter[str]``, an ``Enum`` (by value), a ``Path`` (from a string), ``Any``, and a
    dataclass (read by ``nested``; a settings sub-table by default). Elements of a scalar kind
    are judged with their container (``must be a list of strings``); records and containers in a
    container by their index or key (``listeners[0].port``)."""
    return _convert(kind, value, None, None, nested)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of the dataclass ``cls`` (resolved once)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def lowered(value: object) -> tuple[str, ...]:
    """A list of names (domains, FQDNs) lower-cased: a ``parse`` for :func:`setting`."""
    return tuple(name.lower() for name in convert(tuple[str, ...], value))


def _load(cls: type[T], table: object, base: T | None) -> T:
    if isinstance(table, cls):
        return table
    if not isinstance(table, Mapping):
        raise Invalid("must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        if not fields:
            raise Invalid(f"unknown key '{unknown[0]}' (this table takes no settings)")
        raise Invalid(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        try:
            values[key] = _field_value(fields[key], hints[key], value)
        except Invalid as exc:
            raise Invalid(exc.why, f".{key}{exc.where}") from None
    if base is not None:
        return dataclasses.replace(base, **values)  # type: ignore[type-var]
    return cls(**values)


def _field_value(f: dataclasses.Field[Any], kind: Any, value: object) -> Any:
    meta = f.metadata
    minimum = meta.get("minimum", 0 if "limit" in meta else None)
    what = meta.get("what") or _bounded(kind, meta.get("minimum"))
    parse = meta.get("parse")
    if parse is None:
        converted = _convert(kind, value, what, _default(f), None)
    else:
        try:
            converted = parse(value)
        except Invalid:
            raise
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    number = isinstance(converted, int | float) and not isinstance(converted, bool)
    if minimum is not None and number and converted < minimum:
        if what:
            raise Invalid(f"must be {what}")
        raise Invalid("must not be negative" if minimum == 0 else f"must be at least {minimum}")
    return converted


def _bounded(kind: Any, minimum: float | None) -> str | None:
    """What a number of at least ``minimum`` must be, in an error (``a positive integer``);
    None where no words say it better than the number."""
    kinds = {kind, *typing.get_args(kind)}
    noun = "integer" if int in kinds else "number" if float in kinds else None
    if noun is None or minimum not in (0, 1) or (minimum, noun) == (1, "number"):
        return None
    return f"a {'non-negative' if minimum == 0 else 'positive'} {noun}"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _convert(kind: Any, value: object, what: str | None, base: Any, nested: Nested | None) -> Any:
    def fail(expected: str) -> Invalid:
        return Invalid(f"must be {what or expected}, not {noun_of(value)}")

    if kind is Any or kind is object:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors: list[Invalid] = []
        for option in options:
            try:
                return _convert(option, value, what, None, nested)
            except Invalid as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else fail(" or ".join(_kind(o) for o in options))
    if kind in _SCALARS:
        expected, _, fits = _SCALARS[kind]
        if fits(value):
            return kind(value) if kind in (float, Path) else value
        raise fail(expected)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise fail(_kind(kind)) from None
    if origin in (list, tuple, frozenset, set) and (origin is not tuple or args[1:] == (...,)):
        if not isinstance(value, list | tuple):
            raise fail(_kind(kind))
        return origin(_items(args[0], enumerate(value), nested, lambda: fail(_kind(kind))))
    if origin in (dict, Counter) and args[0] is str:
        element = int if origin is Counter else args[1]
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail(_kind(kind))
        items = _items(element, value.items(), nested, lambda: fail(_kind(kind)))
        return origin(dict(zip(value, items, strict=True)))
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if nested is not None:
            return nested(kind, value)
        return _load(kind, value, base if isinstance(base, kind) else None)
    raise TypeError(f"values of type {kind!r} are not supported")


def _items(
    kind: Any,
    items: Iterable[tuple[object, object]],
    nested: Nested | None,
    fail: Callable[[], Invalid],
) -> list[Any]:
    """The converted values of ``items`` (index or key, value): a bad scalar fails the whole
    container (``fail``), anything else names its index or key."""
    if kind in _SCALARS:
        try:
            return [_convert(kind, v, None, None, nested) for _, v in items]
        except Invalid:
            raise fail() from None
    values = []
    for k, v in items:
        try:
            values.append(_convert(kind, v, None, None, nested))
        except Invalid as exc:
            step = f"[{k}]" if isinstance(k, int) else f".{k}"
            raise Invalid(exc.why, step + exc.where) from None
    return values


def _kind(kind: Any, plural: bool = False) -> str:
    """What a value of the annotation ``kind`` must be, in an error (``plural``: what the
    elements of a container must be)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in _SCALARS:
        singular, many, _ = _SCALARS[kind]
        return many if plural else singular
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


def noun_of(value: object) -> str:
    """What ``value`` is, in an error."""
    nouns = {bool: "a boolean", list: "a list", dict: "a table", type(None): "null"}
    kind = type(value)
    return nouns.get(kind) or (_SCALARS[kind][0] if kind in _SCALARS else kind.__name__)
