"""Numbers as a person reads them in a terminal: sizes, counts, plurals."""

from __future__ import annotations

__all__ = ["count_of", "size"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(count: int) -> str:
    """``812 B``, ``1.5 KiB``, ``12 MiB``: three significant figures at most."""
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{count} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count_of(number: int, noun: str, plural: str | None = None) -> str:
    """``1 entry``, ``3 entries``."""
    word = noun if number == 1 else (plural or noun + "s")
    return f"{number:,} {word}"
