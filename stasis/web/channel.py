"""
The HTTP/1.x connection stasis serves: twisted.web's ``HTTPChannel`` with
deadlines for a request's head and body (see :mod:`stasis.web.deadlines`).

The channel follows a request from the methods ``HTTPChannel`` calls on
itself: bytes arrive while it is idle (a request begins),
``allContentReceived`` (the request is complete and served),
``requestDone`` (idle again); in between, the parser's line mode tells the
head from the body. A deadline is set once a read ends inside a head or a
body, so a request that arrives in one read, as most do, sets none: each
request costs a few attribute checks, no timer.

One approximation: when an answer is written at once, within the read that
completed its request, and that read also held the first bytes of a
pipelined request, the next request's head is timed from the next read.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from stasis.errors import BadRequest, RequestTimeout
from stasis.log import logger
from stasis.web.deadlines import Deadline, Deadlines

__all__ = ["StasisChannel", "peer_text"]

log = logger("stasis.http")

# The channel's states: between requests, receiving one, serving it.
_IDLE, _RECEIVING, _SERVING = "idle", "receiving", "serving"
# The parts of a request a deadline is for.
_HEAD, _BODY = "head", "body"


def peer_text(address: Any) -> str:
    """A client's address for the log: ``host:port``, or what Twisted says of it."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StasisChannel(HTTPChannel):
    """An ``HTTPChannel`` that closes a client too slow to send its request."""

    _state = _IDLE
    _deadline: Deadline | None = None
    #: Set once a deadline passed: what the client sends after is dropped.
    _timed_out = False
    #: Aborts the connection if the 408 cannot be written (see HTTPChannel.timeoutConnection).
    _aborting: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._timed_out:
            return
        # A lone CRLF after a request is one twisted.web tolerates, not a new request.
        if self._state is _IDLE and data.lstrip(b"\r\n"):
            self._state = _RECEIVING
        HTTPChannel.dataReceived(self, data)
        if self._state is _RECEIVING:
            self._keep_deadline()

    def allContentReceived(self) -> None:
        if self._deadline is not None:
            self._cancel_deadline()
        self._state = _SERVING
        HTTPChannel.allContentReceived(self)

    def requestDone(self, request: Any) -> None:
        # Before: twisted.web goes on to read the pipelined request, if any, at once.
        self._state = _IDLE
        HTTPChannel.requestDone(self, request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        Refuse a request twisted.web cannot parse (a malformed request line,
        header or chunk; a target that is not ASCII) with stasis's JSON error,
        not twisted.web's bare ``400`` that says nothing, and close.

        Not after a ``413``: that request was answered already.
        """
        request = self.requests[-1] if self.requests else None
        if request is None or not request.refused:
            from stasis.web.site import error_answer  # see _expired

            error = BadRequest(
                "the request is not valid HTTP/1.1: its request line, a header or its chunked "
                "body is malformed (a request target must be ASCII: percent-encode it)"
            )
            self.transport.write(  # type: ignore[union-attr]
                error_answer(error).to_bytes((b"connection", b"close"))
            )
        self.loseConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._aborting is not None and self._aborting.active():
            self._aborting.cancel()
        self._aborting = None
        HTTPChannel.connectionLost(self, reason)

    def _keep_deadline(self) -> None:
        """The deadline of the part of the request that is arriving, set if it is not yet."""
        # Out of line mode while receiving: the headers are in, the body is arriving.
        part = _HEAD if self.line_mode else _BODY
        deadline = self._deadline
        if deadline is not None:
            if deadline.part is part:
                return
            deadline.cancel()  # the head arrived in time
        self._start_deadline(part)

    def _start_deadline(self, part: str) -> None:
        site = self.site  # type: ignore[attr-defined]
        deadlines: Deadlines = site.deadlines
        if part is _HEAD:

            def allowance() -> float:
                return deadlines.head

        else:
            request = self.requests[-1]

            def allowance() -> float:
                return deadlines.body_allowance(request.body_received)

        self._deadline = Deadline(site.reactor, part, allowance, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, deadline: Deadline) -> None:
        """Answer 408, unless the request was answered already (a 413), and close."""
        self._deadline = None
        self._timed_out = True
        transport = self.transport
        if transport is None:  # pragma: no cover - connectionLost cancels the deadline
            return
        request = self.requests[-1] if self.requests else None
        answered = request is not None and request.refused
        option = "--header-timeout" if deadline.part is _HEAD else "--body-timeout"
        allowed = deadline.allowed
        log.info(
            "closed the connection of {peer}: its request {part} did not arrive within "
            "{seconds:.0f}s ({option}){answer}",
            peer=peer_text(transport.getPeer()),
            part=deadline.part,
            seconds=allowed,
            option=option,
            answer="" if answered else "; answered 408",
        )
        if not answered:
            # Imported here: stasis.web.site builds its channels from this module.
            from stasis.web.site import error_answer

            error = RequestTimeout(
                f"the request {deadline.part} did not arrive within {allowed:.0f} seconds "
                f"(stasis {option})",
                timeout=round(allowed, 3),
            )
            transport.write(error_answer(error).to_bytes((b"connection", b"close")))
        if self.abortTimeout is not None:
            reactor = self.site.reactor  # type: ignore[attr-defined]
            self._aborting = reactor.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()  # type: ignore[no-untyped-call]
