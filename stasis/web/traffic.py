"""
What the proxy answered lately: the last requests, and hits and misses per
minute since the daemon started, for the web UI's live view and the metrics.

Kept in memory and per process (a worker's own under ``--workers``): a
person watching their tests run wants the last few hundred requests, not a
history, and a record costs a few attributes read off the request as its
access line is written, so the proxy does not slow down for it.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from stasis.cache.answers import About
from stasis.cache_status import Status, noted_outcome, noted_status
from stasis.errors import StasisError
from stasis.model import Entry

__all__ = ["Seen", "Traffic", "note_about", "note_error", "seen_of"]

#: A minute's figures: its start (POSIX seconds), hits, misses, bypasses.
Minute = tuple[float, int, int, int]

#: How many minutes :meth:`Traffic.series` can look back: a day.
KEPT_MINUTES = 24 * 60

#: Where a request carries what it was about and the error stasis answered it with.
_ABOUT_ATTRIBUTE = "stasis_about"
_KEY_ATTRIBUTE = "stasis_key"
_ERROR_ATTRIBUTE = "stasis_error"
_UPSTREAM_ATTRIBUTE = "stasis_upstream_seconds"


def note_about(
    request: Any,
    about: About | Entry | None,
    key: str | None,
    upstream_seconds: float | None = None,
) -> None:
    """What ``request`` was about, and how long its upstream took (if it went there)."""
    setattr(request, _ABOUT_ATTRIBUTE, about)
    setattr(request, _KEY_ATTRIBUTE, key)
    if upstream_seconds is not None:
        setattr(request, _UPSTREAM_ATTRIBUTE, upstream_seconds)


def note_error(request: Any, error: StasisError) -> None:
    """The error ``request`` is answered with: a replay miss's diagnostics are in it."""
    setattr(request, _ERROR_ATTRIBUTE, error)


@frozen
class Seen:
    """One request the proxy answered, as its access line saw it."""

    at: float
    method: str
    #: Without its query, which may hold a ``key=`` credential.
    path: str
    #: The status sent; 499 when the client left first.
    status: int
    cache: str | None
    #: The one word that says most: ``stored``, ``replay-miss``, ``upstream-timeout``…
    detail: str | None
    provider: str
    model: str | None
    namespace: str
    key: str | None
    seconds: float
    #: For an answer fetched upstream: how long the upstream took to answer its head.
    upstream_seconds: float | None
    #: The JSON error stasis answered with (its ``error`` object), as the client read it.
    error: Mapping[str, Any] | None


def seen_of(request: Any, at: float, seconds: float, status: int, reason: str | None) -> Seen:
    """
    The record of a proxied ``request``, from what the proxy noted on it; an
    error stasis made names its reason (``reason``) in place of the cache's detail.
    """
    outcome = noted_outcome(request)
    noted = noted_status(request)
    about: About | Entry | None = getattr(request, _ABOUT_ATTRIBUTE, None)
    error: StasisError | None = getattr(request, _ERROR_ATTRIBUTE, None)
    answer = None if error is None else json.loads(error.to_json())["error"]
    return Seen(
        at=at,
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
        status=status,
        cache=None if noted is None else noted.value.decode("ascii"),
        detail=reason or (None if outcome is None else outcome.summary()),
        provider="" if about is None else about.provider,
        model=None if about is None else about.model,
        namespace="" if about is None else about.namespace,
        key=getattr(request, _KEY_ATTRIBUTE, None),
        seconds=seconds,
        upstream_seconds=getattr(request, _UPSTREAM_ATTRIBUTE, None),
        error=answer,
    )


class Traffic:
    """The last ``keep`` requests, numbered, and the hits and misses of each minute."""

    def __init__(self, clock: IReactorTime, keep: int = 200) -> None:
        self.clock = clock
        self._recent: deque[tuple[int, Seen]] = deque(maxlen=keep)
        self._last = 0
        self._started = _minute(clock.seconds())
        #: Minutes that saw a request: [start, hits, misses, bypasses], oldest first.
        self._minutes: deque[list[float]] = deque(maxlen=KEPT_MINUTES)
        self._observers: list[Callable[[Seen], None]] = []

    def subscribe(self, observer: Callable[[Seen], None]) -> None:
        """Call ``observer`` with every request recorded from now on (it must be quick)."""
        self._observers.append(observer)

    def record(self, seen: Seen) -> None:
        self._last += 1
        self._recent.append((self._last, seen))
        column = None if seen.cache is None else _COLUMNS.get(seen.cache)
        if column is not None:
            start = _minute(seen.at)
            minutes = self._minutes
            if not minutes or minutes[-1][0] < start:
                minutes.append([start, 0, 0, 0])
            minutes[-1][column] += 1
        for observer in self._observers:
            observer(seen)

    def recent(self, after: int = 0) -> tuple[int, list[tuple[int, Seen]]]:
        """The number of the last request, and the requests kept that came after ``after``."""
        return self._last, [(n, seen) for n, seen in self._recent if n > after]

    def series(self, minutes: int) -> list[Minute]:
        """
        Each of the last ``minutes`` minutes since the daemon started, oldest
        first, a quiet minute as zeros: a chart needs its gaps.
        """
        now = _minute(self.clock.seconds())
        first = max(self._started, now - 60 * (max(1, min(minutes, KEPT_MINUTES)) - 1))
        counted = {m[0]: m for m in self._minutes if m[0] >= first}
        series: list[Minute] = []
        start = first
        while start <= now:
            m = counted.get(start)
            series.append(
                (start, 0, 0, 0) if m is None else (start, int(m[1]), int(m[2]), int(m[3]))
            )
            start += 60
        return series


#: Which column of a minute each cache status counts in (a stale answer is a hit).
_COLUMNS = {
    Status.HIT.value.decode(): 1,
    Status.STALE.value.decode(): 1,
    Status.MISS.value.decode(): 2,
    Status.BYPASS.value.decode(): 3,
}


def _minute(seconds: float) -> float:
    return float(math.floor(seconds / 60) * 60)
