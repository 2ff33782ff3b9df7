"""
The SQLite store when another process locks the database, or its file is
deleted or replaced under it (issue 15, items 10 and 11).

A lock is waited out (up to ``LOCK_PATIENCE_SECONDS``), the writes asked for
meanwhile kept in line and committed once it is let go; only a lock held
past the patience fails them. A file deleted or replaced is noticed by its
inode and opened again, with a RESET on the change feed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from stasis.model import Change, ChangeKind
from stasis.store import Store, StoreError, _adbapi, _sqlite, open_store
from tests.store_support import key, make_entry, raw
from tests.waiting import wait_for

#: Short busy timeouts and patience, so that a test waits out a lock in a second or two.
BUSY = 0.2


def opened(path: Path) -> Store:
    store = open_store(str(path), reactor)
    store.open()
    return store


@contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock until the block ends (rolled back)."""
    with raw(path) as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield holder
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")


def count(path: Path) -> int:
    with raw(path) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_SECONDS", BUSY)


# A lock held by another process


@pytest_twisted.ensureDeferred
async def test_a_lock_held_past_the_busy_timeout_is_waited_out(
    tmp_path: Path, short_waits: None
) -> None:
    """
    Puts, counted hits and a delete asked for during the lock wait, in order;
    lookups and counts do not; the store stays writable and says it is held
    up; everything is committed once the lock is let go.
    """
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        await store.put(make_entry(1))
        with locked(path):
            puts = [store.put(make_entry(n)) for n in (2, 3)]
            hits = store.add_hits({key(1): (4, 99.0)})
            deleted = store.delete(key(2))
            await wait_for(lambda: store.held_up, deadline=5)
            await pause(3 * BUSY)  # several busy timeouts: still waiting, not failed
            assert not any(d.called for d in (*puts, hits, deleted))
            assert store.writable
            assert await store.get(key(1)) == make_entry(1)  # readers never wait for the lock
            started = time.monotonic()
            assert (await store.stats()).entries == 1  # nor does a count
            assert time.monotonic() - started < 0.5
            later = store.put(make_entry(4))
        await gatherResults([*puts, hits, later])
        assert await deleted is True  # after the put of 2, as asked
        assert not store.held_up and store.writable
        assert await store.get(key(2)) is None
        assert await store.get(key(3)) == make_entry(3)
        with raw(path) as connection:
            assert connection.execute(
                "SELECT hit_count FROM entries WHERE key = ?", (bytes.fromhex(key(1)),)
            ).fetchone() == (4,)
        assert count(path) == 3
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_lock_held_past_the_patience_fails_every_write_waiting(
    tmp_path: Path, short_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_adbapi, "LOCK_PATIENCE_SECONDS", 1.0)
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        with locked(path):
            first, second = store.put(make_entry(1)), store.put(make_entry(2))
            hits = store.add_hits({key(1): (1, 5.0)})
            started = time.monotonic()
            for write in (first, second, hits):
                with pytest.raises(StoreError, match="locked"):
                    await write
            assert 0.9 <= time.monotonic() - started < 1.0 + 3 * BUSY + 1.0
            assert not store.writable and not store.held_up
        # Let go: the probe (every 2 s) or the next write finds out.
        await wait_for(lambda: store.writable, deadline=10)
        await store.put(make_entry(3))
        assert count(path) == 1
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_claim_does_not_wait_out_a_lock(tmp_path: Path, short_waits: None) -> None:
    """
    A claim is worth nothing after the fetch it was for: it fails once the
    lock is found (at once when it is known), the fetch goes ahead
    unclaimed, and the store stays writable; the writes asked for after it
    still settle in order.
    """
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        with locked(path):
            put = store.put(make_entry(1))
            claim = store.claim(key(2), "me", 30.0)
            after = store.stats()
            started = time.monotonic()
            with pytest.raises(StoreError, match="locked"):
                await claim
            assert time.monotonic() - started < 2 * BUSY + 1.0
            assert store.held_up and store.writable
            assert (await after).entries == 0
            with pytest.raises(StoreError, match="locked by another process"):
                await store.claim(key(3), "me", 30.0)
            assert not put.called
        await put
        assert await store.claim(key(2), "me", 30.0) is True
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_puts_past_the_bound_are_refused_while_a_lock_is_waited_out(
    tmp_path: Path, short_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_adbapi, "MAX_WAITING_PUTS", 3)
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        with locked(path):
            kept = [store.put(make_entry(n)) for n in range(3)]
            refused = store.put(make_entry(3))
            with pytest.raises(StoreError, match="not stored: 3 entries already wait"):
                await refused
            assert store.writable  # not the database's fault
        await gatherResults(kept)
        await store.put(make_entry(3))  # room again
        assert count(path) == 4
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_closing_during_a_lock_gives_up_the_writes_waiting(
    tmp_path: Path, short_waits: None
) -> None:
    """A stopping daemon does not sit out a lock for a minute: one busy timeout, and they fail."""
    path = tmp_path / "cache.db"
    store = opened(path)
    with locked(path):
        puts = [store.put(make_entry(n)) for n in range(3)]
        await wait_for(lambda: store.held_up, deadline=5)
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < 2 * BUSY + 1.0
    for put in puts:
        with pytest.raises(StoreError, match="locked"):
            await put


# The database file deleted or replaced


def recorded(store: Store) -> list[Change]:
    changes: list[Change] = []
    store.changes.subscribe(changes.append)
    return changes


def resets(changes: list[Change]) -> int:
    return sum(change.kind is ChangeKind.RESET for change in changes)


def delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


@pytest_twisted.ensureDeferred
async def test_a_deleted_file_is_made_again_with_the_same_secret(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorded(store)
    secret = store.secret
    try:
        await store.put(make_entry(1))
        delete(path)
        started = time.monotonic()
        await wait_for(lambda: resets(changes) == 1, deadline=5)
        noticed = time.monotonic() - started
        assert noticed < 2 * _adbapi.FILE_CHECK_SECONDS + 0.5
        assert store.secret == secret
        assert await store.get(key(1)) is None
        await store.put(make_entry(2))
        assert count(path) == 1
        with raw(path) as connection:
            assert connection.execute(
                "SELECT value FROM meta WHERE name = 'secret'"
            ).fetchone() == (secret,)
        assert store.writable
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_stats_notice_a_deleted_file_before_the_timer_does(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        await store.put(make_entry(1))
        delete(path)
        stats = await store.stats()
        assert (stats.entries, stats.db_size_bytes > 0) == (0, True)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_puts_asked_for_while_the_file_is_opened_again_go_into_the_new_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        await store.put(make_entry(1))
        delete(path)
        stats = store.stats()  # begins the reopen
        puts = [store.put(make_entry(n)) for n in range(2, 5)]
        lookup = store.get(key(1))
        await gatherResults(puts)
        assert await lookup is None
        assert (await stats).entries in (0, 3)
        assert count(path) == 3
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_file_moved_onto_the_path_is_used_with_its_own_secret(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    other_path = tmp_path / "other.db"
    other = opened(other_path)
    await other.put(make_entry("theirs"))
    await other.close()

    store = opened(path)
    changes = recorded(store)
    try:
        await store.put(make_entry("ours"))
        # Left in the WAL, not yet checkpointed: it must not be read as the new file's.
        await store.put(make_entry("ours, later"))
        os.rename(other_path, path)
        await wait_for(lambda: resets(changes) == 1, deadline=5)
        assert store.secret == other.secret
        assert await store.get(key("theirs")) == make_entry("theirs")
        assert await store.get(key("ours")) is None
        await store.put(make_entry("ours"))
        assert sorted(e.key for e in (await store.list_entries()).entries) == sorted(
            [key("theirs"), key("ours")]
        )
    finally:
        await store.close()
    with raw(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (2,)


@pytest_twisted.ensureDeferred
async def test_a_database_that_cannot_be_made_again_is_retried_until_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its directory gone: misses bypass, lookups fail (as misses), until it is back."""
    monkeypatch.setattr(_adbapi, "REOPEN_RETRY_SECONDS", 0.2)
    directory = tmp_path / "cache"
    directory.mkdir()
    path = directory / "cache.db"
    store = opened(path)
    try:
        await store.put(make_entry(1))
        shutil.rmtree(directory)
        await wait_for(lambda: not store.writable, deadline=5)
        with pytest.raises(StoreError, match=r"cache\.db"):
            await store.get(key(1))
        with pytest.raises(StoreError, match=r"cache\.db"):
            await store.put(make_entry(2))
        directory.mkdir()
        await wait_for(lambda: store.writable, deadline=5)
        await store.put(make_entry(2))
        assert count(path) == 1
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_two_stores_on_a_file_deleted_without_its_wal_make_one_new_database(
    tmp_path: Path,
) -> None:
    """
    Two workers' stores on one file, and only the file deleted (``rm
    cache.db``): its WAL and shared memory, still in use by the store that
    has not noticed yet, must not be taken for the new file's. Both end up on
    the one new file, with the old secret, and it is sound.
    """
    path = tmp_path / "cache.db"
    first, second = opened(path), opened(path)
    changes = [recorded(first), recorded(second)]
    secret = first.secret
    try:
        await first.put(make_entry(1))
        await second.put(make_entry(2))
        assert Path(str(path) + "-wal").exists()
        path.unlink()
        await wait_for(lambda: all(resets(each) for each in changes), deadline=5)
        await gatherResults([first.put(make_entry(n)) for n in range(10, 20)])
        await gatherResults([second.put(make_entry(n)) for n in range(20, 30)])
        assert await second.get(key(10)) == make_entry(10)
        assert await first.get(key(20)) == make_entry(20)
        assert (first.secret, second.secret) == (secret, secret)
    finally:
        await first.close()
        await second.close()
    with raw(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (20,)


#: Another process using the database (a worker that has not noticed yet):
#: each line on stdin writes one row to ``meta`` through its open connection.
_OTHER_PROCESS = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
connection.execute("SELECT COUNT(*) FROM entries").fetchone()
print("open", flush=True)
for n, line in enumerate(sys.stdin):
    connection.execute("INSERT INTO meta (name, value) VALUES (?, x'00')", (f"other-{n}",))
    print("written", flush=True)
"""


@pytest_twisted.ensureDeferred
async def test_a_new_file_is_not_read_with_the_deleted_ones_wal(tmp_path: Path) -> None:
    """
    Only the file deleted, while another process still writes to it through
    its WAL: the new file made at the path has a WAL of its own, and what
    the other process writes to the deleted file never shows in it (SQLite
    finds a WAL by the database's name: paired with the deleted file's, the
    new one reads its pages).
    """
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorded(store)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        assert other.stdout.readline() == "open\n"
        await store.put(make_entry(1))
        path.unlink()
        await wait_for(lambda: resets(changes) == 1, deadline=5)
        await store.put(make_entry(2))
        for _ in range(3):
            other.stdin.write("\n")
            other.stdin.flush()
            assert other.stdout.readline() == "written\n"
        await store.put(make_entry(3))
        assert await store.get(key(2)) == make_entry(2)
        assert sorted(e.key for e in (await store.list_entries()).entries) == sorted(
            [key(2), key(3)]
        )
    finally:
        other.stdin.close()
        other.wait(timeout=10)
        await store.close()
    with raw(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        others = connection.execute("SELECT name FROM meta WHERE name LIKE 'other-%'")
        assert others.fetchall() == []
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (2,)


@pytest_twisted.ensureDeferred
async def test_a_file_left_alone_is_never_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorded(store)
    try:
        await store.put(make_entry(1))
        done: Deferred[None] = deferLater(reactor, 4 * _adbapi.FILE_CHECK_SECONDS, lambda: None)
        await done
        assert resets(changes) == 0
    finally:
        await store.close()
