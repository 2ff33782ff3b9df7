"""
The store's figures behind the admin API's ``stats``: one read shared by the
polls that ask meanwhile, kept in proportion to what it cost, forgotten when
the API changes the cache.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from stasis.model import StoreStats
from stasis.store import StoreError
from stasis.web.admin import figures as figures_module
from stasis.web.admin.figures import MIN_KEEP_SECONDS, StoreFigures
from tests.memory_store import MemoryStore


class HeldStore(MemoryStore):
    """Counts its reads of the totals, and holds each until let go."""

    def __init__(self) -> None:
        super().__init__(Clock())
        self.reads: list[Deferred[None]] = []

    def stats(self) -> Deferred[StoreStats]:
        gate: Deferred[None] = Deferred()
        self.reads.append(gate)
        return gate.addCallback(lambda _: MemoryStore.stats(self))


class Now:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> Now:
    now = Now()
    monkeypatch.setattr(figures_module.time, "monotonic", now)
    return now


def _results(*ds: Deferred[Any]) -> list[Any]:
    found: list[Any] = []
    for d in ds:
        d.addBoth(found.append)
    return found


def test_the_polls_that_ask_during_a_read_share_it(now: Now) -> None:
    store = HeldStore()
    kept = StoreFigures(store, 20)
    first, second = ensureDeferred(kept.read()), ensureDeferred(kept.read())
    assert len(store.reads) == 1
    now.now += 2.0  # the read took two seconds
    store.reads[0].callback(None)
    one, two = _results(first, second)
    assert one is two and one.stats.entries == 0
    # Kept thirty times as long as it took: no read until then.
    now.now += 59.0
    assert _results(ensureDeferred(kept.read())) == [one]
    assert len(store.reads) == 1
    now.now += 1.5
    ensureDeferred(kept.read())
    assert len(store.reads) == 2


def test_a_quick_read_is_kept_a_moment_and_a_change_forgets_it(now: Now) -> None:
    store = HeldStore()
    kept = StoreFigures(store, 20)
    ensureDeferred(kept.read())
    store.reads[0].callback(None)
    now.now += MIN_KEEP_SECONDS / 2
    ensureDeferred(kept.read())
    assert len(store.reads) == 1
    kept.forget()
    ensureDeferred(kept.read())
    assert len(store.reads) == 2


def test_a_failed_read_fails_every_poll_waiting_and_is_not_kept(now: Now) -> None:
    store = HeldStore()
    kept = StoreFigures(store, 20)
    first, second = ensureDeferred(kept.read()), ensureDeferred(kept.read())
    store.reads[0].errback(StoreError("disk I/O error"))
    for failure in _results(first, second):
        assert failure.check(StoreError)
    ensureDeferred(kept.read())
    assert len(store.reads) == 2
