"""Records: dataclasses edgesim writes as JSON and reads back (ready files, state files, the
output of a command run inside a lab node), with one codec for all of them.

A record is a dataclass that inherits :class:`Record`. :meth:`Record.to_dict` writes its fields
in order, as :func:`dataclasses.asdict` would, with the JSON's own kinds: an ``Enum`` as its
value, a ``Path`` as a string, tuples and sets as lists, a nested record (or any value with a
``to_dict``) by its ``to_dict``. :meth:`Record.from_dict` reads it back through the one
converter of :mod:`simulator.settings`, type-checked: a field the JSON lacks takes its default
(one without a default is an error), keys the record does not know are passed over, and a bad
value is a :class:`RecordError` naming the record and the field
(``not a listener check: listener.port: must be an integer, not a string``).

Where a record's JSON is not its fields, the field says so in its metadata, as data (:func:`record`):
another key, not written, rounded, or followed by properties (``met``, ``by``) or by a field
written out of its declared order.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from simulator.errors import EdgesimError
from simulator.settings import Invalid, convert, noun_of, type_hints

META = "record"
R = TypeVar("R")


class RecordError(EdgesimError, ValueError):
    """JSON that is not the record it should be. ``str()`` is one line."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """How one field stands in its record's JSON."""

    key: str | None = None
    """The JSON key, when it is not the field's name."""
    omit: bool = False
    """Not written (the caller of :meth:`Record.from_dict` gives it, or it takes its default)."""
    digits: int | None = None
    """Numbers are written rounded to this many decimal digits (in lists and tables too)."""
    then: tuple[str, ...] = ()
    """Written right after this field: properties, or fields declared further down."""
    keep: tuple[str, ...] = ()
    """Fields the records in this field write although they omit them elsewhere."""


def record(
    *,
    key: str | None = None,
    omit: bool = False,
    digits: int | None = None,
    then: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
) -> dict[str, Entry]:
    """The metadata of a field whose JSON differs from the field (see :class:`Entry`):
    ``row_id: str = field(metadata=record(key="row"))``."""
    return {META: Entry(key, omit, digits, then, keep)}


_PLAIN = Entry()


def _entry(f: dataclasses.Field[Any]) -> Entry:
    entry = f.metadata.get(META, _PLAIN)
    assert isinstance(entry, Entry)
    return entry


class Record:
    """A dataclass written as JSON and read back (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: object, **given: Any) -> Self:
        """The record ``data`` holds; ``given`` are values of fields the JSON omits."""
        return from_dict(cls, data, **given)


def to_dict(record: Any, keep: Collection[str] = ()) -> dict[str, Any]:
    """The JSON object of the dataclass ``record``."""
    fields = {f.name: f for f in dataclasses.fields(record)}
    moved = {name for f in fields.values() for name in _entry(f).then}
    out: dict[str, Any] = {}

    def put(name: str) -> None:
        f = fields.get(name)
        if f is None:
            out[name] = _json(getattr(record, name), None, ())
            return
        entry = _entry(f)
        if not entry.omit or name in keep:
            out[entry.key or name] = _json(getattr(record, name), entry.digits, entry.keep)

    for name, f in fields.items():
        if name not in moved:
            put(name)
            for then in _entry(f).then:
                put(then)
    return out


def _json(value: Any, digits: int | None, keep: Collection[str]) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if not keep and hasattr(value, "to_dict") else to_dict(value, keep)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _json(v, digits, keep) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v, digits, keep) for v in value]
    if digits is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return round(value, digits)
    return value


def from_dict(cls: type[R], data: object, **given: Any) -> R:
    """The dataclass ``cls`` from its JSON object ``data`` (see the module docstring)."""
    try:
        record: R = _read(cls, data, given)
    except Invalid as exc:
        where = exc.where.lstrip(".")
        raise RecordError(f"not {_noun(cls)}: {where + ': ' if where else ''}{exc.why}") from None
    return record


def _read(cls: type[Any], data: object, given: Mapping[str, Any] | None = None) -> Any:
    """One record from its table; :class:`Invalid` names the path to the bad field."""
    if not isinstance(data, Mapping):
        raise Invalid(f"must be a table, not {noun_of(data)}")
    hints = type_hints(cls)
    values: dict[str, Any] = dict(given or {})
    for f in dataclasses.fields(cls):
        key = _entry(f).key or f.name
        if not f.init or f.name in values:
            continue
        if key in data:
            try:
                values[f.name] = convert(hints[f.name], data[key], _read)
            except Invalid as exc:
                raise Invalid(exc.why, f".{key}{exc.where}") from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise Invalid("missing", f".{key}")
    return cls(**values)


def _noun(cls: type[Any]) -> str:
    """``a probe result`` for ``ProbeResult``."""
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"
