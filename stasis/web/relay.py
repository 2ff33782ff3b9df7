"""
The upstream body, relayed to the client as it arrives and recorded on the side.

A storable answer that is not a stream is held back (up to a limit) and
written whole once it is stored: one write, framed by its length, instead of
a chunked body whose end must wait for the commit anyway.

The upstream connection is registered as the client request's push producer:
when the client's socket buffer fills, twisted.web pauses the upstream, so a
slow reader holds a few buffers in the proxy, not the whole answer. When the
client leaves, the upstream connection is closed, so the provider stops
generating (and billing) tokens for nobody. An upstream that goes silent
mid-body for longer than the idle timeout is cut off the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import NO_BODY_CODES, PotentialDataLoss

from stasis.streams.recorder import Recorder
from stasis.web.exchange import Exchange

__all__ = ["Outcome", "Relay"]


class Outcome(enum.Enum):
    """How a relayed body ended; only ``COMPLETE`` may be stored."""

    COMPLETE = "complete"
    #: The upstream closed without framing, so completeness cannot be known.
    UNCERTAIN = "uncertain"
    #: The upstream connection failed part-way, or went silent too long.
    BROKEN = "broken"
    #: The client left before the end.
    ABANDONED = "abandoned"


class Relay(Protocol):
    """
    Receives an upstream response body (``IResponse.deliverBody``).

    Each chunk is written to the client as it arrives and fed to ``recorder``
    (when recording); ``done`` fires with the :class:`Outcome`.
    """

    def __init__(
        self,
        exchange: Exchange,
        recorder: Recorder | None,
        clock: IReactorTime,
        idle_timeout: float,
        hold: int = 0,
    ) -> None:
        self.exchange = exchange
        self.recorder = recorder
        self.done: Deferred[Outcome] = Deferred()
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._forget_gone: Callable[[], None] = lambda: None
        #: Up to ``hold`` bytes are held back and written whole by release().
        self._held: list[bytes] | None = [] if hold > 0 else None
        self._held_bytes = 0
        self._hold = hold

    def connectionMade(self) -> None:
        producer = IPushProducer(self.transport)
        if not self.exchange.open:
            producer.stopProducing()
            return
        self.exchange.request.registerProducer(producer, True)
        self._forget_gone = self.exchange.on_gone(producer.stopProducing)
        self._idle = self._clock.callLater(self._idle_timeout, producer.stopProducing)

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_timeout)
        if not self.exchange.open:
            return
        if self._held is None:
            self.exchange.request.write(data)
        else:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > self._hold:
                self.release()
        if self.recorder is not None:
            self.recorder.feed(data)

    def release(self) -> None:
        """
        Write what was held back, framed by its length if it is the whole
        body, and relay whatever still comes as it comes.
        """
        held, self._held = self._held, None
        if held is None or not self.exchange.open:
            return
        request = self.exchange.request
        if self.done.called and request.method != b"HEAD" and request.code not in NO_BODY_CODES:
            request.setHeader(b"content-length", b"%d" % self._held_bytes)
        if held:
            request.write(b"".join(held))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._forget_gone()
        if self.exchange.open:
            self.exchange.request.unregisterProducer()
        if self.exchange.gone:
            outcome = Outcome.ABANDONED
        elif reason.check(ResponseDone):
            outcome = Outcome.COMPLETE
        elif reason.check(PotentialDataLoss):
            outcome = Outcome.UNCERTAIN
        else:
            outcome = Outcome.BROKEN
        self.done.callback(outcome)
