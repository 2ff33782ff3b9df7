"""
The proxy resource in memory: no sockets, no threads, a fake clock.

Both sides use treq's testing seam: the client is a ``StubTreq`` over stasis's
resource tree, and the upstream is a ``StubTreq`` over a small fake resource,
so every step of a request can be driven and inspected synchronously.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq
from attrs import define, field
from treq.testing import StubTreq
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request

from stasis.cache import CacheEngine, Counters
from stasis.cache.counters import HIT_FLUSH_SECONDS
from stasis.cache.engine import COMMIT_PATIENCE
from stasis.keys import CredentialScope
from stasis.keys import scoped_keys as real_scoped_keys
from stasis.model import Change, ChangeKind
from stasis.modes import Mode
from stasis.routing import Routes
from stasis.upstream import UpstreamClient
from stasis.upstream.aws import AwsSigner
from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from tests.memory_store import MemoryStore

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


class FakeAPI(Resource):
    """Answers every request with a numbered JSON body and records what it saw."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, dict[bytes, list[bytes]]]] = []
        self.status = 200

    def render(self, request: Request) -> bytes:
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.method, request.uri, headers))
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"set-cookie", b"__cf_bm=abc; Path=/")
        request.setHeader(b"keep-alive", b"timeout=5")
        request.setHeader(b"x-request-id", b"req_%d" % len(self.seen))
        return json.dumps(
            {"n": len(self.seen), "usage": {"total_tokens": 10}, "object": "chat.completion"}
        ).encode()


def in_line(work: Any) -> Any:
    """Run "threaded" work at once: these tests have no threads."""
    return maybeDeferred(work)


@define
class Harness:
    clock: Clock = field(factory=Clock)
    api: FakeAPI = field(factory=FakeAPI)
    store: MemoryStore = field(init=False)
    upstream: StubTreq = field(init=False)
    client: StubTreq = field(init=False)
    engine: CacheEngine = field(init=False)
    mode: Mode = Mode.CACHE
    routes: Routes = field(factory=lambda: Routes(everything="http://upstream.test"))
    #: Bytes of hot entries; 0 sends every lookup to the store.
    memory: int = 64 * 1024 * 1024
    credential_scope: CredentialScope = CredentialScope.CALLER
    signer: Any = field(factory=AwsSigner)
    #: Another harness's store, to share a cache between two daemons' engines.
    shared_store: MemoryStore | None = None
    #: More CacheEngine arguments (policy: default_ttl, stale_if_error, samples).
    policy: dict[str, Any] = field(factory=dict)
    #: Set to make the upstream fail this way instead of answering.
    failure: Exception | None = None
    upstream_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        self.store = self.shared_store or MemoryStore(self.clock)
        self.upstream = StubTreq(self.api)
        client = UpstreamClient(self.upstream, self.clock, self.upstream_timeout)  # type: ignore[arg-type]

        class Failing:
            timeout = client.timeout

            @staticmethod
            def request(*args: Any) -> Any:
                if self.failure is not None:
                    from twisted.internet.defer import fail

                    return fail(self.failure)
                return client.request(*args)

        self.engine = CacheEngine(
            store=self.store,
            upstream=Failing(),  # type: ignore[arg-type]
            routes=self.routes,
            clock=self.clock,
            signer=self.signer,
            default_mode=self.mode,
            credential_scope=self.credential_scope,
            memory_budget=self.memory,
            in_thread=in_line,
            **self.policy,
        )
        self.store.open()
        self.engine.start()
        self.client = StubTreq(Root(ProxyResource(self.engine), self.store, self.counters))

    @property
    def counters(self) -> Counters:
        return self.engine.counters

    def _settle(self) -> None:
        for _ in range(10):
            self.upstream.flush()
            self.client.flush()

    def call(
        self,
        body: Any = CHAT,
        path: str = "/v1/chat/completions",
        method: str = "POST",
        **headers: str,
    ) -> tuple[IResponse, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        d = self.client.request(
            method, "http://stasis.test" + path, data=data, headers={**AUTH, **headers}
        )
        self._settle()
        response = _result(d)
        content = treq.content(response)
        self._settle()
        return response, _result(content)


def _result(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def header(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name.encode())
    return values[0].decode() if values else None


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_miss_then_hit_with_age_from_the_clock(harness: Harness) -> None:
    first, body1 = harness.call()
    harness.clock.advance(42)
    second, body2 = harness.call()
    assert (header(first, "x-stasis-status"), header(second, "x-stasis-status")) == ("MISS", "HIT")
    assert body1 == body2
    assert header(second, "age") == "42"
    assert header(second, "x-request-id") == "req_1"
    assert len(harness.api.seen) == 1
    assert (harness.counters.hits, harness.counters.misses) == (1, 1)
    (entry,) = harness.store.entries.values()
    assert entry.hit_count == 0  # hits are written in batches, within a second
    harness.clock.advance(HIT_FLUSH_SECONDS)
    (entry,) = harness.store.entries.values()
    assert entry.hit_count == 1
    assert entry.usage.total == 10
    assert entry.model == "gpt-4o-mini"
    assert entry.provider == "openai"


def test_a_ttl_expires_the_entry(harness: Harness) -> None:
    harness.call(**{"X-Stasis-TTL": "60"})
    harness.clock.advance(59)
    assert header(harness.call()[0], "x-stasis-status") == "HIT"
    harness.clock.advance(2)
    response, body = harness.call()
    assert header(response, "x-stasis-status") == "MISS"
    assert json.loads(body)["n"] == 2
    # Stored again without a TTL: it now lives forever.
    harness.clock.advance(10_000)
    assert header(harness.call()[0], "x-stasis-status") == "HIT"


def test_namespaces_partition_the_cache(harness: Harness) -> None:
    harness.call(**{"X-Stasis-Namespace": "suite-a"})
    other = harness.call(**{"X-Stasis-Namespace": "suite-b"})[0]
    same = harness.call(**{"X-Stasis-Namespace": "suite-a"})[0]
    assert header(other, "x-stasis-status") == "MISS"
    assert header(same, "x-stasis-status") == "HIT"
    assert {e.namespace for e in harness.store.entries.values()} == {"suite-a", "suite-b"}


def test_hop_by_hop_and_stasis_headers_stay_on_their_side(harness: Harness) -> None:
    response, _ = harness.call(
        **{
            "Connection": "keep-alive, X-Trace-Hop",
            "X-Trace-Hop": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic abc",
            "Accept-Encoding": "br, zstd",
            "X-Stasis-Namespace": "n",
            "X-Stasis-Mode": "cache",
            "OpenAI-Organization": "org-1",
        }
    )
    ((method, uri, seen),) = harness.api.seen
    assert (method, uri) == (b"POST", b"/v1/chat/completions")
    for name in (b"x-trace-hop", b"keep-alive", b"te", b"proxy-authorization"):
        assert name not in seen, name
    # The agent speaks for its own connection.
    assert b"X-Trace-Hop" not in b"".join(seen.get(b"connection", []))
    assert not [name for name in seen if name.startswith(b"x-stasis-")]
    assert seen[b"accept-encoding"] == [b"gzip"]
    assert seen[b"host"] == [b"upstream.test"]
    assert seen[b"openai-organization"] == [b"org-1"]
    assert seen[b"authorization"] == [b"Bearer sk-test"]
    # Going back: the upstream's hop-by-hop headers are dropped, and its cookie
    # too: sent back, it would be a credential in the next request's key, which
    # would then miss (a hit never sets one either).
    assert header(response, "keep-alive") is None
    assert header(response, "set-cookie") is None
    # Proxy-Authorization is a credential: the hit carries the same one.
    hit, _ = harness.call(
        **{
            "X-Stasis-Namespace": "n",
            "OpenAI-Organization": "org-1",
            "Proxy-Authorization": "Basic abc",
        }
    )
    assert header(hit, "x-stasis-status") == "HIT"
    assert header(hit, "set-cookie") is None


def test_an_unwritable_store_passes_misses_through_as_bypass(harness: Harness) -> None:
    harness.store.writable = False
    response, body = harness.call()
    assert header(response, "x-stasis-status") == "BYPASS"
    assert (
        header(response, "cache-status")
        == "stasis; fwd=uri-miss; fwd-status=200; detail=store-unavailable"
    )
    assert json.loads(body)["n"] == 1
    assert harness.store.entries == {}


def test_a_failing_write_still_answers_the_client(harness: Harness) -> None:
    harness.store.fail_writes = True
    response, body = harness.call()
    assert response.code == 200
    assert json.loads(body)["n"] == 1
    assert harness.store.entries == {}
    assert harness.engine.counters.store_errors == 1


def test_a_failing_read_is_treated_as_a_miss() -> None:
    harness = Harness(memory=0)
    harness.call()
    harness.store.fail_reads = True
    response, body = harness.call()
    assert (response.code, header(response, "x-stasis-status")) == (200, "MISS")
    assert json.loads(body)["n"] == 2
    assert harness.engine.counters.store_errors == 1


def start(harness: Harness, body: Any = CHAT) -> list[bytes]:
    """Send a request; the list receives its body once the response has ended."""
    ended: list[bytes] = []
    d = harness.client.request(
        "POST", "http://stasis.test/v1/chat/completions", data=json.dumps(body), headers=AUTH
    )
    d.addCallback(treq.content).addCallback(ended.append)
    harness._settle()
    return ended


def test_a_miss_ends_once_its_entry_is_committed(harness: Harness) -> None:
    harness.store.hold_writes = True
    ended = start(harness)
    assert ended == []  # the body is relayed, but not its end
    harness.store.release_writes()
    harness._settle()
    assert json.loads(ended[0])["n"] == 1
    assert len(harness.store.entries) == 1


def test_a_commit_that_takes_too_long_does_not_hold_the_answer_back(harness: Harness) -> None:
    harness.store.hold_writes = True
    ended = start(harness)
    harness.clock.advance(COMMIT_PATIENCE)
    harness._settle()
    assert json.loads(ended[0])["n"] == 1
    assert harness.store.entries == {}
    # The same request meanwhile is no second upstream call, nor held back
    # either: it gets the answer whose commit is still to come.
    repeat = start(harness)
    assert json.loads(repeat[0])["n"] == 1
    harness.store.release_writes()
    harness._settle()
    assert len(harness.api.seen) == 1
    assert header(harness.call()[0], "x-stasis-status") == "HIT"


def test_a_bug_while_storing_is_logged_and_the_answer_still_delivered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("usage extractor bug")

    monkeypatch.setattr(CacheEngine, "_entry", broken)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        response, body = harness.call()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (response.code, header(response, "x-stasis-status")) == (200, "MISS")
    assert json.loads(body)["n"] == 1
    (logged,) = [e for e in events if "log_failure" in e]
    assert logged["log_format"] == "storing {path} failed"
    assert logged["log_failure"].check(RuntimeError)
    logged["log_failure"].cleanFailure()


def test_an_upstream_error_is_relayed_and_not_stored(harness: Harness) -> None:
    harness.api.status = 429
    response, _ = harness.call()
    assert response.code == 429
    assert header(response, "cache-status") == "stasis; fwd=uri-miss; fwd-status=429"
    assert harness.store.entries == {}


def test_health_and_stats_read_the_store(harness: Harness) -> None:
    harness.call()
    harness.call()
    harness.clock.advance(HIT_FLUSH_SECONDS)
    _stats_response, stats = harness.call(body=b"", path="/stats", method="GET")
    report = json.loads(stats)
    assert report["totalEntries"] == 1
    assert report["totalTokensSaved"] == 10
    assert (report["hits"], report["misses"], report["hitRate"]) == (1, 1, 0.5)
    assert report["oldestEntry"] == "1970-01-01T00:00:00.000Z"
    _, health = harness.call(body=b"", path="/health", method="GET")
    assert json.loads(health) == {
        "status": "healthy",
        "cache": {"entries": 1, "tokensSaved": 10, "dbSizeBytes": report["dbSizeBytes"]},
    }


def test_a_post_to_health_is_proxied(harness: Harness) -> None:
    response, _ = harness.call(body=b"{}", path="/health", method="POST")
    assert header(response, "x-stasis-status") == "BYPASS"
    assert harness.api.seen[0][1] == b"/health"


def test_the_server_default_mode_applies(harness: Harness) -> None:
    replaying = Harness(mode=Mode.REPLAY)
    response, body = replaying.call()
    assert response.code == 504
    assert json.loads(body)["error"]["type"] == "stasis_replay_miss"
    assert replaying.api.seen == []


def test_a_byte_identical_repeat_is_answered_from_memory_without_a_lookup(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.call()  # the full path: parsed, keyed, looked up, fetched; and remembered
    derived: list[object] = []
    monkeypatch.setattr(
        "stasis.cache.engine.scoped_keys",
        lambda *args: derived.append(args) or real_scoped_keys(*args),
    )
    for _ in range(2):
        response, body = harness.call()
        assert header(response, "x-stasis-status") == "HIT"
        assert header(response, "x-stasis-key") == next(iter(harness.store.entries))
        assert json.loads(body)["n"] == 1
    assert derived == []
    # Any other byte takes the full path, and is still a hit when it means the same.
    other, _ = harness.call(**{"User-Agent": "another-sdk/2.0"})
    assert header(other, "x-stasis-status") == "HIT"
    assert len(derived) == 1
    assert harness.store.gets == 1  # only the very first request looked in the store


def test_a_remembered_request_is_not_served_once_its_entry_is_gone(harness: Harness) -> None:
    harness.call()
    harness.call()
    (key,) = harness.store.entries
    harness.store.delete(key)
    response, body = harness.call()
    assert header(response, "x-stasis-status") == "MISS"
    assert json.loads(body)["n"] == 2


def test_another_process_deleting_an_entry_evicts_it_from_memory(harness: Harness) -> None:
    harness.call()
    harness.call(body={**CHAT, "temperature": 0})
    assert len(harness.engine.hot) == 2
    deleted, _kept = harness.store.entries
    harness.store.external(Change(ChangeKind.DELETE, (deleted,)))
    assert len(harness.engine.hot) == 1
    assert header(harness.call()[0], "x-stasis-status") == "MISS"
    # Another process's insert evicts nothing else: the other entry is still served from memory.
    harness.store.external(Change(ChangeKind.PUT, ("0" * 64,)))
    lookups = harness.store.gets
    hit, _ = harness.call(body={**CHAT, "temperature": 0})
    assert header(hit, "x-stasis-status") == "HIT"
    assert harness.store.gets == lookups


def test_fresh_and_realtime_requests_are_never_answered_from_memory(harness: Harness) -> None:
    harness.call()
    for _ in range(2):
        fresh, _ = harness.call(**{"X-Stasis-Mode": "fresh"})
        assert header(fresh, "x-stasis-status") == "MISS"
    assert len(harness.api.seen) == 3


def test_replay_serves_a_provider_that_has_no_upstream_configured() -> None:
    recorder = Harness()
    azure = "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21"
    assert header(recorder.call(path=azure)[0], "x-stasis-status") == "MISS"
    # CI: the same database, replay mode, and no --upstream azure=URL at all.
    ci = Harness(mode=Mode.REPLAY, routes=Routes())
    ci.store.entries.update(recorder.store.entries)
    hit, _ = ci.call(path=azure)
    assert header(hit, "x-stasis-status") == "HIT"
    unroutable, body = ci.call(path=azure, **{"X-Stasis-Mode": "cache", "OpenAI-Project": "p"})
    assert unroutable.code == 400
    assert "--upstream azure=" in json.loads(body)["error"]["message"]


def test_once_a_lookup_found_nothing_new_keys_are_fetched_without_one() -> None:
    harness = Harness(memory=0)
    first, _ = harness.call()
    assert header(first, "x-stasis-status") == "MISS"
    assert harness.store.gets == 1  # found nothing: the key filter is read
    assert harness.engine.key_filter.ready
    second, _ = harness.call(body={**CHAT, "temperature": 0})
    assert header(second, "x-stasis-status") == "MISS"
    assert harness.store.gets == 1
    # Stored, so no longer absent: a repeat (in other bytes) is looked up and hits.
    third, _ = harness.call(**{"User-Agent": "another-sdk/2.0"})
    assert header(third, "x-stasis-status") == "HIT"
    assert harness.store.gets == 2
    assert len(harness.api.seen) == 2


def test_replay_mode_looks_up_even_what_the_key_filter_believes_absent() -> None:
    recorder = Harness()
    recorder.call()
    for mode in (Mode.REPLAY, Mode.CACHE):
        daemon = Harness(mode=mode)
        daemon.call(body={**CHAT, "n": 1}, **{"X-Stasis-Mode": "cache"})  # reads the key filter
        assert daemon.engine.key_filter.ready
        # Another process stored the entry; its change has not reached this daemon yet.
        daemon.store.entries.update(recorder.store.entries)
        response, body = daemon.call()
        if mode is Mode.REPLAY:
            assert header(response, "x-stasis-status") == "HIT"
            assert json.loads(body)["n"] == 1
        else:
            # In cache mode the belief costs one upstream call, then the answer is fresh.
            assert header(response, "x-stasis-status") == "MISS"
            assert len(daemon.api.seen) == 2
