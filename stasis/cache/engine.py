"""
The cache engine: what stasis does with one request, apart from any web server.

For each request: read the directives, pick the provider, derive the key,
look it up (in memory, else in the store), and either hand back the stored
answer or fetch it upstream as the single flight for its key, relaying the
body while recording it, and storing it before the client sees the end.

The web adapter (:mod:`stasis.web.proxy`) turns a twisted.web request into a
:class:`CacheRequest` and writes back the :mod:`answer <stasis.cache.answers>`;
the management commands, the admin API and the pytest plugin use the same
engine and store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from attrs import define, evolve, field, frozen
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from stasis.cache.answers import About, Answer, Failed, Live, Stored
from stasis.cache.claims import Claims
from stasis.cache.counters import Counters, HitLog
from stasis.cache.flights import NOTHING, Flight, Flights, Landed
from stasis.cache.housekeeping import Housekeeping
from stasis.cache.memory import HotEntries, KeyFilter, RequestKeys
from stasis.cache.nearest import Asked, Nearest, explain, nearest_recorded
from stasis.cache.ports import Client, Signer, Upstream, UpstreamResponse
from stasis.cache.relay import BodyRelay, Outcome
from stasis.cache.samples import Rotation, sample_key
from stasis.cache_status import HIT, PASSED, CacheOutcome, Status
from stasis.errors import (
    AwsCredentialsMissing,
    BadRequest,
    ReplayMiss,
    SignatureUnverifiable,
    StasisError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from stasis.headers import (
    Pairs,
    content_coding,
    for_client,
    for_storage,
    for_upstream,
    header_map,
    joined,
)
from stasis.ignore import IgnorePath, combined
from stasis.keys import (
    CredentialScope,
    KeyPolicy,
    KeyRequest,
    ParsedBody,
    ScopedKeys,
    parse_body,
    scoped_keys,
    stored_request,
)
from stasis.log import RateLimitedWarning, debugging, logger, url_for_log
from stasis.model import Change, Entry
from stasis.modes import BadDirective, Directives, Mode, parse_directives, split_directive_prefix
from stasis.providers import Provider, RequestView, identify
from stasis.routing import Routes, check_target
from stasis.sigv4 import SigV4Authorization, sigv4_of
from stasis.store import Store
from stasis.streams.recorder import Recorder

__all__ = [
    "COMMIT_PATIENCE",
    "DEFAULT_MAX_ENTRY_BYTES",
    "KEY_INLINE_BYTES",
    "CacheEngine",
    "CacheRequest",
]

_T = TypeVar("_T")

log = logger("stasis.cache")

#: A recorded body larger than this is relayed but not stored.
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024 * 1024

#: A storable answer up to this size that is not a stream is written whole,
#: after its commit, in one write (see BodyRelay); a larger one is relayed.
HELD_BODY_BYTES = 1024 * 1024

#: How long a stored answer's last byte waits for its commit, in seconds.
COMMIT_PATIENCE = 1.0

#: Requests with larger bodies are never answered by the byte-identical fast path.
REMEMBERED_BODY_BYTES = 1024 * 1024

#: Bodies up to this size are keyed on the reactor thread; larger ones in a
#: thread. Canonical JSON costs ~20 µs a kilobyte of text and ~100-250 µs a
#: kilobyte of numbers (embeddings input): at this size a body holds the
#: reactor (and every hit behind it) at most a millisecond or two.
KEY_INLINE_BYTES = 8 * 1024


@frozen
class CacheRequest:
    """A request as the engine takes it: as it came off the wire, body read."""

    method: bytes
    #: The request target as sent (path and query, still percent-encoded).
    target: bytes
    #: Raw header fields in the order sent.
    headers: Pairs
    body: bytes
    #: Its :class:`RequestKeys` fingerprint, when it was small enough to take one.
    fingerprint: bytes | None = None


@define
class _Call:
    """The facts of one request, gathered once, and what the engine learnt on the way."""

    method: str
    #: The target as forwarded: without a directive prefix.
    target: str
    #: The target as the client sent it (and, for SigV4, signed it).
    sent_target: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: Pairs
    body: bytes
    #: What routing looks at; the upstream URL is worked out only when forwarding,
    #: so replay mode serves hits even for a provider with no upstream configured.
    view: RequestView
    provider: Provider
    directives: Directives
    #: The client's SigV4 signature, when it sent one (Bedrock).
    signed: SigV4Authorization | None
    fingerprint: bytes | None
    keys: ScopedKeys | None = None
    #: The keys before a sample was chosen (the key's first answer's).
    base_keys: ScopedKeys | None = None
    parsed: ParsedBody | None = None
    #: Why the caller's SigV4 identity could not be verified: it reads only the
    #: shared scope, and is never forwarded (stasis would sign as itself).
    unverified: StasisError | None = None
    #: Which of its key's answers the call gets (``X-Stasis-Samples``).
    sample: int = 0
    #: An expired entry that may answer if the upstream fails (``--stale-if-error``).
    stale: Entry | None = None
    #: What to say the cache did if the request fails from here on.
    outcome: CacheOutcome = PASSED

    @property
    def key(self) -> str | None:
        """The key an answer is stored under; None until a cacheable request is keyed."""
        return None if self.keys is None else self.keys.own

    def about(self) -> About:
        """What the request is about, for the list of recent requests."""
        parsed = self.parsed
        model = self.provider.model(self.path, None if parsed is None else parsed.head)
        return About(self.provider.name, model, self.directives.namespace)


class _UpstreamFailed(Exception):
    """The upstream answered with an error that a stale answer may stand in for."""

    def __init__(self, status: int, error: StasisError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


class _Discard:
    """A body receiver for an upstream body nobody will read: it stops the upstream."""

    def body_started(self, producer: Any) -> None:
        producer.stopProducing()

    def body_data(self, data: bytes) -> None:
        pass

    def body_ended(self, end: Any) -> None:
        pass


_DISCARD = _Discard()


def _sampled(keys: ScopedKeys, sample: int) -> ScopedKeys:
    if sample == 0:
        return keys
    return ScopedKeys(
        sample_key(keys.own, sample), sample_key(keys.shared, sample), keys.fingerprint
    )


def _usable(entry: Entry, directives: Directives, now: float) -> bool:
    """
    Whether ``entry`` may answer a request with ``directives`` at ``now``:
    fresh (or stale within ``max-stale``), no older than ``max-age`` (and
    ``max-age=0`` takes nothing from the cache), fresh for ``min-fresh`` more
    seconds (RFC 9111 §5.2.1).
    """
    max_age = directives.max_age
    if max_age is not None and (max_age == 0 or now - entry.created_at > max_age):
        return False
    if entry.expires_at is None:
        return True
    left = entry.expires_at - now
    if directives.min_fresh is not None and left < directives.min_fresh:
        return False
    if left > 0:
        return True
    return directives.max_stale is not None and -left <= directives.max_stale


def _json_or_none(body: bytes) -> Any:
    """Parsed JSON for reading token usage; None for anything else."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _in_reactor_threads(clock: Any) -> Callable[[Callable[[], _T]], Deferred[_T]]:
    from twisted.internet.threads import deferToThreadPool

    def run(work: Callable[[], _T]) -> Deferred[_T]:
        d: Deferred[_T] = deferToThreadPool(clock, clock.getThreadPool(), work)
        return d

    return run


@define(eq=False)
class CacheEngine:
    """
    One daemon's cache: its store, its in-memory layers, its flights and counters.

    Call :meth:`start` once the store is open, and :meth:`close` before the
    store is closed.
    """

    store: Store
    upstream: Upstream
    routes: Routes
    #: The reactor (its clock; and its thread pool, unless ``in_thread`` is given).
    clock: IReactorTime
    signer: Signer
    default_mode: Mode = Mode.CACHE
    credential_scope: CredentialScope = CredentialScope.CALLER
    #: Fields left out of every cacheable request's key (``--ignore``), before
    #: the request's own (``X-Stasis-Ignore``).
    ignore: tuple[IgnorePath, ...] = ()
    #: Seconds new entries stay valid unless the request says (``--ttl``); None: for ever.
    default_ttl: float | None = None
    #: Seconds after expiry an entry may answer when the upstream fails.
    stale_if_error: float | None = None
    #: Answers a key keeps unless the request says (``--samples``).
    samples: int = 1
    #: Headers that carry a credential beyond :data:`~stasis.keys.CREDENTIAL_HEADERS`
    #: (``--credential-header``), lower-case.
    credential_headers: tuple[str, ...] = ()
    #: Bytes of hot entries kept in memory; 0 keeps none.
    memory_budget: int = 64 * 1024 * 1024
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    #: Runs blocking work off the reactor thread (large bodies' keys).
    in_thread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None
    counters: Counters = field(factory=Counters)
    #: Prunes and evicts in the background while the engine runs (counting in ``counters``).
    housekeeping: Housekeeping | None = None
    hot: HotEntries = field(init=False)
    key_filter: KeyFilter = field(init=False)
    #: Made at start: it is keyed with the store's secret.
    request_keys: RequestKeys | None = field(default=None, init=False)
    flights: Flights = field(factory=Flights, init=False)
    #: Single flight across the processes sharing the store.
    claims: Claims = field(init=False)
    rotation: Rotation = field(factory=Rotation, init=False)
    hits: HitLog = field(init=False)
    _read_warning: RateLimitedWarning = field(init=False)
    _commit_warning: RateLimitedWarning = field(init=False)
    _unsubscribe: Callable[[], None] | None = field(default=None, init=False)
    #: Each provider's key policy with ``credential_headers`` added, by provider name.
    _policies: dict[str, KeyPolicy] = field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.hot = HotEntries(self.memory_budget)
        self.key_filter = KeyFilter(self.store)
        self.hits = HitLog(self.store, self.clock, self.counters)
        self.claims = Claims(self.store, self.clock)
        self._read_warning = RateLimitedWarning(log, self.clock)
        self._commit_warning = RateLimitedWarning(log, self.clock)
        if self.in_thread is None:
            self.in_thread = _in_reactor_threads(self.clock)

    def start(self) -> None:
        """Begin serving from an open store: follow its changes."""
        self.request_keys = RequestKeys(self.store.secret)
        self._unsubscribe = self.store.changes.subscribe(self._changed)
        if self.housekeeping is not None:
            self.housekeeping.start()

    async def close(self) -> None:
        """Write the hits counted so far; stop following the store."""
        if self.housekeeping is not None:
            await self.housekeeping.stop()
        self.claims.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.hits.close()

    def _changed(self, change: Change) -> None:
        self.hot.on_change(change)
        self.key_filter.on_change(change)
        self.claims.on_change(change)
        if self.request_keys is not None:
            self.request_keys.on_change(change)

    # The byte-identical fast path

    def recall(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, Sequence[bytes]]],
        body: bytes,
    ) -> tuple[bytes | None, Entry | None]:
        """
        The request's fingerprint (None when it is not worth remembering) and,
        for a byte-identical repeat of a request already resolved to a key,
        its fresh entry in memory: no header parsing, no key derivation, no
        Deferreds. No entry sends the request the full way (with its
        fingerprint, to remember). The caller counts the hit
        (:meth:`count_hit`) if it serves the entry.
        """
        keys = self.request_keys
        if keys is None or len(body) > REMEMBERED_BODY_BYTES:
            return None, None
        fingerprint = keys.fingerprint(method, target, headers, body)
        key = keys.key_of(fingerprint)
        if key is None:
            return fingerprint, None
        entry = self.hot.get(key)
        if entry is None or not entry.is_fresh(self.clock.seconds()):
            return fingerprint, None
        if debugging():
            # The full path, which says at debug level what it did (_log_call).
            return fingerprint, None
        return fingerprint, entry

    def count_hit(self, entry: Entry) -> int:
        """Count a hit; the entry's age in seconds, for the Age header."""
        now = self.clock.seconds()
        self.counters.hits += 1
        self.counters.tokens_saved += entry.usage.total
        self.hits.count(entry.key, now)
        return max(0, int(now - entry.created_at))

    # The full path

    def serve(self, request: CacheRequest) -> Deferred[Answer]:
        """
        The answer to ``request``; fails with :class:`Failed`. Cancel it when
        the client goes away before the answer: the upstream call stops too.
        """
        return ensureDeferred(self._serve(request))

    def _gather(self, request: CacheRequest) -> _Call:
        headers = header_map(request.headers)
        try:
            target = request.target.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("the request target must be ASCII (percent-encode it)") from None
        method = request.method.decode("ascii", "replace").upper()
        check_target(method, target)
        sent_target = target
        try:
            target, prefixed = split_directive_prefix(target)
            if prefixed:
                headers = {**prefixed, **headers}  # a header sent says more than the base URL
            directives = parse_directives(headers, self.default_mode)
        except BadDirective as e:
            details = {"header": e.header} if e.header else {}
            raise BadRequest(e.message, **details) from None
        if target != sent_target:
            check_target(method, target)  # what is left once the directives are taken off
        path, _, query = target.partition("?")
        view = RequestView(method=method, path=path, query=query, headers=headers)
        return _Call(
            method=method,
            target=target,
            sent_target=sent_target,
            path=path,
            query=query,
            headers=headers,
            raw_headers=request.headers,
            body=request.body,
            view=view,
            provider=identify(view),
            directives=directives,
            signed=sigv4_of(headers),
            fingerprint=request.fingerprint,
        )

    async def _serve(self, request: CacheRequest) -> Answer:
        call: _Call | None = None
        try:
            call = self._gather(request)
            return await self._answer(call)
        except StasisError as e:
            if call is None:
                raise Failed(e, PASSED, None) from e
            raise Failed(e, call.outcome, call.key, call.about()) from e

    async def _answer(self, call: _Call) -> Answer:
        if call.signed is not None:
            # Before anything is read or forwarded: only the holder of the secret
            # key may see what was cached under its access key.
            try:
                await self.signer.verify(
                    call.signed,
                    call.method,
                    call.headers.get("host", ""),
                    call.sent_target,
                    call.headers,
                    call.body,
                )
            except (SignatureUnverifiable, AwsCredentialsMissing) as e:
                call.unverified = e
        mode = call.directives.mode
        if mode is Mode.BYPASS or not call.provider.is_cacheable(call.method, call.path):
            self.counters.bypasses += 1
            if debugging():
                self._log_call(call)
            return await self._forward(call, record=False, flight=None)

        keys = call.base_keys = await self._derive_keys(call)
        samples = call.directives.samples or self.samples
        if samples > 1:
            call.sample = self.rotation.next(keys.own) % samples
        keys = call.keys = _sampled(keys, call.sample)
        key = keys.own
        if debugging():
            self._log_call(call)
        call.outcome = CacheOutcome(Status.MISS, forward=b"uri-miss")

        if mode is Mode.FRESH:
            call.outcome = CacheOutcome(Status.MISS, forward=b"request")
            self.counters.misses += 1
            return await self._fetch(call)

        if mode is Mode.CACHE:
            return await self._cached(call, keys)

        # Replay: the cache, or an error that says what is nearest.
        entry = await self._find(call, keys, look_always=True)
        if entry is None and call.sample:
            # Fewer samples recorded than asked for: replay the last one there is.
            entry = await self._earlier_sample(call)
        if entry is not None:
            return self._hit(entry, call.directives.realtime)
        self.counters.misses += 1
        self.counters.replay_misses += 1
        call.outcome = CacheOutcome(Status.MISS, detail=b"replay-miss")
        message, details = explain(key, await self._nearest(call), self.clock.seconds())
        raise ReplayMiss(message, **details)

    def _log_call(self, call: _Call) -> None:
        """
        ``-l debug``: where a request goes and what it is, before it is
        answered: the upstream URL exactly as it would be fetched (a doubled
        ``/v1/v1`` shows here), without its query or userinfo; the model, the
        namespace, the key.
        """
        try:
            upstream = url_for_log(self.routes.url_for(call.provider, call.view))
        except Exception:
            upstream = "-"  # no upstream for this provider: replay mode may still answer
        document = call.parsed.document if call.parsed is not None else _json_or_none(call.body)
        log.debug(
            "{method} {path} upstream={upstream} model={model} namespace={namespace} key={key}",
            method=call.method,
            path=call.path,
            upstream=upstream,
            model=call.provider.model(call.path, document) or "-",
            namespace=call.directives.namespace or "-",
            key=call.key or "-",
        )

    async def _cached(self, call: _Call, keys: ScopedKeys, flight: Flight | None = None) -> Answer:
        """
        The cache's answer to ``call``, else one fetch for all who ask meanwhile.

        The key's flight begins before the store is read, not after it found
        nothing: a request that arrives while the leader looks, or after its
        fetch landed but while this one's read was under way, follows it. Were
        the flight begun after the read, a read that started before another
        request's entry was committed could find nothing, see no flight (it had
        landed) and fetch the same answer a second time.

        ``flight`` is one handed on by a leader that got nothing its followers
        could be given: its new leader looks again, since the entry may be
        there by now.
        """
        key = keys.own
        if flight is None:
            waiting = self.flights.follow(key)
            if waiting is not None:
                log.debug("{key} waits for the identical request in flight", key=key)
                return await self._follow(call, keys, await waiting)
            flight = self.flights.lead(key)
            assert flight is not None  # none was under way, and nothing ran since
        try:
            entry = await self._find(call, keys, look_always=False)
        except BaseException:
            self._land(flight, NOTHING)  # the client left: a follower leads
            raise
        if entry is not None:
            self._land(flight, Landed(entry=entry, stored=True, found=True))
            return self._hit(entry, call.directives.realtime)
        if call.unverified is not None:
            # Not even as a follower: the flight's leader may be forwarded.
            self._land(flight, NOTHING)
            self.counters.misses += 1
            raise call.unverified
        if self.claims.active:
            return await self._claim_and_fetch(call, flight)
        self.counters.misses += 1
        return await self._fetch(call, flight)

    async def _derive_keys(self, call: _Call) -> ScopedKeys:
        # Without a verified identity, only the shared scope.
        scope = CredentialScope.SHARED if call.unverified else self.credential_scope

        request = self._key_request(call)

        def derive() -> tuple[ParsedBody, ScopedKeys]:
            parsed = parse_body(call.body, request.ignore)
            keys = scoped_keys(
                evolve(request, parsed=parsed),
                self.store.secret,
                self._policy(call.provider),
                scope,
            )
            return parsed, keys

        derived: tuple[ParsedBody, ScopedKeys]
        if len(call.body) > KEY_INLINE_BYTES:
            assert self.in_thread is not None
            derived = await self.in_thread(derive)
        else:
            derived = derive()
        call.parsed, keys = derived
        return keys

    async def _find(self, call: _Call, keys: ScopedKeys, look_always: bool) -> Entry | None:
        """
        The entry answering ``call``: under its own key, else under the shared
        one, fresh enough for what the request asks (:func:`_usable`). Unless
        ``look_always``, a key the key filter knows is not in the store is not
        looked up (replay mode, where a miss is an error, always looks).

        An expired entry found on the way that ``--stale-if-error`` could
        still serve is kept on ``call``, should the upstream fail.
        """
        now = self.clock.seconds()
        for key in keys.tried:
            if not look_always and self.key_filter.absent(key):
                continue
            entry = await self._lookup(key)
            if entry is None:
                continue
            if _usable(entry, call.directives, now):
                if key == keys.own:
                    self._remember(call, key)
                return entry
            if call.stale is None and self._may_serve_stale(entry, now):
                call.stale = entry
        self._remember(call, keys.own)
        return None

    async def _earlier_sample(self, call: _Call) -> Entry | None:
        assert call.keys is not None and call.base_keys is not None
        for sample in range(call.sample - 1, -1, -1):
            entry = await self._find(call, _sampled(call.base_keys, sample), look_always=True)
            if entry is not None:
                return entry
        return None

    def _may_serve_stale(self, entry: Entry, now: float) -> bool:
        return (
            self.stale_if_error is not None
            and entry.expires_at is not None
            and 0 <= now - entry.expires_at <= self.stale_if_error
        )

    def _remember(self, call: _Call, key: str) -> None:
        """
        Let a byte-identical repeat of ``call`` skip parsing and key derivation.

        Only for the key a repeat would look up first: an answer found in the
        shared scope is not remembered, since one stored later under the
        caller's own key must win.
        """
        directives = call.directives
        if (
            call.fingerprint is not None
            and self.request_keys is not None
            and directives.mode in (Mode.CACHE, Mode.REPLAY)
            and not directives.realtime
            and not call.signed
            # What the fast path does not look at: freshness asked for, a rotation.
            and directives.max_age is None
            and directives.min_fresh is None
            and directives.max_stale is None
            and (directives.samples or self.samples) == 1
        ):
            self.request_keys.remember(call.fingerprint, key)

    async def _lookup(self, key: str) -> Entry | None:
        entry = self.hot.get(key)
        if entry is None:
            try:
                entry = await self.store.get(key)
            except Exception as e:
                self.counters.store_errors += 1
                self._read_warning.warn(
                    "cannot read the cache database ({error}); treating lookups as misses",
                    error=e,
                )
                return None
            if entry is None:
                self.key_filter.found_nothing()
                return None
            self.hot.remember(entry)
        return entry

    async def _nearest(self, call: _Call) -> Nearest | None:
        """The recorded request nearest to ``call`` (a replay miss), if any; never fails."""
        assert call.keys is not None and self.in_thread is not None
        parsed = call.parsed
        asked = Asked(
            method=call.method,
            path=call.path,
            provider=call.provider.name,
            model=call.provider.model(call.path, None if parsed is None else parsed.head),
            namespace=call.directives.namespace,
            request=stored_request(self._key_request(call), self._policy(call.provider)),
            # A large body's is parsed (if it may be) off the reactor, if needed.
            document=None if parsed is None else parsed.document,
            keys=call.keys,
            policy=self._policy(call.provider),
        )
        try:
            return await nearest_recorded(self.store, asked, self.in_thread)
        except Exception as e:
            log.debug("cannot look for the nearest recorded request: {error}", error=e)
            return None

    def _policy(self, provider: Provider) -> KeyPolicy:
        """``provider``'s key policy, with the credential headers the daemon was told of."""
        policy = self._policies.get(provider.name)
        if policy is None:
            policy = provider.key_policy
            extra = [h for h in self.credential_headers if h not in policy.credential_headers]
            if extra:
                policy = evolve(policy, credential_headers=(*policy.credential_headers, *extra))
            self._policies[provider.name] = policy
        return policy

    def _key_request(self, call: _Call) -> KeyRequest:
        return KeyRequest(
            method=call.method,
            path=call.path,
            query=call.query,
            headers=call.headers,
            body=call.body,
            namespace=call.directives.namespace,
            parsed=call.parsed,
            ignore=combined(self.ignore, call.directives.ignore),
        )

    def _hit(self, entry: Entry, realtime: bool) -> Stored:
        return Stored(entry, HIT, self.count_hit(entry), realtime=realtime)

    async def _claim_and_fetch(self, call: _Call, flight: Flight) -> Answer:
        """
        Lead ``call``'s flight here, and fetch once this process holds the
        key's claim among the processes sharing the store; if another process
        fetched it meanwhile, answer (this flight's followers too) with its entry.
        """
        key = call.key
        assert key is not None
        try:
            found = await self.claims.take_or_wait(
                key, lambda entry: _usable(entry, call.directives, self.clock.seconds())
            )
        except BaseException:
            self._land(flight, NOTHING)  # the client left: a follower leads
            raise
        if found is None:
            self.counters.misses += 1
            return await self._fetch(call, flight)
        log.debug("{key} was fetched by another process meanwhile", key=key)
        self.counters.coalesced += 1
        self.hot.remember(found)
        self._land(flight, Landed(entry=found, stored=True))
        return self._collapsed_hit(call, found)

    def _land(self, flight: Flight, landed: Landed) -> None:
        """
        End ``flight``; give up its key's claim unless a follower goes on
        fetching it here. The entry, if any, is committed by now, so a
        process that takes the claim after it finds the entry.
        """
        self.flights.end(flight, landed)
        if flight.key in self.claims.held and flight.key not in self.flights:
            self.claims.release(flight.key)

    def _collapsed_hit(self, call: _Call, entry: Entry) -> Stored:
        """
        Answered by another request's fetch, once it was stored: no upstream
        call of its own, so a hit, but never a "hit" from the cache.
        """
        outcome = CacheOutcome(
            Status.HIT, forward=b"uri-miss", forward_status=entry.status, collapsed=True
        )
        return Stored(entry, outcome, self.count_hit(entry), realtime=call.directives.realtime)

    async def _follow(self, call: _Call, keys: ScopedKeys, landed: Landed) -> Answer:
        """Answer as the flight this request waited for landed."""
        if landed.lead is not None:
            return await self._cached(call, keys, landed.lead)
        if landed.entry is not None and landed.found:
            return self._hit(landed.entry, call.directives.realtime)
        # Answered by (or failed with) the upstream call this request joined.
        self.counters.coalesced += 1
        if landed.entry is not None and landed.stored:
            return self._collapsed_hit(call, landed.entry)
        if landed.error is not None and call.stale is not None:
            return self._serve_stale(call, landed.error.message, None)
        self.counters.misses += 1
        if landed.error is not None:
            call.outcome = CacheOutcome(Status.MISS, forward=b"uri-miss", collapsed=True)
            raise landed.error
        assert landed.entry is not None
        outcome = CacheOutcome(
            Status.MISS,
            forward=b"uri-miss",
            forward_status=landed.entry.status,
            collapsed=True,
        )
        return Stored(landed.entry, outcome, None, realtime=call.directives.realtime)

    async def _fetch(self, call: _Call, flight: Flight | None = None) -> Answer:
        """Fetch a miss as the single flight for its key."""
        assert call.key is not None
        if flight is None:
            flight = self.flights.lead(call.key)
        try:
            return await self._forward(call, record=self.store.writable, flight=flight)
        except _UpstreamFailed as e:
            if flight is not None:
                self._land(flight, Landed(error=e.error))
            return self._serve_stale(call, e.error.message, e.status)
        except StasisError as e:
            if flight is not None:
                self._land(flight, Landed(error=e))
            if call.stale is not None and isinstance(e, UpstreamUnreachable | UpstreamTimeout):
                return self._serve_stale(call, e.message, None)
            raise
        except BaseException:
            # Cancelled (the client left), or a bug: a follower fetches instead.
            if flight is not None:
                self._land(flight, NOTHING)
            raise

    async def _forward(self, call: _Call, record: bool, flight: Flight | None) -> Live:
        """Send the request upstream; its answer, to relay (and record, when ``record``)."""
        if call.unverified is not None:
            raise call.unverified
        cacheable = call.key is not None
        url = self.routes.url_for(call.provider, call.view)
        headers: Pairs = for_upstream(call.raw_headers)
        if call.signed is not None:
            headers = await self.signer.sign(call.signed, call.method, url, headers, call.body)
        asked_at = time.perf_counter()
        response = await self.upstream.request(call.method, url, headers, call.body)
        upstream_seconds = time.perf_counter() - asked_at
        if call.stale is not None and (response.code >= 500 or response.code == 429):
            # The stale answer instead: this one's body is not wanted.
            response.deliver(_DISCARD)
            raise _UpstreamFailed(
                response.code,
                UpstreamUnreachable(
                    f"the upstream answered {response.code}",
                    log_reason=f"upstream-answered-{response.code}",
                    # Never its query: it may carry the caller's key= to another caller.
                    upstream=url_for_log(url),
                ),
            )
        storable = (
            record
            and cacheable
            and 200 <= response.code < 300
            and not content_coding(response.headers)
        )
        if cacheable:
            # ``stored`` is said only once it is so (see _relay), never ahead of the commit.
            outcome = CacheOutcome(
                Status.MISS if record else Status.BYPASS,
                forward=b"request" if call.directives.mode is Mode.FRESH else b"uri-miss",
                forward_status=response.code,
                detail=None if record else b"store-unavailable",
            )
        else:
            outcome = CacheOutcome(Status.BYPASS, forward=b"bypass", forward_status=response.code)
        # A flight records even what it cannot store, for those waiting for it.
        recorder = (
            Recorder(
                call.provider,
                joined(response.headers, b"content-type"),
                self.clock,
                self.max_entry_bytes,
            )
            if storable or flight is not None
            else None
        )

        def relay(client: Client) -> Deferred[None]:
            return ensureDeferred(
                self._relay(call, response, recorder, storable, flight, client, outcome)
            )

        return Live(
            status=response.code,
            phrase=response.phrase,
            headers=for_client(response.headers),
            outcome=outcome,
            key=call.key,
            relay=relay,
            about=call.about(),
            upstream_seconds=upstream_seconds,
        )

    async def _relay(
        self,
        call: _Call,
        response: UpstreamResponse,
        recorder: Recorder | None,
        storable: bool,
        flight: Flight | None,
        client: Client,
        outcome: CacheOutcome,
    ) -> None:
        """
        Relay the body, and store the answer when it is whole.

        A storable answer that is not a stream is held back until its commit
        (up to :data:`HELD_BODY_BYTES`), so its head, written with its first
        byte, can say ``stored``, or that it was not: never ahead of the
        commit. A body that breaks off before anything was written is a 502.
        """
        landed = NOTHING
        try:
            hold = HELD_BODY_BYTES if storable and recorder and not recorder.is_stream else 0
            relay = BodyRelay(client, recorder, self.clock, self.upstream.timeout, hold)
            response.deliver(relay)
            ended = await relay.done
            entry: Entry | None = None
            committed: Deferred[bool] | None = None
            stored: bool | None = None  # None: not known yet
            if ended is Outcome.COMPLETE and recorder is not None and recorder.complete:
                try:
                    entry = self._entry(call, response, recorder)
                    if storable:
                        committed = self._put(entry)
                        if await self._patiently(committed):
                            stored = await committed
                            detail = None if stored else b"not-stored"
                            client.revise(evolve(outcome, stored=stored, detail=detail))
                        else:
                            # Answered before its commit, which is still to
                            # come; and so are those waiting for this flight.
                            client.revise(evolve(outcome, detail=b"pending"))
                            if flight is not None:
                                self.flights.hand_on(flight, Landed(entry=entry))
                except Exception:
                    # A bug in stasis, not in the answer: the client still gets it.
                    log.failure("storing {path} failed", path=call.path)
            elif storable and ended in (Outcome.COMPLETE, Outcome.UNCERTAIN):
                client.revise(evolve(outcome, detail=b"incomplete"))
            if ended in (Outcome.COMPLETE, Outcome.UNCERTAIN):
                relay.release()
                client.finish()
            elif ended is Outcome.BROKEN:
                # A clean end would tell the client a truncated body is whole.
                client.revise(evolve(outcome, detail=b"upstream-body-broken"))
                client.fail(
                    UpstreamUnreachable(
                        f"the upstream's answer ({response.code}) broke off before its end: "
                        "its connection failed, or it sent nothing for "
                        f"{self.upstream.timeout:g}s",
                        log_reason="upstream-body-broken",
                    )
                )
            elif client.open:
                client.abort()
            if entry is not None:
                # Those waiting for this flight are answered once the entry is
                # committed (or refused): the next request after them finds it.
                # (Unless it was handed on before: see Flights.hand_on.)
                if stored is None:
                    stored = await committed if committed is not None else False
                landed = Landed(entry=entry, stored=stored)
        finally:
            if flight is not None:
                self._land(flight, landed)

    def _entry(self, call: _Call, response: UpstreamResponse, recorder: Recorder) -> Entry:
        assert call.key is not None
        body = recorder.body
        assert body is not None
        if recorder.is_stream:
            usage = recorder.usage
        else:
            usage = call.provider.usage(_json_or_none(body), header_map(response.headers))
        now = self.clock.seconds()
        ttl = call.directives.ttl if call.directives.ttl is not None else self.default_ttl
        head = call.parsed.head if call.parsed is not None else None
        assert call.keys is not None
        return Entry(
            key=call.key,
            status=response.code,
            headers=for_storage(response.headers),
            body=body,
            created_at=now,
            method=call.method,
            path=call.path,
            provider=call.provider.name,
            model=call.provider.model(call.path, head),
            namespace=call.directives.namespace,
            usage=usage,
            expires_at=None if ttl is None else now + ttl,
            timeline=recorder.timeline,
            shared_key=call.keys.shared,
            sample=call.sample,
            request=stored_request(self._key_request(call), self._policy(call.provider)),
        )

    def _serve_stale(self, call: _Call, why: str, status: int | None) -> Stored:
        """Answer with the expired entry kept on ``call``, because the upstream failed."""
        entry = call.stale
        assert entry is not None and entry.expires_at is not None
        self.counters.stale += 1
        log.warn(
            "served a stale answer for {path} (key {key}, expired {ago:.0f}s ago): "
            "the upstream failed: {why}",
            path=call.path,
            key=entry.key,
            ago=self.clock.seconds() - entry.expires_at,
            why=why,
        )
        outcome = CacheOutcome(
            Status.STALE, forward=b"stale", forward_status=status, detail=b"stale-if-error"
        )
        return Stored(entry, outcome, self.count_hit(entry), realtime=call.directives.realtime)

    def _put(self, entry: Entry) -> Deferred[bool]:
        """Store ``entry``: fires with True once committed, False if the store refused it."""
        self.hot.putting(entry)
        self.key_filter.add(entry.key)
        self.hits.forget(entry.key)

        def settled(stored: bool) -> bool:
            self.hot.committed(entry, stored)
            return stored

        put: Deferred[bool] = self.store.put(entry).addCallbacks(
            lambda _: True, lambda failure: self._not_stored(entry, failure)
        )
        return put.addCallback(settled)

    async def _patiently(self, committed: Deferred[bool]) -> bool:
        """
        Wait for a commit, but not for ever.

        The last byte of an answer waits for its commit, so an answer the
        client has whole survives a crash; but a database another process
        holds locked must not hold the answer back with it: after
        :data:`COMMIT_PATIENCE` the answer goes on, and the commit follows
        when the lock is released; at once when the store already knows its
        writes wait for a lock (``held_up``). True if it settled in time.
        """
        if self.store.held_up and not committed.called:
            return False
        if await self._settles_within(committed, COMMIT_PATIENCE):
            return True
        self._commit_warning.warn(
            "the cache database took over {seconds:g}s to commit an answer; "
            "answering without waiting for it",
            seconds=COMMIT_PATIENCE,
        )
        return False

    def _not_stored(self, entry: Entry, failure: Any) -> bool:
        # The store warns about a database it cannot write (once a minute).
        self.counters.store_errors += 1
        log.debug("not stored: {path}: {error}", path=entry.path, error=failure.value)
        return False

    def _settles_within(self, d: Deferred[bool], seconds: float) -> Deferred[bool]:
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
