"""
Moments as a person types them (``--since 7d``, ``--since 2024-01-15``) and as
the commands print them.

``iso8601`` writes times as ``GET /stats`` does (``stasis.web.status`` has
the same function, and a test holds the two to the same output): importing
the web server's modules to format a time would double the time a command
takes to start.

Every time stasis prints is UTC, so a date or time typed without a zone is
taken as UTC too: ``--since`` then means what the listing beside it shows.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["iso8601", "parse_moment", "short_time"]

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


def iso8601(when: float | None) -> str | None:
    """POSIX seconds as the original tool wrote times: ``2024-01-15T10:30:00.000Z``."""
    if when is None:
        return None
    moment = datetime.fromtimestamp(when, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
