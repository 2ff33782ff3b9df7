"""
Twisted's global reactor, run in a daemon thread and called from others.

What :func:`stasis.serve_in_thread` stands on. ``blockingCallFromThread``
would do for the calls, but it waits for ever when the reactor thread is gone
(it never ran, or someone stopped it): :meth:`ReactorThread.call` gives up
then, and at a deadline, and says which.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ReactorNotRestartable
from twisted.python.failure import Failure

__all__ = ["ReactorThread", "ReactorThreadGone"]

#: How often a waiting caller looks whether the reactor thread is still there.
_POLL_SECONDS = 0.05


class ReactorThreadGone(RuntimeError):
    """The reactor thread ended (or never ran) before it answered."""


@define
class ReactorThread:
    """
    ``reactor.run(installSignalHandlers=False)`` in a daemon thread: signals
    stay the program's, and a program that exits without stopping it is not
    held up (the thread pools the reactor starts inherit the daemon flag).
    """

    reactor: Any
    _thread: threading.Thread | None = field(default=None, init=False)
    #: Why :meth:`reactor.run` ended with an exception, if it did.
    _crash: BaseException | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stasis-reactor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reactor.run(installSignalHandlers=False)
        except BaseException as e:  # reported to the caller waiting in call()
            self._crash = e

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def call(self, function: Callable[[], Any], timeout: float) -> Any:
        """
        Run ``function`` in the reactor thread and return its result here
        (a Deferred's, once it fires), or raise its exception here;
        :class:`ReactorThreadGone` or ``TimeoutError`` if no answer comes.
        """
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def run() -> None:
            maybeDeferred(function).addBoth(results.put)

        self.reactor.callFromThread(run)
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = results.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self.alive:
                    raise self._gone() from self._crash
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"stasis's reactor thread did not answer in {timeout:g}s"
                    ) from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def _gone(self) -> ReactorThreadGone:
        if isinstance(self._crash, ReactorNotRestartable):
            return ReactorThreadGone(
                "the Twisted reactor already ran and stopped in this process, "
                "and it cannot be restarted"
            )
        if self._crash is not None:
            return ReactorThreadGone(f"stasis's reactor thread failed: {self._crash!r}")
        return ReactorThreadGone("stasis's reactor thread was stopped from elsewhere")

    def stop(self, timeout: float) -> None:
        """Stop the reactor (its shutdown triggers end its thread pools) and join its thread."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self.reactor.callFromThread(self._stop_reactor)
        self.join(timeout)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the reactor thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()
