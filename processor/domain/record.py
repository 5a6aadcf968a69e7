"""The base of the records the per-fill path builds and drops for every fill: frozen and slotted like a
dataclass, compared and hashed by value like a NamedTuple, and, compiled by mypyc, built in a sixth of
a NamedTuple's time (a NamedTuple is built through ``tuple.__new__``, which copies a tuple of its
values into a new one; a compiled class sets its read-only slots directly)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

from mypy_extensions import mypyc_attr

R = TypeVar("R", bound="Record")


@mypyc_attr(acyclic=True)
class Record:
    """A subclass lists its attributes in ``_fields`` (also its ``__slots__``) and sets each once, in
    ``__init__``, as ``Final``: compiled, an attribute cannot be set again; interpreted, mypy says so."""

    __slots__ = ()
    #: The attributes in order: what ``==``, ``hash`` and ``repr`` go by
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __iter__(self) -> Iterator[object]:
        """The values in order, as a NamedTuple's (for comparing field by field)."""
        return iter(self._values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        """By value: like a tuple's, only when every value is hashable."""
        return hash(self._values())

    def _replace(self: R, **changes: Any) -> R:
        """A copy with ``changes``, as a NamedTuple's ``_replace``."""
        values = [changes.pop(name, value) for name, value in zip(self._fields, self._values(), strict=True)]
        if changes:
            raise ValueError(f"got unexpected field names: {sorted(changes)!r}")
        return type(self)(*values)

    def __reduce__(self) -> tuple[type[Record], tuple[object, ...]]:
        """Pickled as its class and values (a compiled class has no empty constructor to fill)."""
        return type(self), self._values()

    def __repr__(self) -> str:
        values = ", ".join(
            [f"{name}={value!r}" for name, value in zip(self._fields, self._values(), strict=True)]
        )
        return f"{type(self).__name__}({values})"
