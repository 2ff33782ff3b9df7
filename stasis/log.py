"""
Logging: the level filter behind ``--log-level``, warnings that repeat at most
once a minute, and a fast log observer for twistd.

stasis's loggers publish through one filtering observer, so the level option
governs stasis's own lines without replacing the observer twistd installs
(and without touching an embedding application's other loggers).

twistd's own text observer spends ~25 µs formatting each event, more than a
cache hit costs: with one line per request that halves a busy daemon's
throughput. :func:`observer` writes the same text in a fraction of the time
(``stasis start`` uses it; ``twistd --logger stasis.log.observer -n stasis``
opts in).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = [
    "LOG_LEVELS",
    "RateLimitedWarning",
    "enabled",
    "logger",
    "observer",
    "request_line",
    "set_log_level",
]

#: The original tool's level names, as twisted.logger levels.
LOG_LEVELS: dict[str, LogLevel] = {
    "fatal": LogLevel.critical,
    "error": LogLevel.error,
    "warn": LogLevel.warn,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
    "trace": LogLevel.debug,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def logger(namespace: str) -> Logger:
    """A logger for one stasis module, subject to ``--log-level``."""
    return Logger(namespace=namespace, observer=_observer)


#: enabled()'s answers, until the level changes: a per-request check should cost a lookup.
_enabled: dict[tuple[str, LogLevel], bool] = {}


def enabled(namespace: str, level: LogLevel) -> bool:
    """Whether an event would pass ``--log-level``: lets a hot path skip building it."""
    answer = _enabled.get((namespace, level))
    if answer is None:
        threshold: LogLevel = _predicate.logLevelForNamespace(namespace)
        answer = _enabled[namespace, level] = not level < threshold
    return answer


def set_log_level(name: str) -> None:
    """
    Set the level of stasis's own loggers, process-wide; ``name`` is one of :data:`LOG_LEVELS`.

    The daemon applies ``--log-level`` with it; an embedded service never
    does, since the level belongs to the application it runs in.
    """
    _predicate.setLogLevelForNamespace("stasis", LOG_LEVELS[name])
    _enabled.clear()


class RateLimitedWarning:
    """A warning that is logged at most once per ``interval`` seconds."""

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 60.0) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._last: float | None = None

    def warn(self, format: str, **kwargs: Any) -> None:
        now = self._clock.seconds()
        if self._last is None or now - self._last >= self._interval:
            self._last = now
            self._log.warn(format, **kwargs)


@implementer(ILogObserver)
class _ClassicTextObserver:
    """
    twistd's classic text format (``TIME [namespace#level] text``), written fast.

    The timestamp is formatted once a second, and events whose format is just
    ``{line}`` (stasis's per-request lines, pre-formatted) skip the formatter
    and are kept to be written together a moment later, in one write, instead
    of one each: stdout is unbuffered under ``PYTHONUNBUFFERED`` and line
    buffered on a terminal, and a write per request would cost a busy daemon
    more than its hits. Any other event writes the lines before it, then
    itself, at once.
    """

    def __init__(self, out: IO[str], clock: IReactorTime) -> None:
        self._out = out
        self._clock = clock
        self._second = -1
        self._stamp = ""
        #: Lines waiting to be written: text, or (time, bytes) of a request's line.
        self._lines: list[str | tuple[float, bytes]] = []
        self._flush: IDelayedCall | None = None

    def _write_lines(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        lines, self._lines = self._lines, []
        if lines:
            self._out.write(
                "".join(
                    line
                    if isinstance(line, str)
                    else f"{self._time(line[0])} [{_ACCESS_SYSTEM}] {line[1].decode('latin-1')}\n"
                    for line in lines
                )
            )

    def _flush_now(self) -> None:
        self._write_lines()
        self._out.flush()

    def _time(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second, self._stamp = second, formatTime(second)
        return self._stamp

    def hold(self, system: str, line: str, when: float | None) -> None:
        """Keep a pre-formatted line, to be written with the ones after it."""
        self._lines.append(f"{self._time(when)} [{system}] {line}\n")
        self._held()

    def hold_request(self, when: float, line: bytes) -> None:
        """Keep a request's line, made into text only when written (with many others)."""
        self._lines.append((when, line))
        self._held()

    def _held(self) -> None:
        if len(self._lines) >= MAX_HELD_LINES:
            self._flush_now()
        elif self._flush is None:
            self._flush = self._clock.callLater(LINE_FLUSH_SECONDS, self._flush_now)

    def __call__(self, event: LogEvent) -> None:
        line = event.get("line")
        if event.get("log_format") == "{line}" and isinstance(line, str):
            level = event.get("log_level")
            system = event.get("log_system") or (
                f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
            )
            self.hold(system, line, event.get("log_time"))
            return
        text = formatEventAsClassicLogText(event, formatTime=self._time)
        if text is not None:
            self._write_lines()
            self._out.write(text)
            self._flush_now()


#: How long a per-request line may wait in the buffer for the ones after it.
LINE_FLUSH_SECONDS = 0.1
#: How many per-request lines may wait at most.
MAX_HELD_LINES = 512


#: stasis's own writer, once twistd logs through it (``--logger stasis.log.observer``,
#: as ``stasis start`` always does): per-request lines are handed to it directly.
_direct: _ClassicTextObserver | None = None

#: The per-request lines' logger, for observers other than stasis's own.
_access = Logger(namespace="stasis.http", observer=globalLogPublisher)
#: What twistd's text format shows in brackets for these lines, worked out once.
_ACCESS_SYSTEM = "stasis.http#info"


def request_line(line: bytes, when: float) -> None:
    """
    Log one request's line (the caller has checked the level with :func:`enabled`).

    A line per request is the busiest thing a daemon logs: handed straight to
    stasis's own writer, it skips building an event and dispatching it to the
    observers, and becomes text only when written, in a batch. With any other
    observer (twistd's own, an embedding application's) it is an ordinary
    event at info level.
    """
    if _direct is not None:
        _direct.hold_request(when, line)
        return
    globalLogPublisher(
        {
            "log_logger": _access,
            "log_level": LogLevel.info,
            "log_namespace": _access.namespace,
            "log_system": _ACCESS_SYSTEM,
            "log_source": None,
            "log_format": "{line}",
            "log_time": when,
            "line": line.decode("latin-1"),
        }
    )


def observer() -> ILogObserver:
    """
    A log observer factory for ``twistd --logger``: classic text on stdout, fast.

    twistd makes it the process's one observer, so it also takes the
    per-request lines directly (:func:`request_line`).
    """
    global _direct
    from twisted.internet import reactor

    clock: IReactorTime = reactor
    _direct = _ClassicTextObserver(sys.stdout, clock)
    return _direct
