"""
The upstream body, relayed to the client as it arrives and recorded on the side.

The upstream connection is registered as the client request's push producer:
when the client's socket buffer fills, twisted.web pauses the upstream, so a
slow reader holds a few buffers in the proxy, not the whole answer. When the
client leaves, the upstream connection is closed, so the provider stops
generating (and billing) tokens for nobody.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from stasis.web.exchange import Exchange

__all__ = ["Outcome", "Relay"]


class Outcome(enum.Enum):
    """How a relayed body ended; only ``COMPLETE`` may be stored."""

    COMPLETE = "complete"
    #: The upstream closed without framing, so completeness cannot be known.
    UNCERTAIN = "uncertain"
    #: The upstream connection failed part-way.
    BROKEN = "broken"
    #: The client left before the end.
    ABANDONED = "abandoned"


class Relay(Protocol):
    """
    Receives an upstream response body (``IResponse.deliverBody``).

    ``done`` fires with the :class:`Outcome`; ``recorded`` then holds the whole
    body when it was recorded and stayed within ``record_limit`` bytes, else None.
    """

    def __init__(self, exchange: Exchange, record: bool, record_limit: int) -> None:
        self.exchange = exchange
        self.done: Deferred[Outcome] = Deferred()
        self._chunks: list[bytes] | None = [] if record else None
        self._size = 0
        self._record_limit = record_limit
        self._forget_gone: Callable[[], None] = lambda: None

    @property
    def recorded(self) -> bytes | None:
        return None if self._chunks is None else b"".join(self._chunks)

    def connectionMade(self) -> None:
        producer = IPushProducer(self.transport)
        if not self.exchange.open:
            producer.stopProducing()
            return
        self.exchange.request.registerProducer(producer, True)
        self._forget_gone = self.exchange.on_gone(producer.stopProducing)

    def dataReceived(self, data: bytes) -> None:
        if not self.exchange.open:
            return
        self.exchange.request.write(data)
        if self._chunks is not None:
            self._size += len(data)
            if self._size > self._record_limit:
                self._chunks = None
            else:
                self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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
        if outcome is not Outcome.COMPLETE:
            self._chunks = None
        self.done.callback(outcome)
