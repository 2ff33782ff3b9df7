"""
Moments as stasis writes and reads them: ISO-8601 UTC to the millisecond
(``2024-01-15T10:30:00.000Z``, the original tool's format, in ``/stats``, the
commands and the cassettes), and as a person types them on a command line
(``--since 7d``, ``--since 2024-01-15``).

Exact both ways: a time is turned into whole milliseconds once, and both
directions work with those, so a time read back is written as the same
string. Every time stasis prints is UTC, so a date or time typed without a
zone is taken as UTC too. Standard library only: a command that prints a
time must not load the web server to do it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

__all__ = [
    "format_time",
    "iso8601",
    "parse_duration",
    "parse_moment",
    "parse_time",
    "short_time",
]

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


def iso8601(when: float | None) -> str | None:
    """:func:`format_time`, or None for no time (JSON null)."""
    return None if when is None else format_time(when)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

EXAMPLES = (
    "an ISO-8601 date or time (2024-01-15, 2024-01-15T10:30Z) or a duration ago (90s, 12h, 7d)"
)


def _duration(value: str) -> float | None:
    text = value.strip().lower()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def parse_duration(value: str) -> float:
    """
    Seconds in ``90s``, ``45m``, ``12h``, ``7d``, ``2w``, ``1h30m``, or a bare
    number of seconds; ``ValueError`` for anything else (or nothing).
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        found = _duration(text)
        if found is None:
            raise ValueError(
                f"{value!r} is not a duration: a number of seconds, or 90s, 45m, 12h, 7d, 2w"
            ) from None
        seconds = found
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be greater than 0")
    return seconds


def _datetime(value: str) -> datetime | None:
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"  # Python 3.10's fromisoformat does not read Z
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def parse_moment(value: str, now: float) -> float:
    """
    POSIX seconds for an ISO-8601 date/time (UTC unless it names a zone) or a
    duration before ``now`` (``90s``, ``45m``, ``12h``, ``7d``, ``2w``, ``1h30m``).

    ``ValueError`` saying what is accepted, otherwise.
    """
    ago = _duration(value)
    if ago is not None:
        return now - ago
    moment = _datetime(value)
    if moment is None:
        raise ValueError(f"{value!r} is not {EXAMPLES}")
    return moment.timestamp()


def short_time(when: float) -> str:
    """``2024-01-15 10:30`` (UTC): a listing's column."""
    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
