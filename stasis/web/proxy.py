"""
The proxy resource: every request that is not for stasis itself ends here.

For each request: read the directives, pick the provider, derive the key,
look it up (in adbapi's thread pool), and either replay the stored answer or
fetch it with treq, relaying the body to the client while recording it, and
store it before the client sees the end. Identical misses that arrive while
one is being fetched wait for it instead of each paying for a call.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.cache_status import HIT, CacheOutcome, Status, note_status, noted_status
from stasis.errors import BadRequest, InternalError, ReplayMiss, StasisError
from stasis.keys import KeyRequest, derive_key
from stasis.log import RateLimitedWarning, logger
from stasis.modes import BadDirective, Directives, Mode, parse_directives
from stasis.providers import Provider, RequestView, identify
from stasis.routing import Routes
from stasis.sigv4 import SigV4Authorization, sigv4_of
from stasis.stats import Counters
from stasis.store import Entry, Store
from stasis.streams.recorder import Recorder
from stasis.streams.replay import pace
from stasis.upstream import UpstreamClient
from stasis.upstream.aws import AwsSigner
from stasis.upstream.headers import content_coding, for_client, for_storage, for_upstream
from stasis.web.exchange import Exchange
from stasis.web.prepared import PreparedHeads, can_write_prepared, write_prepared
from stasis.web.recent import RecentRequests
from stasis.web.relay import Outcome, Relay

__all__ = ["ProxyResource"]

log = logger("stasis.proxy")

#: Requests with larger bodies are never answered by the byte-identical fast path.
_REMEMBERED_BODY_BYTES = 1024 * 1024

#: A recorded body larger than this is relayed but not stored.
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024 * 1024

#: A storable answer up to this size that is not a stream is written whole,
#: after its commit, in one write (see Relay); a larger one is relayed.
_HELD_BODY_BYTES = 1024 * 1024

#: How long a stored answer's last byte waits for its commit, in seconds.
COMMIT_PATIENCE = 1.0


def _header_map(headers: Headers) -> dict[str, str]:
    """Request headers by lower-case name, repeated values joined as RFC 9110 allows."""
    return {
        name.decode("latin-1").lower(): ", ".join(value.decode("latin-1") for value in values)
        for name, values in headers.getAllRawHeaders()
    }


def _set_headers(request: Request, pairs: Any) -> None:
    """Set response headers, replacing twisted.web's defaults (Server, Date) where given."""
    grouped: dict[bytes, list[bytes]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    for name, values in grouped.items():
        request.responseHeaders.setRawHeaders(name, values)


def _json_or_none(body: bytes) -> Any:
    """Parsed JSON for reading a model name or token usage; None for anything else."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _mark(request: Request, outcome: CacheOutcome) -> None:
    note_status(request, outcome.status)
    request.setHeader(b"x-stasis-status", outcome.status.value)
    request.setHeader(b"cache-status", outcome.cache_status())


@define
class _Call:
    """The facts of one proxied request, gathered once."""

    method: str
    #: The request target as sent (path and query, still percent-encoded).
    target: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    #: What routing looks at; the upstream URL is worked out only when forwarding,
    #: so replay mode serves hits even for a provider with no upstream configured.
    view: RequestView
    provider: Provider
    directives: Directives
    #: The client's SigV4 signature, when it sent one (Bedrock).
    signed: SigV4Authorization | None
    key: str | None = None


@define(slots=False, eq=False)
class ProxyResource(Resource):
    """
    The caching proxy, as a leaf resource that sees every path.

    ``upstream_url`` may carry a path prefix; the request's path and query are
    appended to it unchanged.
    """

    store: Store
    upstream: UpstreamClient
    routes: Routes
    clock: IReactorTime
    counters: Counters
    default_mode: Mode = Mode.CACHE
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    aws: AwsSigner = field(factory=AwsSigner)
    _inflight: dict[str, list[Deferred[None]]] = field(factory=dict, init=False)
    _read_warning: RateLimitedWarning = field(init=False)
    _commit_warning: RateLimitedWarning = field(init=False)
    #: Made on first use: the store's secret is known only once it is open.
    _seen: RecentRequests | None = field(default=None, init=False)
    _heads: PreparedHeads = field(factory=PreparedHeads, init=False)

    isLeaf = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)
        self._read_warning = RateLimitedWarning(log, self.clock)
        self._commit_warning = RateLimitedWarning(log, self.clock)

    def render(self, request: Request) -> object:
        body = request.content.read() if request.content is not None else b""
        if self._seen is None:
            self._seen = RecentRequests(self.store.secret)
        # Large bodies (images, documents) are not worth remembering by their bytes.
        fingerprint = (
            self._seen.fingerprint(request, body) if len(body) <= _REMEMBERED_BODY_BYTES else None
        )
        if fingerprint is not None and self._replay_known(request, fingerprint):
            return NOT_DONE_YET
        exchange = Exchange(request)
        d = ensureDeferred(self._serve(exchange, body, fingerprint))
        d.addErrback(self._failed, exchange)
        return NOT_DONE_YET

    def _replay_known(self, request: Request, fingerprint: bytes) -> bool:
        """
        Answer a byte-identical repeat of a request already resolved to a key,
        from memory, synchronously: no header parsing, no key derivation, no
        Deferreds. Anything less certain takes the full path.
        """
        assert self._seen is not None
        key = self._seen.key_of(fingerprint)
        if key is None:
            return False
        entry = self.store.peek(key)
        now = self.clock.seconds()
        if entry is None or not entry.is_fresh(now) or not can_write_prepared(request, entry):
            return False
        self._write_prepared_hit(request, entry, now)
        request.finish()
        return True

    def _failed(self, failure: Failure, exchange: Exchange) -> None:
        if failure.check(CancelledError) or not exchange.open:
            return
        request = exchange.request
        error: StasisError
        if isinstance(failure.value, StasisError):
            error = failure.value
        else:
            log.failure("proxying {path} failed", failure, path=request.path.decode("latin-1"))
            error = InternalError("stasis failed to serve this request; see its log")
        if request.startedWriting:
            exchange.abort()
            return
        if noted_status(request) is None:
            _mark(request, CacheOutcome(Status.BYPASS))
        exchange.fail(error)

    def _gather(self, request: Request, body: bytes) -> _Call:
        headers = _header_map(request.requestHeaders)
        try:
            directives = parse_directives(headers, self.default_mode)
        except BadDirective as e:
            raise BadRequest(e.message, header=e.header) from None
        try:
            target = request.uri.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("the request target must be ASCII (percent-encode it)") from None
        path, _, query = target.partition("?")
        method = request.method.decode("ascii", "replace").upper()
        view = RequestView(method=method, path=path, query=query, headers=headers)
        provider = identify(view)
        return _Call(
            method=method,
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=body,
            view=view,
            provider=provider,
            directives=directives,
            signed=sigv4_of(headers),
        )

    async def _serve(self, exchange: Exchange, body: bytes, fingerprint: bytes | None) -> None:
        request = exchange.request
        call = self._gather(request, body)
        if call.signed is not None:
            # Before anything is read or forwarded: only the holder of the secret
            # key may see what was cached under its access key.
            await self.aws.verify(
                call.signed,
                call.method,
                call.headers.get("host", ""),
                call.target,
                call.headers,
                call.body,
            )
        mode = call.directives.mode
        if mode is Mode.BYPASS or not call.provider.is_cacheable(call.method, call.path):
            self.counters.bypasses += 1
            await self._forward(exchange, call, record=False)
            return

        call.key = derive_key(
            KeyRequest(
                method=call.method,
                path=call.path,
                query=call.query,
                headers=call.headers,
                body=call.body,
                namespace=call.directives.namespace,
            ),
            self.store.secret,
            call.provider.key_policy,
        )
        if (
            fingerprint is not None
            and mode in (Mode.CACHE, Mode.REPLAY)
            and not call.directives.realtime
            and not call.signed
        ):
            # The same bytes again will mean the same key and the same decision.
            assert self._seen is not None
            self._seen.remember(fingerprint, call.key)
        request.setHeader(b"x-stasis-key", call.key.encode("ascii"))

        if mode is Mode.FRESH:
            self.counters.misses += 1
            await self._fetch(exchange, call)
            return

        # A first-time request in cache mode skips its lookup when the store
        # knows without I/O that it holds no such key; replay mode, where a
        # miss is an error, always looks.
        if mode is Mode.CACHE and self.store.known_absent(call.key):
            entry = None
        else:
            entry = await self._lookup(call.key)
        if entry is None and mode is Mode.CACHE and call.key in self._inflight:
            waiter: Deferred[None] = Deferred()
            log.debug("{key} waits for the identical request in flight", key=call.key)
            self._inflight[call.key].append(waiter)
            exchange.on_gone(waiter.cancel)
            await waiter
            entry = await self._lookup(call.key)
        if entry is not None:
            self._serve_hit(exchange, entry, realtime=call.directives.realtime)
            return
        self.counters.misses += 1
        if mode is Mode.REPLAY:
            _mark(request, CacheOutcome(Status.MISS, detail=b"replay-miss"))
            raise ReplayMiss(
                "replay mode: no cached answer for this request, and replay mode never "
                "calls the upstream; record it first with mode 'cache'",
                key=call.key,
            )
        await self._fetch(exchange, call)

    async def _lookup(self, key: str) -> Entry | None:
        try:
            entry = await self.store.get(key)
        except Exception as e:
            self._read_warning.warn(
                "cannot read the cache database ({error}); treating lookups as misses", error=e
            )
            return None
        if entry is None or not entry.is_fresh(self.clock.seconds()):
            return None
        return entry

    def _count_hit(self, entry: Entry, now: float) -> int:
        """Count a hit; its entry's age in seconds, for the Age header."""
        self.counters.hits += 1
        self.store.record_hit(entry.key, now)
        return max(0, int(now - entry.created_at))

    def _write_prepared_hit(self, request: Request, entry: Entry, now: float) -> None:
        write_prepared(request, entry, self._heads.of(entry), self._count_hit(entry, now))

    def _serve_hit(self, exchange: Exchange, entry: Entry, realtime: bool) -> None:
        request = exchange.request
        now = self.clock.seconds()
        paced = realtime and entry.timeline is not None
        if not paced and can_write_prepared(request, entry):
            self._write_prepared_hit(request, entry, now)
            exchange.finish()
            return
        request.setResponseCode(entry.status)
        _set_headers(request, entry.headers)
        _mark(request, HIT)
        request.setHeader(b"age", b"%d" % self._count_hit(entry, now))
        if paced:
            assert entry.timeline is not None
            stop = pace(self.clock, entry.body, entry.timeline, request.write, exchange.finish)
            exchange.on_gone(stop)
            return
        request.setHeader(b"content-length", b"%d" % len(entry.body))
        request.write(entry.body)
        exchange.finish()

    async def _fetch(self, exchange: Exchange, call: _Call) -> None:
        """Fetch a miss as the single flight for its key, waking any waiters after."""
        assert call.key is not None
        leader = call.key not in self._inflight
        if leader:
            self._inflight[call.key] = []
        try:
            stored = await self._forward(exchange, call, record=self.store.writable)
            if stored is not None:
                # Those waiting for this flight look the key up: it must be there.
                await stored
        finally:
            if leader:
                for waiter in self._inflight.pop(call.key, []):
                    if not waiter.called:
                        waiter.callback(None)

    async def _forward(
        self, exchange: Exchange, call: _Call, record: bool
    ) -> Deferred[None] | None:
        """Relay the upstream's answer; the commit of its entry, when it is stored."""
        request = exchange.request
        cacheable = call.key is not None
        url = self.routes.upstream_for(call.provider, call.view) + call.target
        headers = for_upstream(request.requestHeaders)
        if call.signed is not None:
            headers = await self.aws.sign(call.signed, call.method, url, headers, call.body)
        if not exchange.open:
            return None
        pending = self.upstream.request(call.method, url, headers, call.body)
        forget = exchange.on_gone(pending.cancel)
        try:
            response: IResponse = await pending
        except StasisError:
            if cacheable:
                _mark(request, CacheOutcome(Status.MISS, forward=b"uri-miss"))
            raise
        finally:
            forget()
        storable = (
            record
            and cacheable
            and 200 <= response.code < 300
            and not content_coding(response.headers)
        )
        if cacheable:
            outcome = CacheOutcome(
                Status.MISS if record else Status.BYPASS,
                forward=b"request" if call.directives.mode is Mode.FRESH else b"uri-miss",
                forward_status=response.code,
                stored=storable,
                detail=None if record else b"store-unavailable",
            )
        else:
            outcome = CacheOutcome(Status.BYPASS, forward=b"bypass", forward_status=response.code)
        if exchange.open:
            request.setResponseCode(response.code, response.phrase)
            _set_headers(request, for_client(response.headers))
            _mark(request, outcome)
        recorder = (
            Recorder(
                call.provider,
                b"".join(response.headers.getRawHeaders(b"content-type", [])),
                self.clock,
                self.max_entry_bytes,
            )
            if storable
            else None
        )
        relay = Relay(
            exchange,
            recorder,
            self.clock,
            self.upstream.timeout,
            hold=_HELD_BODY_BYTES if recorder is not None and not recorder.is_stream else 0,
        )
        response.deliverBody(relay)
        ended = await relay.done
        stored: Deferred[None] | None = None
        if ended is Outcome.COMPLETE and recorder is not None and recorder.complete:
            # The last byte waits for the commit, so an answer the client has
            # whole survives a crash; but not for ever: a database another
            # process holds locked must not hold the answer back with it.
            stored = ensureDeferred(self._store(call, response, recorder))
            stored.addErrback(
                lambda failure: log.failure("storing {path} failed", failure, path=call.path)
            )
            if not await self._settles_within(stored, COMMIT_PATIENCE):
                self._commit_warning.warn(
                    "the cache database took over {seconds:g}s to commit an answer; "
                    "answering without waiting for it",
                    seconds=COMMIT_PATIENCE,
                )
        if ended in (Outcome.COMPLETE, Outcome.UNCERTAIN):
            relay.release()
            exchange.finish()
        elif exchange.open:
            # A clean end would tell the client a truncated body is whole.
            exchange.abort()
        return stored

    def _settles_within(self, d: Deferred[None], seconds: float) -> Deferred[bool]:
        """True once ``d`` has fired, or False after ``seconds``; ``d``'s result is left alone."""
        settled: Deferred[bool] = Deferred()
        timer = self.clock.callLater(seconds, settled.callback, False)

        def fired(result: object) -> object:
            if timer.active():
                timer.cancel()
                settled.callback(True)
            return result

        d.addBoth(fired)
        return settled

    async def _store(self, call: _Call, response: IResponse, recorder: Recorder) -> None:
        assert call.key is not None
        body = recorder.body
        assert body is not None
        if recorder.is_stream:
            usage = recorder.usage
        else:
            usage = call.provider.usage(_json_or_none(body), _header_map(response.headers))
        now = self.clock.seconds()
        ttl = call.directives.ttl
        entry = Entry(
            key=call.key,
            status=response.code,
            headers=for_storage(response.headers),
            body=body,
            created_at=now,
            method=call.method,
            path=call.path,
            provider=call.provider.name,
            model=call.provider.model(call.path, _json_or_none(call.body)),
            namespace=call.directives.namespace,
            usage=usage,
            expires_at=None if ttl is None else now + ttl,
            timeline=recorder.timeline,
        )
        try:
            await self.store.put(entry)
        except Exception as e:
            log.debug("not stored: {error}", error=e)
