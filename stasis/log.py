"""
Logging: the level filter behind ``--log-level``, and warnings that repeat at most once a minute.

stasis's loggers publish through one filtering observer, so the level option
governs stasis's own lines without replacing the observer twistd installs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

__all__ = ["LOG_LEVELS", "RateLimitedWarning", "enabled", "logger", "set_log_level"]

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


def enabled(namespace: str, level: LogLevel) -> bool:
    """Whether an event would pass ``--log-level``: lets a hot path skip building it."""
    threshold: LogLevel = _predicate.logLevelForNamespace(namespace)
    return not level < threshold


def set_log_level(name: str) -> None:
    """Apply ``--log-level``; ``name`` is one of :data:`LOG_LEVELS`."""
    _predicate.setLogLevelForNamespace("stasis", LOG_LEVELS[name])


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
