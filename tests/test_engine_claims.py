"""
Single flight across processes: two engines (two daemons, or two workers)
over one shared store make one upstream call for identical concurrent misses,
through the store's claims; and a claim whose holder died holds the others up
only until it lapses.

Both engines run on one clock and one in-memory store marked shared, each with
an upstream of its own, so a test can tell which daemon fetched.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from stasis.cache import CacheRequest
from stasis.cache.answers import Answer
from stasis.cache.claims import CLAIM_SECONDS, LOOK_SECONDS
from tests.memory_store import MemoryStore
from tests.test_engine import HeldAPI, answer_of
from tests.test_proxy_resource import CHAT, Harness

REQUEST = CacheRequest(
    method=b"POST",
    target=b"/v1/chat/completions",
    headers=[(b"Authorization", b"Bearer sk-test"), (b"Content-Type", b"application/json")],
    body=json.dumps(CHAT).encode(),
)


def daemons(shared: bool = True) -> tuple[Harness, Harness, MemoryStore, Clock]:
    clock = Clock()
    store = MemoryStore(clock, shared=shared)
    # Upstreams slower than a claim lasts: holders must renew.
    slow = 10 * CLAIM_SECONDS
    first = Harness(clock=clock, api=HeldAPI(), shared_store=store, upstream_timeout=slow)
    second = Harness(clock=clock, api=HeldAPI(), shared_store=store, upstream_timeout=slow)
    return first, second, store, clock


def settle(*harnesses: Harness) -> None:
    for harness in harnesses:
        harness._settle()


def pending(d: Deferred[Any]) -> bool:
    results: list[Any] = []
    d.addBoth(lambda result: results.append(result) or result)
    return not results


def status(answer: Answer) -> bytes:
    return answer.outcome.status.value


def test_a_miss_through_a_second_daemon_waits_for_the_first_daemons_fetch() -> None:
    first, second, store, _ = daemons()
    leading = first.engine.serve(REQUEST)
    settle(first)
    assert len(first.api.held) == 1
    assert set(store.claims) == {next(iter(store.claims))}
    # The second daemon, and a request following it there, wait: no call of theirs.
    waiting = [second.engine.serve(REQUEST) for _ in range(2)]
    settle(second)
    assert second.api.held == [] and all(pending(d) for d in waiting)
    first.api.release()
    settle(first, second)
    led, body = answer_of(first, leading)
    assert status(led) == b"MISS"
    for d in waiting:
        answer, again = answer_of(second, d)
        assert status(answer) == b"HIT" and answer.outcome.collapsed
        assert again == body
    assert len(first.api.seen) + len(second.api.seen) == 1
    assert store.claims == {}  # released once the entry was committed
    assert second.counters.hits == 2 and second.counters.misses == 0


def test_a_claim_whose_holder_died_lapses_and_the_waiting_daemon_fetches() -> None:
    first, second, store, clock = daemons()
    first.engine.serve(REQUEST)
    settle(first)
    first.engine.claims.stop()  # the first daemon dies mid-fetch: no more renewals
    waiting = second.engine.serve(REQUEST)
    settle(second)
    for _ in range(int(CLAIM_SECONDS / LOOK_SECONDS) - 1):
        clock.advance(LOOK_SECONDS)
        settle(second)
    assert second.api.held == [] and pending(waiting)
    clock.advance(2 * LOOK_SECONDS)
    settle(second)
    assert len(second.api.held) == 1  # the claim lapsed: the second daemon fetches
    second.api.release()
    settle(second)
    answer, _ = answer_of(second, waiting)
    assert status(answer) == b"MISS"
    assert len(store.entries) == 1


def test_a_live_holder_renews_its_claim_for_as_long_as_its_fetch_takes() -> None:
    first, second, _, clock = daemons()
    leading = first.engine.serve(REQUEST)
    settle(first)
    waiting = second.engine.serve(REQUEST)
    for _ in range(int(3 * CLAIM_SECONDS / LOOK_SECONDS)):
        clock.advance(LOOK_SECONDS)
        settle(first, second)
    assert second.api.held == [] and pending(waiting)
    first.api.release()
    settle(first, second)
    assert status(answer_of(first, leading)[0]) == b"MISS"
    assert status(answer_of(second, waiting)[0]) == b"HIT"
    assert len(first.api.seen) + len(second.api.seen) == 1


def test_a_fetch_that_stores_nothing_releases_the_claim_to_the_next_daemon() -> None:
    first, second, store, clock = daemons()
    first.api.status = 429
    leading = first.engine.serve(REQUEST)
    settle(first)
    waiting = second.engine.serve(REQUEST)
    settle(second)
    first.api.release()
    settle(first)
    assert status(answer_of(first, leading)[0]) == b"MISS"
    assert store.entries == {} and store.claims == {}
    clock.advance(LOOK_SECONDS)
    settle(second)
    assert len(second.api.held) == 1  # nothing to wait for: it fetches itself
    second.api.release()
    settle(second)
    assert status(answer_of(second, waiting)[0]) == b"MISS"
    assert len(store.entries) == 1


def test_a_client_that_leaves_while_waiting_ends_its_wait_and_holds_nothing() -> None:
    first, second, _, clock = daemons()
    first.engine.serve(REQUEST)
    settle(first)
    waiting = second.engine.serve(REQUEST)
    settle(second)
    waiting.addErrback(lambda failure: failure.trap(CancelledError))
    waiting.cancel()
    settle(second)
    assert len(second.engine.flights) == 0
    assert second.engine.claims.held == frozenset()
    clock.advance(10 * LOOK_SECONDS)
    settle(second)
    assert second.api.held == []  # nothing goes on after it left


def test_a_daemon_alone_with_its_store_claims_nothing() -> None:
    first, _, store, _ = daemons(shared=False)
    leading = first.engine.serve(REQUEST)
    settle(first)
    assert store.claims == {}
    first.api.release()
    settle(first)
    assert status(answer_of(first, leading)[0]) == b"MISS"
