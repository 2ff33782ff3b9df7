"""
The proxy resource: twisted.web's side of the cache engine.

Every request that is not for stasis itself ends here. It is handed to the
:class:`~stasis.cache.CacheEngine` as a :class:`~stasis.cache.CacheRequest`,
and the engine's answer is written back: a stored one whole (from prepared
header bytes when it can be) or at its recorded pace, a live one as the
engine relays it. Everything the cache decides is the engine's; this module
only speaks HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.cache import CacheEngine, CacheRequest, Failed, Live, Stored
from stasis.cache.answers import About, Answer
from stasis.cache_status import HIT, PASSED, CacheOutcome, note_outcome, noted_status
from stasis.errors import InternalError
from stasis.log import logger
from stasis.model import Entry
from stasis.streams.replay import pace
from stasis.web.exchange import Exchange
from stasis.web.prepared import PreparedHeads, can_write_prepared, write_prepared
from stasis.web.traffic import note_about

__all__ = ["ProxyResource"]

log = logger("stasis.proxy")


def _set_headers(request: Request, pairs: Iterable[tuple[bytes, bytes]]) -> None:
    """Set response headers, replacing twisted.web's defaults (Server, Date) where given."""
    grouped: dict[bytes, list[bytes]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    for name, values in grouped.items():
        request.responseHeaders.setRawHeaders(name, values)


def _mark(
    request: Request,
    outcome: CacheOutcome,
    key: str | None,
    about: About | Entry | None,
    upstream_seconds: float | None = None,
) -> None:
    note_outcome(request, outcome)
    note_about(request, about, key, upstream_seconds)
    request.setHeader(b"x-stasis-status", outcome.status.value)
    request.setHeader(b"cache-status", outcome.cache_status())
    if key is not None:
        request.setHeader(b"x-stasis-key", key.encode("ascii"))


class ProxyResource(Resource):
    """The caching proxy, as a leaf resource that sees every path."""

    isLeaf = True

    def __init__(self, engine: CacheEngine, heads: PreparedHeads | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.engine = engine
        self.heads = heads if heads is not None else PreparedHeads()

    def render(self, request: Request) -> object:
        body = request.content.read() if request.content is not None else b""
        engine = self.engine
        fingerprint, entry = engine.recall(
            request.method, request.uri, request.requestHeaders.getAllRawHeaders(), body
        )
        if entry is not None and can_write_prepared(request, entry):
            # A byte-identical repeat, answered synchronously from memory.
            write_prepared(request, entry, self.heads.of(entry), engine.count_hit(entry))
            request.finish()
            return NOT_DONE_YET
        exchange = Exchange(request)
        answering = engine.serve(
            CacheRequest(
                method=request.method,
                target=request.uri,
                headers=[
                    (name, value)
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values
                ],
                body=body,
                fingerprint=fingerprint,
            )
        )
        forget = exchange.on_gone(answering.cancel)
        answering.addBoth(lambda result: (forget(), result)[1])
        answering.addCallbacks(
            self._send, self._failed, callbackArgs=(exchange,), errbackArgs=(exchange,)
        )
        answering.addErrback(self._broke, exchange)
        return NOT_DONE_YET

    def _send(self, answer: Answer, exchange: Exchange) -> None:
        if isinstance(answer, Live):
            try:
                if exchange.open:
                    request = exchange.request
                    request.setResponseCode(answer.status, answer.phrase)
                    _set_headers(request, answer.headers)
                    _mark(
                        request, answer.outcome, answer.key, answer.about, answer.upstream_seconds
                    )
            finally:
                # Always: the relay also lets the upstream go if the client left.
                relayed = answer.relay(exchange)
            relayed.addErrback(self._broke, exchange)
        else:
            self._replay(answer, exchange)

    def _replay(self, answer: Stored, exchange: Exchange) -> None:
        if not exchange.open:
            return
        request = exchange.request
        entry = answer.entry
        paced = answer.realtime and entry.timeline is not None
        # A prepared head says a plain HIT; a stale or collapsed answer says more.
        age = answer.age
        plain_hit = answer.outcome == HIT and age is not None and not paced
        if plain_hit and age is not None and can_write_prepared(request, entry):
            write_prepared(request, entry, self.heads.of(entry), age)
            exchange.finish()
            return
        request.setResponseCode(entry.status)
        _set_headers(request, entry.headers)
        _mark(request, answer.outcome, answer.key, entry)
        if answer.age is not None:
            request.setHeader(b"age", b"%d" % answer.age)
        if paced:
            assert entry.timeline is not None
            stop = pace(
                self.engine.clock, entry.body, entry.timeline, request.write, exchange.finish
            )
            exchange.on_gone(stop)
            return
        request.setHeader(b"content-length", b"%d" % len(entry.body))
        request.write(entry.body)
        exchange.finish()

    def _failed(self, failure: Failure, exchange: Exchange) -> None:
        if failure.check(CancelledError) or not exchange.open:
            return
        if not isinstance(failure.value, Failed):
            self._broke(failure, exchange)
            return
        failed: Failed = failure.value
        request = exchange.request
        if request.startedWriting:
            exchange.abort()
            return
        _mark(request, failed.outcome, failed.key, failed.about)
        exchange.fail(failed.error)

    def _broke(self, failure: Failure, exchange: Exchange) -> None:
        """A bug in stasis: logged with its traceback; the client gets a 500 if it still can."""
        if failure.check(CancelledError):
            return
        request = exchange.request
        log.failure("proxying {path} failed", failure, path=request.path.decode("latin-1"))
        if not exchange.open:
            return
        if request.startedWriting:
            exchange.abort()
            return
        if noted_status(request) is None:
            _mark(request, PASSED, None, None)
        exchange.fail(InternalError("stasis failed to serve this request; see its log"))
