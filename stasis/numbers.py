"""
Whole numbers read from text a client or an upstream wrote, bounded.

Python's ``int()`` of a long enough run of digits raises ``ValueError``
(beyond 4,300 digits) and the numbers it does return can overflow a float,
a timestamp or an SQLite INTEGER much later, where the error makes no sense
to anyone. Every number stasis reads from a header is read here instead, and
clamped to what its use can hold, before any arithmetic touches it.
"""

from __future__ import annotations

__all__ = ["LARGEST_COUNT", "whole_number"]

#: The largest token count stored for one answer: far beyond any model's, and
#: small enough that ``/stats``'s sum of tokens times hits stays inside SQLite's
#: 64-bit INTEGER (which a SUM that overflows makes an error, not a float).
LARGEST_COUNT = 2**32


def whole_number(text: str, cap: int) -> int | None:
    """
    The whole number ``text`` spells in ASCII digits, or ``cap`` if it is
    larger; None when ``text`` is not a run of ASCII digits.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(cap)):
        return cap
    return min(int(digits), cap)
