"""
The body relay's idle timeout counts only the upstream's own silence: while
the client's flow control holds the upstream paused, nothing can arrive, and
a client that reads slowly must not lose its stream for it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface import implementer

from stasis.cache.ports import BodyEnd
from stasis.cache.relay import BodyRelay, Outcome
from tests.test_engine import FakeClient

TIMEOUT = 3.0


@implementer(IPushProducer)
class Upstream:
    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class PausingClient(FakeClient):
    def attach(self, producer: Any) -> None:
        self.producer = producer


def started() -> tuple[BodyRelay, PausingClient, Upstream, Clock]:
    clock, client, upstream = Clock(), PausingClient(), Upstream()
    relay = BodyRelay(client, None, clock, TIMEOUT)
    relay.body_started(upstream)
    relay.body_data(b"data: 1\n\n")
    return relay, client, upstream, clock


def test_a_client_that_pauses_longer_than_the_timeout_keeps_its_stream() -> None:
    relay, client, upstream, clock = started()
    client.producer.pauseProducing()
    assert upstream.paused
    clock.advance(5 * TIMEOUT)  # the client reads nothing for a while
    assert not upstream.stopped
    client.producer.resumeProducing()
    assert not upstream.paused
    clock.advance(TIMEOUT - 0.1)
    relay.body_data(b"data: 2\n\n")
    relay.body_ended(BodyEnd.COMPLETE)
    assert not upstream.stopped
    assert client.data == b"data: 1\n\ndata: 2\n\n"
    assert relay.done.result is Outcome.COMPLETE


def test_an_upstream_silent_for_the_timeout_while_the_client_reads_is_cut_off() -> None:
    _, client, upstream, clock = started()
    client.producer.pauseProducing()
    client.producer.resumeProducing()
    clock.advance(TIMEOUT + 0.1)
    assert upstream.stopped
