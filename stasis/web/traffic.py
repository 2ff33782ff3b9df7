"""
What the proxy answered lately: the last requests, and hits and misses per
minute since the first of them, for the web UI's live view and the metrics.

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
from stasis.cache_status import Status, noted_outcome
from stasis.errors import StasisError
from stasis.model import Entry

__all__ = ["Seen", "Traffic", "note_about", "note_error"]

#: A minute's figures: its start (POSIX seconds), hits, misses, bypasses.
Minute = tuple[float, int, int, int]

#: A request's record as kept (see :meth:`Traffic.note`).
_Noted = tuple[Any, ...]

#: How many minutes :meth:`Traffic.series` can look back: a day.
KEPT_MINUTES = 24 * 60

#: A model name is kept this long at most: it is the client's to choose, and
#: two hundred of a megabyte each would be kept for nothing.
MODEL_CHARACTERS = 200

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


def _seen(noted: _Noted) -> Seen:
    """The record ``noted`` is the makings of."""
    (at, method, path, status, cache, outcome, reason, provider, model, namespace) = noted[:10]
    key, seconds, upstream_seconds, error = noted[10:]
    return Seen(
        at=at,
        method=method.decode("latin-1"),
        path=path.decode("latin-1"),
        status=status,
        cache=None if cache is None else cache.value.decode("ascii"),
        detail=reason.decode("utf-8", "replace")
        if reason
        else (None if outcome is None else outcome.summary()),
        provider=provider or "",
        model=model,
        namespace=namespace or "",
        key=key,
        seconds=seconds,
        upstream_seconds=upstream_seconds,
        error=None if error is None else json.loads(error.to_json())["error"],
    )


class Traffic:
    """
    The last ``keep`` requests, numbered; the hits and misses of each minute;
    and the requests answered since start by provider and cache status.
    """

    def __init__(self, clock: IReactorTime, keep: int = 200) -> None:
        self.clock = clock
        self._recent: deque[tuple[int, _Noted]] = deque(maxlen=keep)
        self._last = 0
        #: The first minute there is to show, once anyone asked or anything came.
        self._started: float | None = None
        #: Minutes that saw a request: [start, hits, misses, bypasses], oldest first.
        self._minutes: deque[list[float]] = deque(maxlen=KEPT_MINUTES)
        self._observers: list[Callable[[Seen], None]] = []
        #: Requests answered since start, by (provider, cache status).
        self.requests: dict[tuple[str, str], int] = {}

    def subscribe(self, observer: Callable[[Seen], None]) -> None:
        """
        Call ``observer`` with every request that went upstream from now on
        (a miss, a bypass; never a hit, which must stay cheap).
        """
        self._observers.append(observer)

    def note(
        self, request: Any, at: float, seconds: float, cache: Status, reason: bytes | None
    ) -> None:
        """
        Record a proxied ``request`` from what the proxy noted on it (its
        ``cache`` status, the ``reason`` its access line gives).

        Once per request, so as a plain tuple: a tuple costs a tenth of an
        attrs instance, and most are never looked at. Strings only, so that a
        kept record holds no request or answer alive.
        """
        about: About | Entry | None = getattr(request, _ABOUT_ATTRIBUTE, None)
        if about is None:
            provider = model = namespace = None
        else:
            provider, model, namespace = about.provider, about.model, about.namespace
            if model is not None:
                model = model[:MODEL_CHARACTERS]
        self.record_noted(
            (
                at,
                request.method,
                request.path,
                request.code,
                cache,
                noted_outcome(request),
                reason,
                provider,
                model,
                namespace,
                getattr(request, _KEY_ATTRIBUTE, None),
                seconds,
                getattr(request, _UPSTREAM_ATTRIBUTE, None),
                getattr(request, _ERROR_ATTRIBUTE, None),
            )
        )

    def record(self, seen: Seen) -> None:
        """Record ``seen`` (made elsewhere: a test, another process's record)."""
        cache = None if seen.cache is None else Status(seen.cache.encode("ascii"))
        self.record_noted(
            (
                seen.at,
                seen.method.encode("latin-1"),
                seen.path.encode("latin-1"),
                seen.status,
                cache,
                None,
                None if seen.detail is None else seen.detail.encode("utf-8"),
                seen.provider,
                seen.model,
                seen.namespace,
                seen.key,
                seen.seconds,
                seen.upstream_seconds,
                None,
            )
        )

    def record_noted(self, noted: _Noted) -> None:
        # Once per request: plain comparisons, no Enum hashing (a Python-level __hash__).
        self._last += 1
        self._recent.append((self._last, noted))
        cache = noted[4]
        if cache is None:
            return
        if cache is _HIT:
            column, name = 1, "HIT"
        elif cache is _STALE:
            column, name = 1, "STALE"  # a hit, as the chart counts them
        elif cache is _MISS:
            column, name = 2, "MISS"
        else:
            column, name = 3, "BYPASS"
        start = noted[0] // 60 * 60
        minutes = self._minutes
        if not minutes or minutes[-1][0] < start:
            minutes.append([start, 0, 0, 0])
            if self._started is None:
                self._started = start
        minutes[-1][column] += 1
        counted = (noted[7] or "", name)
        requests = self.requests
        requests[counted] = requests.get(counted, 0) + 1
        if noted[12] is not None and self._observers:
            seen = _seen(noted)
            for observer in self._observers:
                observer(seen)

    def recent(self, after: int = 0) -> tuple[int, list[tuple[int, Seen]]]:
        """The number of the last request, and the requests kept that came after ``after``."""
        return self._last, [(n, _seen(noted)) for n, noted in self._recent if n > after]

    def series(self, minutes: int) -> list[Minute]:
        """
        Each of the last ``minutes`` minutes since the first request, oldest
        first, a quiet minute as zeros: a chart needs its gaps.
        """
        now = _minute(self.clock.seconds())
        if self._started is None:
            self._started = now
        first = max(self._started, now - 60 * (max(1, min(minutes, KEPT_MINUTES)) - 1))
        counted = {m[0]: m for m in self._minutes if m[0] >= first}
        series: list[Minute] = []
        start = first
        while start <= now:
            m = counted.get(start)
            figures = (0, 0, 0) if m is None else (int(m[1]), int(m[2]), int(m[3]))
            series.append((start, *figures))
            start += 60
        return series


_HIT, _STALE, _MISS = Status.HIT, Status.STALE, Status.MISS


def _minute(seconds: float) -> float:
    return float(math.floor(seconds / 60) * 60)
