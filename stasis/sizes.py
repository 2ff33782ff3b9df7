"""
Sizes as a person types them: ``500MB``, ``2GB``, ``64MiB``, or a number of bytes.

``MB`` and ``GB`` are powers of 1000, as disks are sold and ``ls -h --si``
shows them; ``MiB`` and ``GiB`` powers of 1024. A bare number is bytes.
"""

from __future__ import annotations

import re

__all__ = ["parse_size"]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: str) -> int:
    """Bytes in ``value``; ``ValueError`` saying what a size looks like."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size: a number of bytes, or 500MB, 2GB, 64MiB")
    number, unit = match.groups()
    unit = unit.lower()
    base = 1024 if "i" in unit else 1000
    if unit in ("i", "ib") or (unit.endswith("i") and len(unit) > 1):
        raise ValueError(f"{value!r} is not a size: a number of bytes, or 500MB, 2GB, 64MiB")
    size = float(number) * base ** _POWERS[unit[:1] if unit[:1] != "b" else ""]
    if size != int(size):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)
