"""
What the cache engine needs from the world around it, as interfaces.

The engine knows nothing of twisted.web or treq: the upstream client hands it
a response as a status, header pairs and a body it can pull with flow
control, and the web adapter hands it a client to write to. Tests give it
fakes of both; the daemon gives it :mod:`stasis.upstream` and
:mod:`stasis.web`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer

from stasis.cache_status import CacheOutcome
from stasis.errors import StasisError
from stasis.headers import Pairs
from stasis.sigv4 import SigV4Authorization

__all__ = [
    "BodyEnd",
    "BodyReceiver",
    "Client",
    "Signer",
    "Upstream",
    "UpstreamResponse",
]


class BodyEnd(enum.Enum):
    """How an upstream body ended, as far as its framing can tell."""

    #: The body was whole (its length, or its final chunk, arrived).
    COMPLETE = "complete"
    #: The upstream closed without framing: whether it was whole cannot be known.
    UNCERTAIN = "uncertain"
    #: The connection failed part-way, or was stopped (idle, client gone).
    BROKEN = "broken"


class BodyReceiver(Protocol):
    """Takes an upstream body as it arrives."""

    def body_started(self, producer: IPushProducer) -> None:
        """The body begins; ``producer`` pauses, resumes or stops the upstream."""

    def body_data(self, data: bytes) -> None: ...

    def body_ended(self, end: BodyEnd) -> None: ...


class UpstreamResponse(Protocol):
    """An upstream's status and headers, and its body not yet read."""

    @property
    def code(self) -> int: ...

    @property
    def phrase(self) -> bytes: ...

    @property
    def headers(self) -> Pairs: ...

    def deliver(self, receiver: BodyReceiver) -> None:
        """Start reading the body into ``receiver``; once only."""


class Upstream(Protocol):
    """Sends a request to an upstream API."""

    @property
    def timeout(self) -> float:
        """Seconds to wait for the response headers, and then for each piece of its body."""

    def request(
        self, method: str, url: str, headers: Pairs, body: bytes
    ) -> Deferred[UpstreamResponse]:
        """
        Fire with the response once its headers arrived; fail with
        :class:`~stasis.errors.UpstreamTimeout` or
        :class:`~stasis.errors.UpstreamUnreachable`. Cancelling aborts it.
        """


class Signer(Protocol):
    """Verifies a client's SigV4 signature, and signs the request anew for the upstream."""

    async def verify(
        self,
        signed: SigV4Authorization,
        method: str,
        host: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None: ...

    async def sign(
        self, signed: SigV4Authorization, method: str, url: str, headers: Pairs, body: bytes
    ) -> list[tuple[bytes, bytes]]: ...


class Client(Protocol):
    """
    The client a live answer is relayed to (the web adapter's side of it).

    Nothing may be written once :attr:`open` is False: the client left, or
    its answer was already ended.
    """

    @property
    def open(self) -> bool: ...

    @property
    def gone(self) -> bool:
        """Whether the client disconnected (as opposed to being answered)."""

    def on_gone(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` if the client disconnects; the result forgets it."""

    def write(self, data: bytes) -> None: ...

    def set_length(self, length: int) -> None:
        """Frame the body by its length (before its first byte is written)."""

    def attach(self, producer: IPushProducer) -> None:
        """Let the client's flow control pause and resume ``producer``."""

    def detach(self) -> None: ...

    def finish(self) -> None:
        """End the answer properly."""

    def abort(self) -> None:
        """End the answer so that the client knows it is incomplete."""

    def revise(self, outcome: CacheOutcome) -> None:
        """
        Say ``outcome`` (``Cache-Status``) instead of what the head was set up
        to say, if none of it is written yet; otherwise nothing.
        """

    def fail(self, error: StasisError) -> None:
        """
        Answer with ``error`` instead, if nothing of the answer is written yet;
        otherwise end it as :meth:`abort` does.
        """
