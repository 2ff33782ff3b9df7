"""
stasis inside a program that has no Twisted reactor: :func:`serve_in_thread`.

A script, a notebook or a test suite written with blocking code wants a
caching proxy for the length of a block, without running a daemon beside it
and without learning Twisted. :func:`serve_in_thread` runs Twisted's global
reactor in a daemon thread, starts a :class:`~stasis.service.StasisService`
on it, and hands back an :class:`EmbeddedProxy` with the URL to point a client
at, the ``/stats`` figures, and a ``stop``.

Twisted's global reactor runs at most once per process and cannot be
restarted, so the rule is one proxy per process: a second
:func:`serve_in_thread`, one after a stop, or one in a process whose reactor
already runs (or ran) is a :class:`RuntimeError` that says so. A program that
runs a reactor of its own embeds :class:`~stasis.service.StasisService`
instead (``setServiceParent``).

Nothing process-wide changes beyond the reactor thread: no signal handlers
(``installSignalHandlers=False``), no change to ``os.environ``, no log file.
stasis's log events (and errors Twisted logs, such as an unhandled error in a
Deferred) are handed to the standard :mod:`logging` module under the loggers
``stasis.*``; with no logging configured, Python prints warnings and errors
to stderr and drops the rest, as it does for any library.

stasis's own level is set from the ``stasis`` logger's when the proxy starts,
so that it does not even make the events nobody will see: nothing starts
Twisted's logging in such a program, and until something does, Twisted keeps
the last 65,536 events in memory (some 40 MB of per-request lines).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

from stasis._reactor_thread import ReactorThread
from stasis._stdlib_logging import StdlibLogging, stdlib_level_name
from stasis.cache.housekeeping import Bounds
from stasis.config import Config, listen_on_port
from stasis.log import set_log_level
from stasis.service import StasisService, describe_port
from stasis.web.status import stats_report

__all__ = ["EmbeddedProxy", "serve_in_thread"]


#: How long :func:`serve_in_thread` waits for the port and the database.
START_TIMEOUT = 30.0
#: How long :meth:`EmbeddedProxy.stop` waits, beyond the drain, for the reactor to wind down.
STOP_TIMEOUT = 30.0

_ONE_PER_PROCESS = (
    "Twisted's global reactor runs once per process and cannot be restarted, so "
    "serve_in_thread serves one proxy per process"
)

#: Guards :data:`_claimed`: two threads asking at once get one proxy and one refusal.
_lock = threading.Lock()
#: Why the reactor is no longer free for :func:`serve_in_thread`, once it is not.
_claimed: str | None = None


@define
class EmbeddedProxy:
    """
    A running proxy served from a reactor thread; see :func:`serve_in_thread`.

    Usable as a context manager: the block's end stops it. Thread-safe: any
    thread may call :meth:`stats` and :meth:`stop`.
    """

    #: Where it listens, e.g. ``http://127.0.0.1:54321``: a client's base URL
    #: is this plus the API's path (``/v1`` for OpenAI's SDK).
    url: str
    _service: StasisService = field(repr=False)
    _thread: ReactorThread = field(repr=False)
    _observer: ILogObserver | None = field(repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether it still serves: false once :meth:`stop` was called."""
        return not self._stopping and self._thread.alive

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """
        ``GET /stats``'s figures as a dict (``hits``, ``misses``,
        ``totalEntries``, …), read in the process rather than over a socket.
        """
        if not self.running:
            raise RuntimeError("this stasis proxy is stopped: it has no statistics to give")
        service = self._service
        bounds = Bounds(
            max_bytes=service.config.max_size_bytes, max_entries=service.config.max_entries
        )

        async def read() -> dict[str, Any]:
            return stats_report(await service.store.stats(), service.counters, bounds)

        report: dict[str, Any] = self._thread.call(lambda: ensureDeferred(read()), timeout)
        return report

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """
        Stop listening, let the requests in flight finish (as the service's
        stop does: ``config.shutdown_grace``), close the database, stop the
        reactor and wait for its thread. Calling it again does nothing.

        A program that exits without it loses nothing a client was answered
        (an entry is committed before its answer ends), only the hit counts
        of the last second.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        try:
            if self._thread.alive:
                grace = self._service.drain_seconds
                self._thread.call(self._service.stopService, grace + timeout)
        finally:
            _wind_down(self._thread, self._observer, timeout, "stasis's proxy was stopped")

    def __enter__(self) -> EmbeddedProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(
    config: Config | None = None,
    *,
    forward_logs: bool = True,
    timeout: float = START_TIMEOUT,
) -> EmbeddedProxy:
    """
    Serve stasis from a reactor thread in this process, for a program without
    a Twisted reactor; returns once it listens, with the database open.

    ``config`` defaults to a free port on 127.0.0.1 and ``./stasis-cache.db``;
    ``Config(listen="tcp:0:interface=127.0.0.1", …)`` (or
    :func:`stasis.config.listen_on_port` ``(0)``) picks a free port, which
    :attr:`EmbeddedProxy.url` then names. ``config.log_level`` is not applied:
    the ``stasis`` logger's level, as it is at the start, says which lines
    stasis makes (``logging.getLogger("stasis").setLevel(logging.DEBUG)`` for
    all of them). ``config.workers`` must be 1: the proxy serves in this process.
    :meth:`EmbeddedProxy.stop` lets the requests in flight finish as long as
    the service's stop does (``config.shutdown_grace``). With
    ``forward_logs`` false, stasis's log events go nowhere.

    A port that is taken or a database that cannot be opened raises
    :class:`~stasis.service.StartupError` here, in the caller's thread, with
    the reactor thread already gone. A :class:`RuntimeError` says why it
    cannot serve at all: a proxy already served in this process, or a
    reactor runs (or ran) here already.
    """
    global _claimed
    if config is None:
        config = Config(listen=listen_on_port(0))
    if config.workers != 1:
        raise ValueError(
            "serve_in_thread serves in this process: config.workers must be 1, "
            f"not {config.workers} (`stasis start --workers N` runs several processes)"
        )
    with _lock:
        if _claimed is not None:
            raise RuntimeError(f"{_claimed}; {_ONE_PER_PROCESS}")
        from twisted.internet import reactor

        if reactor.running:
            raise RuntimeError(
                "a Twisted reactor already runs in this process: serve_in_thread is for "
                "programs without one; add stasis.StasisService(config) to your application "
                "instead (service.setServiceParent(...) or service.startService())"
            )
        # Built here, so a setting Twisted cannot use raises before any thread exists.
        service = StasisService(config, reactor)
        _claimed = (
            "stasis already served a proxy in this process (serve_in_thread was called before)"
        )
    observer: ILogObserver | None = None
    if forward_logs:
        observer = StdlibLogging()
        globalLogPublisher.addObserver(observer)
        set_log_level(stdlib_level_name(logging.getLogger("stasis").getEffectiveLevel()))
    else:
        set_log_level("fatal")
    thread = ReactorThread(reactor)
    thread.start()
    try:
        port = thread.call(lambda: _start(service), timeout)
    except BaseException:
        _wind_down(thread, observer, STOP_TIMEOUT, "an earlier serve_in_thread failed to start")
        raise
    return EmbeddedProxy(describe_port(port, config.listen), service, thread, observer)


def _start(service: StasisService) -> Deferred[IListeningPort]:
    """In the reactor thread: start ``service``; fires with its port, or fails having stopped it."""
    service.startService()  # raises StartupError for a port taken at once, or the database

    def not_listening(failure: Failure) -> Deferred[IListeningPort]:
        # An endpoint that failed only later: the database is open, close it.
        stopped: Deferred[Any] = maybeDeferred(service.stopService)
        return stopped.addBoth(lambda _: failure)

    return service.when_listening().addErrback(not_listening)


def _wind_down(
    thread: ReactorThread, observer: ILogObserver | None, timeout: float, why: str
) -> None:
    """
    Stop the reactor and join its thread, stop forwarding log events; ``why``
    is what a later :func:`serve_in_thread` is told.
    """
    global _claimed
    with _lock:
        _claimed = why
    thread.stop(timeout)
    if observer is not None:
        globalLogPublisher.removeObserver(observer)
