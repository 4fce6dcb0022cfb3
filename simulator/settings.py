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
No I/O: the caller hands the table in.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from simulator.errors import ConfigError

T = TypeVar("T")

_SCALARS: dict[type, tuple[str, Callable[[object], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}
"""Scalar type -> (what a value of it must be, in an error; its test)."""


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


def convert(kind: Any, value: object) -> Any:
    """``value`` as the annotation ``kind`` says, or :class:`Invalid` (for ``parse`` functions)."""
    return _convert(kind, value, None, None)


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
        raise Invalid(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
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
        converted = _convert(kind, value, what, _default(f))
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


def _convert(kind: Any, value: object, what: str | None, base: Any) -> Any:
    def fail(expected: str) -> Invalid:
        return Invalid(f"must be {what or expected}, not {_name(value)}")

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors: list[Invalid] = []
        for option in options:
            try:
                return _convert(option, value, what, None)
            except Invalid as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else fail(" or ".join(_kind(o) for o in options))
    if kind in _SCALARS:
        expected, fits = _SCALARS[kind]
        if fits(value):
            return float(value) if kind is float else value  # type: ignore[arg-type]
        raise fail(expected)
    if origin in (tuple, frozenset) and args[0] is str:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return origin(value)
        raise fail(_kind(kind))
    if origin is dict and args[0] is str:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            try:
                return {k: _convert(args[1], v, None, None) for k, v in value.items()}
            except Invalid:
                pass
        raise fail(_kind(kind))
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _load(kind, value, base if isinstance(base, kind) else None)
    raise TypeError(f"settings of type {kind!r} are not supported")


def _kind(kind: Any) -> str:
    """What a value of the annotation ``kind`` must be, in an error."""
    if kind in _SCALARS:
        return _SCALARS[kind][0]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (tuple, frozenset):
        return "a list of strings"
    return "a table of strings" if origin is dict and args[1] is str else "a table"


def _name(value: object) -> str:
    """What ``value`` is, in an error."""
    nouns = {bool: "a boolean", list: "a list", dict: "a table"}
    kind = type(value)
    return nouns.get(kind) or (_SCALARS[kind][0] if kind in _SCALARS else kind.__name__)
