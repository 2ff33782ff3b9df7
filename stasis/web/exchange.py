"""
One client request's life as seen by the proxy: still connected, or gone.

twisted.web must never be asked to ``finish()`` a request twice, or after its
client disconnected, and work done for a client that left should stop; this
small object keeps that state in one place (as klein's resource does). It is
also the :class:`~stasis.cache.ports.Client` the engine relays a live answer to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from stasis.cache_status import CacheOutcome, note_outcome
from stasis.errors import StasisError
from stasis.web.site import log_unfinished, write_error

__all__ = ["Exchange"]


class Exchange:
    """Tracks whether ``request`` can still be answered, and whom to tell when not."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.gone = False
        self.finished = False
        self._on_gone: list[Callable[[], object]] = []
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.gone = True
        callbacks, self._on_gone = self._on_gone, []
        for callback in callbacks:
            callback()

    def on_gone(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` if the client disconnects; the result forgets it."""
        if self.gone:
            callback()
            return lambda: None
        self._on_gone.append(callback)

        def forget() -> None:
            if callback in self._on_gone:
                self._on_gone.remove(callback)

        return forget

    @property
    def open(self) -> bool:
        """Whether anything may still be written to the client."""
        return not (self.gone or self.finished)

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def set_length(self, length: int) -> None:
        request = self.request
        if request.method != b"HEAD" and request.code not in NO_BODY_CODES:
            request.setHeader(b"content-length", b"%d" % length)

    def attach(self, producer: IPushProducer) -> None:
        self.request.registerProducer(producer, True)

    def detach(self) -> None:
        self.request.unregisterProducer()

    def abort(self) -> None:
        """
        End the answer without its proper end (no terminating chunk), so the client
        knows it is incomplete, yet keeps every byte already sent: a reset would
        make the client's kernel discard what it had received but not yet read.
        """
        if self.open:
            self.finished = True
            log_unfinished(self.request, "cut short")
            channel = self.request.channel
            transport = channel.transport
            if transport is not None:
                transport.loseConnection()
            else:
                # An HTTP/2 stream has no transport of its own: reset this
                # stream only, not the connection its siblings share.
                stream: Any = channel
                stream.abortConnection()

    def revise(self, outcome: CacheOutcome) -> None:
        """
        Say ``outcome`` in the head instead, unless the head is written
        already; the access log and the recent requests hear of it anyway.
        """
        note_outcome(self.request, outcome)
        if self.open and not self.request.startedWriting:
            self.request.setHeader(b"cache-status", outcome.cache_status())

    def fail(self, error: StasisError) -> None:
        """
        Answer with ``error`` as JSON if nothing of another answer was written
        yet: the head of a live answer that was set up gives way to it, but
        for what stasis says of the request (``X-Stasis-*``, ``Cache-Status``).
        Otherwise end the answer as :meth:`abort` does.
        """
        if not self.open:
            return
        request = self.request
        if request.startedWriting:
            # Its access line says why it was cut short.
            request.stasis_reason = error.log_reason.encode("utf-8", "replace")  # type: ignore[attr-defined]
            self.abort()
            return
        kept = {
            name: values
            for name, values in request.responseHeaders.getAllRawHeaders()
            if name.lower().startswith(b"x-stasis-") or name.lower() == b"cache-status"
        }
        request.responseHeaders = Headers(kept)
        self.finished = True
        write_error(request, error)

    def finish(self) -> None:
        if self.open:
            self.finished = True
            self.request.finish()
