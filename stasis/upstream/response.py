"""
treq's response as the cache engine sees it: a status, header pairs, and a
body delivered to a :class:`~stasis.cache.ports.BodyReceiver` with flow control.

This is where twisted.web's ways of saying how a body ended (``ResponseDone``,
``PotentialDataLoss``, anything else) become the engine's :class:`BodyEnd`.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from stasis.cache.ports import BodyEnd, BodyReceiver

__all__ = ["TreqResponse"]


class _Delivery(Protocol):
    def __init__(self, receiver: BodyReceiver) -> None:
        self.receiver = receiver

    def connectionMade(self) -> None:
        self.receiver.body_started(IPushProducer(self.transport))

    def dataReceived(self, data: bytes) -> None:
        self.receiver.body_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            end = BodyEnd.COMPLETE
        elif reason.check(PotentialDataLoss):
            end = BodyEnd.UNCERTAIN
        else:
            end = BodyEnd.BROKEN
        self.receiver.body_ended(end)


@define
class TreqResponse:
    """An :class:`IResponse` whose body has not been read yet."""

    response: IResponse
    headers: list[tuple[bytes, bytes]] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.headers = [
            (name, value)
            for name, values in self.response.headers.getAllRawHeaders()
            for value in values
        ]

    @property
    def code(self) -> int:
        code: int = self.response.code
        return code

    @property
    def phrase(self) -> bytes:
        phrase: bytes = self.response.phrase
        return phrase

    def deliver(self, receiver: BodyReceiver) -> None:
        self.response.deliverBody(_Delivery(receiver))
