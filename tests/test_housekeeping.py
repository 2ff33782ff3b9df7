"""
The housekeeping's decisions, on a fake clock and the in-memory store: when it
prunes and evicts, what it counts, that store trouble is logged once a minute
and never escapes, and that it stops; then its wiring into the daemon and
``/stats``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from stasis import Config
from stasis.cache import Counters
from stasis.cache.housekeeping import (
    CHECK_AFTER_SECONDS,
    PRUNE_EVERY_SECONDS,
    UNBOUNDED,
    Bounds,
    Housekeeping,
)
from stasis.model import Change, ChangeKind, Entry
from stasis.service import build_front
from tests.memory_store import MemoryStore
from tests.store_support import key, make_entry

NOW = 1_700_000_000.0


@define
class CountingStore(MemoryStore):
    """The in-memory store, counting the housekeeping's calls."""

    prunes: list[float] = field(factory=list)
    evictions: list[tuple[int | None, int | None]] = field(factory=list)

    def prune(self, now: float) -> Deferred[int]:
        self.prunes.append(now)
        return super().prune(now)

    def evict(self, max_bytes: int | None, max_entries: int | None) -> Deferred[int]:
        self.evictions.append((max_bytes, max_entries))
        return super().evict(max_bytes, max_entries)


@define
class Kept:
    clock: Clock
    store: CountingStore
    counters: Counters
    housekeeping: Housekeeping

    def put(self, *entries: Entry) -> None:
        for entry in entries:
            self.store.put(entry)

    def stored(self) -> set[str]:
        return set(self.store.entries)


def kept(bounds: Bounds = UNBOUNDED, keep_expired: float = 0.0) -> Kept:
    clock = Clock()
    clock.advance(NOW)
    store = CountingStore(clock)
    store.open()
    counters = Counters()
    housekeeping = Housekeeping(store, clock, counters, bounds, keep_expired=keep_expired)
    return Kept(clock, store, counters, housekeeping)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The text of every warning logged meanwhile."""
    seen: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_level") == LogLevel.warn:
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


# Pruning


def test_expired_entries_are_pruned_every_minute() -> None:
    k = kept()
    k.put(
        make_entry("gone", expires_at=NOW - 1),
        make_entry("soon", expires_at=NOW + 90),
        make_entry("forever"),
    )
    k.housekeeping.start()
    assert len(k.stored()) == 3  # not at once: another daemon may still want them
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert k.stored() == {key("soon"), key("forever")}
    assert k.counters.expired_removed == 1
    k.clock.advance(PRUNE_EVERY_SECONDS - 1)
    assert key("soon") in k.stored()  # expired, but not looked for yet
    k.clock.advance(1)
    assert k.stored() == {key("forever")}
    assert k.counters.expired_removed == 2
    assert k.store.prunes == [NOW + PRUNE_EVERY_SECONDS, NOW + 2 * PRUNE_EVERY_SECONDS]
    assert k.store.evictions == []  # unbounded: nothing to check


def test_what_stale_if_error_may_still_serve_is_kept_that_long() -> None:
    k = kept(keep_expired=300.0)
    k.put(make_entry("recent", expires_at=NOW - 100), make_entry("old", expires_at=NOW - 400))
    k.housekeeping.start()
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert k.stored() == {key("recent")}
    k.clock.advance(2 * PRUNE_EVERY_SECONDS)
    assert k.stored() == {key("recent")}  # expired 280 s ago
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert k.stored() == set()
    assert k.store.prunes[-1] == k.clock.seconds() - 300.0


# Evicting


def test_a_bound_is_checked_a_second_after_puts_evicting_the_least_recently_used() -> None:
    k = kept(Bounds(max_entries=3))
    k.housekeeping.start()
    assert k.store.evictions == [(None, 3)]  # at start: a bound may have been lowered
    k.put(*(make_entry(n, created_at=NOW + n) for n in range(5)))
    k.store.add_hits({key(0): (1, NOW + 10)})
    k.clock.advance(CHECK_AFTER_SECONDS / 2)
    assert len(k.stored()) == 5
    k.clock.advance(CHECK_AFTER_SECONDS / 2)
    assert k.stored() == {key(0), key(3), key(4)}
    assert k.counters.evictions == 2
    # A burst of puts is checked once, a second after the first of them.
    k.store.evictions.clear()
    for n in range(5, 25):
        k.put(make_entry(n, created_at=NOW + n))
        k.clock.advance(CHECK_AFTER_SECONDS / 40)
    k.clock.advance(CHECK_AFTER_SECONDS)
    assert k.store.evictions == [(None, 3)]
    assert k.stored() == {key(22), key(23), key(24)}
    assert k.counters.evictions == 2 + 20
    k.clock.advance(10 * CHECK_AFTER_SECONDS)
    assert k.store.evictions == [(None, 3)]  # no put, no check


def test_a_size_bound_is_checked_every_minute_even_without_puts() -> None:
    k = kept(Bounds(max_bytes=10_000))
    k.housekeeping.start()
    noise = random.Random(1)
    k.store.entries.update({key(n): make_entry(n, body=noise.randbytes(3000)) for n in range(5)})
    assert k.store.evictions == [(10_000, None)]
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert k.store.evictions == [(10_000, None)] * 2
    assert len(k.stored()) < 5
    assert k.counters.evictions == 5 - len(k.stored())


# Trouble


def test_store_trouble_is_logged_once_a_minute_and_never_raised(warnings: list[str]) -> None:
    k = kept(Bounds(max_entries=1))
    k.store.fail_writes = True
    k.housekeeping.start()
    for n in range(30):  # stored by another process: this one's puts are refused
        k.store.entries[key(n)] = make_entry(n)
        k.store.changes.publish(_put(key(n)))
        k.clock.advance(CHECK_AFTER_SECONDS)
    assert len(warnings) == 1
    assert "cannot evict from the cache database: database or disk is full" in warnings[0]
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert len(warnings) == 2
    assert "cannot prune the cache database" in warnings[1]
    # Every failed write counted, though two were logged: 31 evictions (at start,
    # after each put), then the minute's pruning and eviction.
    assert k.counters.store_errors == 33
    k.store.fail_writes = False
    k.put(make_entry("last"))
    k.clock.advance(CHECK_AFTER_SECONDS)
    assert len(k.stored()) == 1
    assert len(warnings) == 2


def _put(digest: str) -> Change:
    return Change(ChangeKind.PUT, (digest,), local=False)


def test_a_store_that_cannot_be_written_is_left_alone(warnings: list[str]) -> None:
    k = kept(Bounds(max_entries=1))
    k.store.writable = False
    k.housekeeping.start()
    k.put(make_entry(1), make_entry(2))
    k.clock.advance(PRUNE_EVERY_SECONDS)
    assert (k.store.prunes, k.store.evictions, warnings) == ([], [], [])
    assert len(k.stored()) == 2


# Stopping


def test_stop_cancels_the_work_under_way_and_nothing_runs_after() -> None:
    k = kept(Bounds(max_entries=1))
    k.store.hold_writes = True  # the first round's eviction waits
    k.housekeeping.start()
    assert k.store.evictions == [(None, 1)]
    stopped = Deferred.fromCoroutine(k.housekeeping.stop())
    assert stopped.called  # the eviction was cancelled: its round ended
    k.store.release_writes()
    k.put(make_entry(1), make_entry(2))
    k.clock.advance(10 * PRUNE_EVERY_SECONDS)
    assert (k.store.prunes, k.store.evictions) == ([], [(None, 1)])
    assert k.clock.getDelayedCalls() == []
    assert len(k.stored()) == 2


def test_a_round_under_way_sees_what_fell_due_meanwhile() -> None:
    k = kept(Bounds(max_entries=1))
    k.store.hold_writes = True
    k.housekeeping.start()  # the check at start: held
    k.store.entries.update({key(n): make_entry(n, created_at=NOW + n) for n in range(3)})
    k.store.changes.publish(_put(key(2)))
    k.clock.advance(CHECK_AFTER_SECONDS)  # due while the first round waits
    assert k.store.evictions == [(None, 1)]  # not a second round beside it
    k.store.release_writes()
    assert k.stored() == {key(2)}
    assert k.store.evictions == [(None, 1)] * 2  # the round went on with what fell due


# The daemon's wiring


def _stats(site_root: Any) -> dict[str, Any]:
    request = DummyRequest([b"stats"])
    request.method = b"GET"
    child = site_root.getChildWithDefault(b"stats", request)
    child.render(request)
    return json.loads(b"".join(request.written))  # type: ignore[no-any-return]


@pytest.mark.parametrize("bounded", [True, False])
def test_the_daemon_keeps_its_bounds_and_reports_them_in_stats(bounded: bool) -> None:
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    store = MemoryStore(reactor)
    options: dict[str, Any] = {"max_entries": 2, "max_size_bytes": 10_000_000} if bounded else {}
    config = Config(upstream="http://upstream.test", stale_if_error=30.0, **options)
    front = build_front(config, reactor, store)
    housekeeping = front.engine.housekeeping
    assert housekeeping is not None and housekeeping.counters is front.counters
    assert housekeeping.keep_expired == 30.0
    store.open()
    front.engine.start()
    try:
        store.put(make_entry("expired", expires_at=NOW - 60, created_at=NOW + 100))
        for n in range(5):
            store.put(make_entry(n, created_at=NOW + n))
        reactor.advance(PRUNE_EVERY_SECONDS)
        stats = _stats(front.site.resource)
    finally:
        Deferred.fromCoroutine(front.engine.close())
    # Bounded: the four least recently used go a second after the puts, the
    # expired one (stored last) a minute later.
    assert sorted(store.entries) == sorted([key(4)] if bounded else [key(n) for n in range(5)])
    assert {name: stats[name] for name in stats if name not in _OLDER_FIELDS} == {
        "maxSizeBytes": 10_000_000 if bounded else None,
        "maxEntries": 2 if bounded else None,
        "storedBytes": sum(store.stored_size(e) for e in store.entries.values()),
        "evictions": 4 if bounded else 0,
        "expiredRemoved": 1,
        "coalesced": 0,
        "storeErrors": 0,
    }


_OLDER_FIELDS = {
    "totalEntries",
    "totalTokensSaved",
    "dbSizeBytes",
    "oldestEntry",
    "newestEntry",
    "hits",
    "misses",
    "bypasses",
    "replayMisses",
    "stale",
    "tokensSavedSinceStart",
    "hitRate",
}
