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
opts in), or with ``--log-format json`` one JSON object a line, for log
shippers.

What may be logged is decided here too: a URL without its query (``key=``)
or its userinfo (:func:`url_for_log`), headers with every credential masked
(:func:`masked_headers`).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from zope.interface import implementer

from stasis.keys import CREDENTIAL_HEADERS, DEFAULT_POLICY

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASK",
    "RateLimitedWarning",
    "debugging",
    "enabled",
    "logger",
    "masked_headers",
    "observer",
    "request_line",
    "set_log_format",
    "set_log_level",
    "tracing",
    "url_for_log",
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

#: ``--log-format``'s choices: twistd's classic text, or one JSON object a line.
LOG_FORMATS = ("text", "json")

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
    global _tracing, _debugging
    _predicate.setLogLevelForNamespace("stasis", LOG_LEVELS[name])
    _tracing = name == "trace"
    _debugging = name in ("debug", "trace")
    _enabled.clear()


#: Whether ``-l trace`` was asked for: twisted.logger has no level below debug.
_tracing = False
#: Whether ``-l debug`` (or trace) was asked for.
_debugging = False


def debugging() -> bool:
    """
    Whether stasis logs at debug level: :func:`enabled` for a check on every
    hit, at a fraction of its cost.
    """
    return _debugging


def tracing() -> bool:
    """Whether ``-l trace`` is on: each request's headers (masked) are logged too."""
    return _tracing


#: The format :func:`observer` writes (``--log-format``).
_format = "text"


def set_log_format(name: str) -> None:
    """
    Choose what :func:`observer` writes: ``text`` or ``json`` (:data:`LOG_FORMATS`).

    Called before twistd starts logging (the service is made first), so the
    observer it then asks for is the one the options chose.
    """
    global _format
    if name not in LOG_FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(LOG_FORMATS)}, not {name!r}")
    _format = name


def url_for_log(url: str, path: bool = True) -> str:
    """
    ``url`` as a log line (or an error) may show it: without its query
    (``key=`` carries a Gemini API key), its fragment, or its userinfo
    (``user:secret@``); without its path too unless ``path``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "-"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path if path else "", "", ""))


#: What a masked header value becomes.
MASK = "***"
#: Headers masked whatever ``--credential-header`` says: those that carry a
#: credential for any provider (:data:`stasis.keys.CREDENTIAL_HEADERS`), those
#: that name the account billed (treated as part of the credential), AWS's
#: session token, and the cookies an upstream sets.
_ALWAYS_MASKED = frozenset(
    {
        *CREDENTIAL_HEADERS,
        *DEFAULT_POLICY.account_headers,
        "set-cookie",
        "x-amz-security-token",
    }
)


def masked_headers(
    headers: Iterable[tuple[bytes, Iterable[bytes]]], also: Iterable[str] = ()
) -> str:
    """
    Headers as one line of ``name: value`` pairs, each credential's value
    replaced by :data:`MASK` whole (a SigV4 ``Authorization`` included:
    its signature and access key are the caller's). ``also``: more header
    names to mask (``--credential-header``).
    """
    secret = _ALWAYS_MASKED.union(name.lower() for name in also)
    shown = []
    for raw_name, values in headers:
        name = raw_name.decode("latin-1").lower()
        for value in values:
            text = MASK if name in secret else value.decode("latin-1")
            shown.append(f"{name}: {text}")
    return "; ".join(shown)


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


#: A request's access line, as :func:`request_line` is given it: when, method,
#: path, HTTP status, cache status, milliseconds, and why it is out of the
#: ordinary (a stasis error's reason, ``client gone``), or empty.
Access = tuple[float, bytes, bytes, int, bytes, float, bytes]


def access_text(access: Access) -> bytes:
    """An access line's text: ``POST /v1/chat/completions 504 MISS 1.2ms (replay-miss)``."""
    _, method, path, code, cache, ms, note = access
    line = b"%s %s %d %s %.1fms" % (method, path, code, cache, ms)
    if note:
        line += b" (" + note + b")"
    return line


def access_fields(access: Access) -> dict[str, Any]:
    """An access line's facts, as the JSON format and other observers get them."""
    _, method, path, code, cache, ms, note = access
    return {
        "method": method.decode("latin-1"),
        "path": path.decode("latin-1"),
        "status": code,
        "cache": cache.decode("latin-1"),
        "ms": round(ms, 1),
        "reason": note.decode("latin-1") or None,
    }


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
        #: Lines waiting to be written: text, or a request's access line.
        self._lines: list[str | Access] = []
        self._flush: IDelayedCall | None = None

    def _write_lines(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        lines, self._lines = self._lines, []
        if lines:
            self._out.write("".join(map(self._text, lines)))

    def _text(self, line: str | Access) -> str:
        if isinstance(line, str):
            return line
        return f"{self._time(line[0])} [{_ACCESS_SYSTEM}] {access_text(line).decode('latin-1')}\n"

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

    def hold_request(self, access: Access) -> None:
        """Keep a request's line, made into text only when written (with many others)."""
        self._lines.append(access)
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


#: Event keys the JSON format leaves out: twisted.logger's own bookkeeping.
_NOT_FIELDS = frozenset({"line", "log_failure", "relayed_json"})


class _JSONObserver(_ClassicTextObserver):
    """
    ``--log-format json``: one JSON object a line, with ``time`` (ISO 8601),
    ``level``, ``logger`` (twisted.logger's namespace: ``stasis.http``),
    ``message``, and the event's own fields (an
    access line's ``method``, ``path``, ``status``, ``cache``, ``ms``,
    ``reason``; a debug line's ``upstream``, ``model``, ``namespace``,
    ``key``). Batched as the text format is.
    """

    def _text(self, line: str | Access) -> str:
        if isinstance(line, str):
            return line
        return self._json(
            line[0],
            "info",
            _access.namespace,
            access_text(line).decode("latin-1"),
            access_fields(line),
        )

    def _json(
        self, when: float | None, level: str, namespace: str, message: str, fields: dict[str, Any]
    ) -> str:
        document: dict[str, Any] = {
            "time": _iso_time(when),
            "level": level,
            "logger": namespace,
            "message": message,
        }
        for name, value in fields.items():
            if name not in document and value is not None:
                document[name] = value if _plain(value) else str(value)
        return json.dumps(document, ensure_ascii=False) + "\n"

    def __call__(self, event: LogEvent) -> None:
        line = event.get("line")
        if event.get("relayed_json") and isinstance(line, str):
            # A worker's line, in this format already (see stasis.workers.supervisor).
            self._lines.append(line + "\n")
            self._held()
            return
        level = event.get("log_level")
        message = formatEvent(event)
        failure = event.get("log_failure")
        fields = {
            name: value
            for name, value in event.items()
            if not name.startswith("log_") and name not in _NOT_FIELDS
        }
        if failure is not None:
            fields["traceback"] = failure.getTraceback()
        text = self._json(
            event.get("log_time"),
            level.name if level is not None else "info",
            event.get("log_namespace") or "-",
            message,
            fields,
        )
        self._lines.append(text)
        if event.get("log_format") == "{line}":
            self._held()
        else:
            self._flush_now()


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _iso_time(when: float | None) -> str | None:
    if when is None:
        return None
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def request_line(access: Access) -> None:
    """
    Log one request's line (the caller has checked the level with :func:`enabled`).

    A line per request is the busiest thing a daemon logs: handed straight to
    stasis's own writer, it skips building an event and dispatching it to the
    observers, and becomes text only when written, in a batch. With any other
    observer (twistd's own, an embedding application's) it is an ordinary
    event at info level, with the line's facts as fields.
    """
    if _direct is not None:
        _direct.hold_request(access)
        return
    globalLogPublisher(
        {
            "log_logger": _access,
            "log_level": LogLevel.info,
            "log_namespace": _access.namespace,
            "log_system": _ACCESS_SYSTEM,
            "log_source": None,
            "log_format": "{line}",
            "log_time": access[0],
            "line": access_text(access).decode("latin-1"),
            **access_fields(access),
        }
    )


def observer() -> ILogObserver:
    """
    A log observer factory for ``twistd --logger``: classic text on stdout,
    fast, or JSON lines (``--log-format json``, see :func:`set_log_format`).

    twistd makes it the process's one observer, so it also takes the
    per-request lines directly (:func:`request_line`).
    """
    global _direct
    from twisted.internet import reactor

    clock: IReactorTime = reactor
    kind = _JSONObserver if _format == "json" else _ClassicTextObserver
    _direct = kind(sys.stdout, clock)
    return _direct


def writes_directly() -> bool:
    """Whether stasis's own observer is the one writing the log (see :func:`observer`)."""
    return _direct is not None
