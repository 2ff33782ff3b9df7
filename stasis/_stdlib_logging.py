"""
stasis's log events handed to the standard :mod:`logging` module.

For a program that does not run Twisted (:func:`stasis.serve_in_thread`): it
already has a way to see a library's logs, and this keeps to it rather than
writing to a stream of stasis's choosing. The loggers are named by the
events' namespaces (``stasis.service``, ``stasis.http``, ...).
"""

from __future__ import annotations

import logging

from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["StdlibLogging", "stdlib_level_name"]

_LEVELS = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


@implementer(ILogObserver)
class StdlibLogging:
    """
    Hands stasis's log events, and any error Twisted logs (under the logger
    ``stasis``), to :mod:`logging`. Twisted's own informational chatter (a
    port opening, a factory starting) is left out: it is about the reactor,
    which the program never sees.
    """

    def __call__(self, event: LogEvent) -> None:
        namespace = event.get("log_namespace") or "twisted"
        level = _LEVELS.get(event.get("log_level", LogLevel.info), logging.INFO)
        if not namespace.startswith("stasis") and level < logging.ERROR:
            return
        logger = logging.getLogger(namespace if namespace.startswith("stasis") else "stasis")
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = failure.value if isinstance(failure, Failure) else None
        logger.log(level, "%s", formatEvent(event), exc_info=exc_info)


def stdlib_level_name(level: int) -> str:
    """The :data:`stasis.log.LOG_LEVELS` name that lets through what ``level`` does."""
    if level <= logging.DEBUG:
        return "debug"
    if level <= logging.INFO:
        return "info"
    if level <= logging.WARNING:
        return "warn"
    return "error" if level <= logging.ERROR else "fatal"
