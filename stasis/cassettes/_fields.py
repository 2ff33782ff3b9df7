"""
Reading a document's fields with their types checked, so that every mistake in a
hand-edited or badly merged cassette is named (file, line, field) instead of
surfacing later as a ``KeyError`` or as a wrong answer replayed.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field

from stasis.cassettes._format import CassetteError

__all__ = ["Fields"]

_MISSING = object()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@define
class Fields:
    """
    One JSON object of a document, read field by field.

    ``where`` is ``PATH:LINE``; ``at`` is the object's place in the document
    (``response.events[3]``), empty for the document itself. :meth:`done`
    refuses the fields nobody read: a misspelt field is an error, not ignored.
    """

    where: str
    at: str
    values: dict[str, Any]
    _read: set[str] = field(factory=set)

    @classmethod
    def of(cls, value: Any, where: str, at: str = "") -> Fields:
        if not isinstance(value, dict):
            place = f"{at}: " if at else ""
            raise CassetteError(where, f"{place}expected an object, got {_kind(value)}")
        return cls(where, at, value)

    def error(self, name: str, problem: str) -> CassetteError:
        place = f"{self.at}.{name}" if self.at else name
        return CassetteError(self.where, f"{place}: {problem}")

    def has(self, name: str) -> bool:
        return name in self.values

    def _get(self, name: str, required: bool) -> Any:
        self._read.add(name)
        value = self.values.get(name, _MISSING)
        if value is _MISSING and required:
            raise self.error(name, "missing")
        return value

    def _typed(self, name: str, value: Any, kind: type, what: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"expected {what}, got {_kind(value)}")
        return value

    def value(self, name: str) -> Any:
        """Any JSON value (required)."""
        return self._get(name, True)

    def text(self, name: str) -> str:
        """A string (required)."""
        checked: str = self._typed(name, self._get(name, True), str, "a string")
        return checked

    def text_or_null(self, name: str) -> str | None:
        """A string or null (required)."""
        value = self._get(name, True)
        return None if value is None else self._typed(name, value, str, "a string or null")

    def optional_text(self, name: str) -> str | None:
        """A string, or None when absent."""
        value = self._get(name, False)
        return None if value is _MISSING else self._typed(name, value, str, "a string")

    def integer(self, name: str, low: int = 0, high: int | None = None) -> int:
        """An integer from ``low`` to ``high`` (inclusive), required."""
        value: int = self._typed(name, self._get(name, True), int, "an integer")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.error(name, f"expected an integer {bound}, got {value}")
        return value

    def optional_integer(self, name: str, low: int = 0, high: int | None = None) -> int | None:
        return self.integer(name, low, high) if self.has(name) else None

    def array(self, name: str) -> list[Any]:
        """An array (required)."""
        items: list[Any] = self._typed(name, self._get(name, True), list, "an array")
        return items

    def object(self, name: str) -> Fields:
        """A nested object (required)."""
        place = f"{self.at}.{name}" if self.at else name
        return Fields.of(self._get(name, True), self.where, place)

    def item(self, name: str, index: int, value: Any) -> Fields:
        """The object at ``index`` of this object's array ``name``."""
        place = f"{self.at}.{name}" if self.at else name
        return Fields.of(value, self.where, f"{place}[{index}]")

    def done(self) -> None:
        """Refuse any field that was not read."""
        unknown = sorted(set(self.values) - self._read)
        if unknown:
            raise self.error(unknown[0], "not a field this stasis knows")
