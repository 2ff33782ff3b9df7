"""
The in-memory map of hot entries: bounded, and never serving what the database no longer holds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest_twisted
from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from stasis.store import Entry, HotCache, SQLiteStore
from tests.memory_store import MemoryStore


def entry(n: int, size: int = 100) -> Entry:
    return Entry(
        key=f"{n:064x}",
        status=200,
        headers=((b"content-type", b"application/json"),),
        body=b"x" * size,
        created_at=float(n),
    )


def resolved(d: Deferred[Entry | None]) -> Entry | None:
    results: list[Entry | None] = []
    d.addCallback(results.append)
    assert results
    return results[0]


def test_hits_are_served_from_memory_after_the_first_read() -> None:
    inner = MemoryStore(Clock())
    hot = HotCache(inner, budget=1 << 20)
    inner.entries[entry(1).key] = entry(1)
    assert resolved(hot.get(entry(1).key)) == entry(1)
    inner.fail_reads = True  # the database is no longer consulted
    assert resolved(hot.get(entry(1).key)) == entry(1)


def test_the_budget_evicts_the_least_recently_used() -> None:
    hot = HotCache(MemoryStore(Clock()), budget=4 * (1000 + 512 + 28))
    for n in range(4):
        hot.put(entry(n, 1000))
    hot.get(entry(0).key)  # 0 is now the most recently used
    hot.put(entry(4, 1000))
    assert hot.used <= hot.budget
    inner = hot.store
    assert isinstance(inner, MemoryStore)
    inner.fail_reads = True
    kept = {n for n in range(5) if hot._entries.get(entry(n).key) is not None}
    assert kept == {0, 2, 3, 4}


def test_an_entry_over_a_quarter_of_the_budget_is_not_kept() -> None:
    hot = HotCache(MemoryStore(Clock()), budget=4000)
    hot.put(entry(1, 2000))
    assert hot.used == 0


def test_a_refreshed_entry_replaces_the_old_one_and_a_failed_write_forgets_it() -> None:
    inner = MemoryStore(Clock())
    hot = HotCache(inner, budget=1 << 20)
    hot.put(entry(1))
    newer = evolve(entry(1), body=b"newer")
    hot.put(newer)
    assert resolved(hot.get(newer.key)) == newer
    inner.fail_writes = True
    hot.put(evolve(entry(1), body=b"never stored")).addErrback(lambda f: None)
    inner.fail_reads = True
    assert hot._entries.get(newer.key) is None


def test_a_put_is_served_from_memory_once_committed() -> None:
    inner = MemoryStore(Clock(), hold_writes=True)
    hot = HotCache(inner, budget=1 << 20)
    committed = hot.put(entry(1))
    assert hot.peek(entry(1).key) is None  # not in the database yet
    inner.release_writes()
    assert resolved(committed) is None
    inner.fail_reads = True
    assert resolved(hot.get(entry(1).key)) == entry(1)


def test_a_put_whose_commit_fails_is_not_served_from_memory() -> None:
    inner = MemoryStore(Clock(), hold_writes=True)
    hot = HotCache(inner, budget=1 << 20)
    failures: list[object] = []
    hot.put(entry(1)).addErrback(failures.append)
    ((_, committed),) = inner._held
    committed.errback(OSError("database or disk is full"))
    assert len(failures) == 1
    assert hot.peek(entry(1).key) is None


def test_a_delete_or_prune_during_a_commit_is_not_undone_in_memory() -> None:
    inner = MemoryStore(Clock(), hold_writes=True)
    hot = HotCache(inner, budget=1 << 20)
    hot.put(entry(1))
    hot.put(entry(2))
    hot.delete(entry(1).key)
    hot.prune(created_before=10.0)
    inner.release_writes()
    assert hot.peek(entry(1).key) is None
    assert hot.peek(entry(2).key) is None
    assert hot.used == 0


def test_of_two_puts_of_one_key_in_flight_the_later_is_kept() -> None:
    inner = MemoryStore(Clock(), hold_writes=True)
    hot = HotCache(inner, budget=1 << 20)
    newer = evolve(entry(1), body=b"newer")
    hot.put(entry(1))
    hot.put(newer)
    inner.release_writes()
    assert hot.peek(entry(1).key) == newer


def test_delete_and_prune_drop_entries_from_memory() -> None:
    inner = MemoryStore(Clock())
    hot = HotCache(inner, budget=1 << 20)
    hot.put(entry(1))
    hot.put(entry(2))
    hot.delete(entry(1).key)
    assert resolved(hot.get(entry(1).key)) is None
    hot.prune(created_before=10.0)
    assert hot.used == 0
    assert resolved(hot.get(entry(2).key)) is None


@pytest_twisted.ensureDeferred
async def test_another_process_deleting_an_entry_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    hot = HotCache(SQLiteStore(str(path), reactor), budget=1 << 20)
    hot.open()
    changed: Deferred[None] = Deferred()
    hot.on_external_change(lambda: changed.called or changed.callback(None))
    try:
        await hot.put(entry(1))
        assert await hot.get(entry(1).key) == entry(1)
        # A management command in another process deletes it...
        with sqlite3.connect(path) as other:
            other.execute("DELETE FROM entries")
        # ...and within about a second the daemon stops serving it from memory.
        await changed
        assert await hot.get(entry(1).key) is None
    finally:
        await hot.close()
