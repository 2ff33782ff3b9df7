"""
An upstream body, relayed to the client as it arrives and recorded on the side.

A storable answer that is not a stream is held back (up to a limit) and
written whole once it is stored: one write, framed by its length, instead of
a chunked body whose end must wait for the commit anyway.

The upstream is attached to the client as a push producer: when the client's
socket buffer fills, the upstream is paused, so a slow reader holds a few
buffers in the proxy, not the whole answer. When the client leaves, the
upstream connection is stopped, so the provider stops generating (and
billing) tokens for nobody. An upstream that goes silent mid-body for longer
than the idle timeout is cut off the same way; but only silence the
upstream chose counts: while the client's flow control holds the upstream
paused, no body can arrive, and the idle timer waits with it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from stasis.cache.ports import BodyEnd, Client
from stasis.streams.recorder import Recorder

__all__ = ["BodyRelay", "Outcome"]


class Outcome(enum.Enum):
    """How a relayed body ended; only ``COMPLETE`` may be stored."""

    COMPLETE = "complete"
    #: The upstream closed without framing, so completeness cannot be known.
    UNCERTAIN = "uncertain"
    #: The upstream connection failed part-way, or went silent too long.
    BROKEN = "broken"
    #: The client left before the end.
    ABANDONED = "abandoned"


_OUTCOMES = {
    BodyEnd.COMPLETE: Outcome.COMPLETE,
    BodyEnd.UNCERTAIN: Outcome.UNCERTAIN,
    BodyEnd.BROKEN: Outcome.BROKEN,
}


@implementer(IPushProducer)
class _Paced:
    """
    The upstream's producer as the client sees it: the client's pauses and
    resumes reach the upstream, and the relay, which stops its idle timer
    while the client holds the body back.
    """

    def __init__(self, producer: IPushProducer, relay: BodyRelay) -> None:
        self._producer = producer
        self._relay = relay

    def pauseProducing(self) -> None:
        self._relay.client_paused()
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._relay.client_resumed()
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


class BodyRelay:
    """
    Receives an upstream body (:class:`~stasis.cache.ports.BodyReceiver`).

    Each chunk is written to ``client`` as it arrives and fed to ``recorder``
    (when recording); ``done`` fires with the :class:`Outcome`.
    """

    def __init__(
        self,
        client: Client,
        recorder: Recorder | None,
        clock: IReactorTime,
        idle_timeout: float,
        hold: int = 0,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.done: Deferred[Outcome] = Deferred()
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._forget_gone: Callable[[], None] = lambda: None
        self._producer: IPushProducer | None = None
        self._attached = False
        #: Up to ``hold`` bytes are held back and written whole by release().
        self._held: list[bytes] | None = [] if hold > 0 else None
        self._held_bytes = 0
        self._hold = hold

    def body_started(self, producer: IPushProducer) -> None:
        if not self.client.open:
            producer.stopProducing()
            return
        self._producer = producer
        self.client.attach(_Paced(producer, self))
        self._attached = True
        self._forget_gone = self.client.on_gone(producer.stopProducing)
        self._idle = self._clock.callLater(self._idle_timeout, producer.stopProducing)

    def client_paused(self) -> None:
        """The client cannot take more for now: the upstream's silence is not its own."""
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def client_resumed(self) -> None:
        """The client takes more again: the upstream has the whole timeout again."""
        if self._producer is not None and not self.done.called and self._idle is None:
            self._idle = self._clock.callLater(self._idle_timeout, self._producer.stopProducing)

    def body_data(self, data: bytes) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_timeout)
        if self.recorder is not None:
            self.recorder.feed(data)
        if not self.client.open:
            return
        if self._held is None:
            self.client.write(data)
        else:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > self._hold:
                self.release()

    def release(self) -> None:
        """
        Write what was held back, framed by its length if it is the whole
        body, and relay whatever still comes as it comes.
        """
        held, self._held = self._held, None
        if held is None or not self.client.open:
            return
        if self.done.called:
            self.client.set_length(self._held_bytes)
        if held:
            self.client.write(b"".join(held))

    def body_ended(self, end: BodyEnd) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._forget_gone()
        if self._attached and self.client.open:
            self.client.detach()
        outcome = Outcome.ABANDONED if self.client.gone else _OUTCOMES[end]
        self.done.callback(outcome)
