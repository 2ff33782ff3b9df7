"""
Times in a cassette: ISO-8601 UTC to the millisecond, ``2024-01-15T10:30:00.000Z``.

Readable in a diff and exact: a time is turned into whole milliseconds once,
and those are what both directions work with, so a time read from a
cassette is written back as the same string (``ms / 1000`` is the float
nearest that time, and ``round(seconds * 1000)`` finds ``ms`` again).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["format_time", "parse_time"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)
_FORMAT = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z\Z")


def format_time(seconds: float) -> str:
    """POSIX ``seconds`` as ISO-8601 UTC, rounded to the millisecond."""
    moment = _EPOCH + round(seconds * 1000) * _MILLISECOND
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> float:
    """POSIX seconds of a time :func:`format_time` wrote; ValueError for anything else."""
    match = _FORMAT.match(text)
    if match is None:
        raise ValueError(f"expected a UTC time like 2024-01-15T10:30:00.000Z, got {text!r}")
    year, month, day, hour, minute, second, millisecond = (int(part) for part in match.groups())
    moment = datetime(
        year, month, day, hour, minute, second, millisecond * 1000, tzinfo=timezone.utc
    )
    return ((moment - _EPOCH) // _MILLISECOND) / 1000
