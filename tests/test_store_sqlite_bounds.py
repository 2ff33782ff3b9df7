"""
Bounds on SQLite: what the contract suite cannot show on every store alike.

The indexes the eviction and pruning queries really use, the totals that
triggers keep (whoever writes), stored sizes against what the file really
grows by, and evictions in small transactions that puts are not stuck
behind, which cancelling or closing stops between two of them.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, gatherResults

from stasis.model import Change, ChangeKind, Entry, StoredRequest
from stasis.store import Store, StoreError, _adbapi, _sqlite, open_store
from stasis.store._bounds import BATCH, expired_sql, least_recently_used_sql
from stasis.store._codec import encode
from stasis.store._rows import ROW_OVERHEAD_BYTES, SIZE_SQL, stored_size
from stasis.store._schema_sqlite import migrate
from tests.store_support import key, make_entry, raw
from tests.test_store_sqlite import connect_read_only, historic_database, raw_insert


def opened(path: Path) -> Store:
    store = open_store(str(path), reactor)
    store.open()
    return store


def totals(path: Path) -> tuple[int, int]:
    """The totals the triggers keep, beside what a scan of the table counts."""
    with raw(path) as connection:
        kept = connection.execute("SELECT entry_count, stored_bytes FROM totals").fetchone()
        counted = connection.execute(
            f"SELECT COUNT(*), COALESCE(SUM({SIZE_SQL}), 0) FROM entries"
        ).fetchone()
    assert kept == counted
    return kept  # type: ignore[no-any-return]


def plan(path: Path, query: str, parameters: tuple[Any, ...]) -> str:
    with raw(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {query}", parameters).fetchall()
    return " / ".join(row[-1] for row in rows)


def recorded(store: Store) -> list[Change]:
    changes: list[Change] = []
    store.changes.subscribe(changes.append)
    return changes


_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"
#: Words of English-like lengths: prose that packs about as well as a model's.
_WORDS = [
    "".join(random.Random(n).choices(_LETTERS[: 8 + n % 18], k=2 + n % 8)) for n in range(400)
]


def _prose(rng: random.Random, words: int) -> bytes:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).encode()


def chat_entry(n: int, rng: random.Random) -> Entry:
    """
    An entry shaped like a real chat answer: 0.5 to 3 KB of JSON (~1.5 KB on
    average), its request of 0.3 to 1.7 KB, both keys.
    """
    body = b'{"id": "chatcmpl-%d", "choices": [{"message": {"content": "%s"}}]}' % (
        n,
        _prose(rng, rng.randint(70, 410)),
    )
    return make_entry(
        n,
        body=body,
        shared_key=key(("shared", n)),
        created_at=1_700_000_000.0 + n,
        request=StoredRequest(
            headers=(("accept", "application/json"),),
            body=b'{"model": "gpt-4o-mini", "messages": [{"content": "%s"}]}'
            % _prose(rng, rng.randint(40, 280)),
        ),
    )


# The queries and their indexes


@pytest.mark.parametrize("analyzed", [False, True])
def test_eviction_and_pruning_read_their_own_indexes(tmp_path: Path, analyzed: bool) -> None:
    """As a daemon's database is (never analyzed), and as ANALYZE would leave it."""
    path = tmp_path / "cache.db"
    with raw(path) as connection:
        migrate(connection)
        for n in range(2000):
            raw_insert(connection, key(n), created_at=float(n))
        connection.execute("UPDATE entries SET expires_at = created_at + 60 WHERE rowid % 10 = 0")
        if analyzed:
            connection.execute("ANALYZE")
    eviction = plan(path, least_recently_used_sql("?"), (500,))
    assert eviction == "SCAN entries USING INDEX entries_last_used"  # in order: no sort
    pruning = plan(path, expired_sql("?"), (1.0, 500))
    assert pruning == "SEARCH entries USING INDEX entries_expires_at (expires_at<?)"


# The totals


@pytest_twisted.ensureDeferred
async def test_the_totals_follow_every_write_whoever_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    rng = random.Random(7)
    try:
        await store.put_all([chat_entry(n, rng) for n in range(40)])
        await store.put(chat_entry(3, rng))  # replaced (INSERT OR REPLACE)
        await store.add_hits({key(4): (2, 5.0)})
        await store.delete(key(5))
        await store.prune(now=0.0)
        await store.evict(max_bytes=None, max_entries=30)  # 0 to 10 but 5
        assert totals(path)[0] == 30
        with raw(path) as connection:  # another tool: no stored_size, sized from its values
            connection.execute(
                "INSERT INTO entries (key, method, path, status, headers, body, body_size, "
                "created_at) VALUES (?, 'POST', '/v1/x', 200, x'', ?, 2, 1.0)",
                (bytes.fromhex(key("raw")), encode((), b"{}")),
            )
            connection.execute(
                "INSERT OR REPLACE INTO entries (key, method, path, status, headers, body, "
                "body_size, created_at) VALUES (?, 'POST', '/v1/x', 200, x'', ?, 4, 1.0)",
                (bytes.fromhex(key(20)), encode((), b"{}{}")),
            )
            for statement, value in (
                ("UPDATE entries SET body = ? WHERE key = ?", b"x" * 999),
                ("UPDATE entries SET stored_size = ? WHERE key = ?", 5),
                ("DELETE FROM entries WHERE key = ? OR key = ?", bytes.fromhex(key(22))),
            ):
                connection.execute(statement, (value, bytes.fromhex(key(21))))
        assert totals(path)[0] == 29  # one more, two fewer
    finally:
        await store.close()
    with raw(path) as connection:
        (sized,) = connection.execute(
            f"SELECT {SIZE_SQL} FROM entries WHERE key = ?", (bytes.fromhex(key("raw")),)
        ).fetchone()
    assert sized == ROW_OVERHEAD_BYTES + len(encode((), b"{}"))


@pytest_twisted.ensureDeferred
async def test_an_older_databases_entries_are_sized_from_their_values(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    historic_database(path, 4)
    with raw(path) as connection:
        old_values = connection.execute(
            "SELECT LENGTH(body) + LENGTH(headers) + LENGTH(request) FROM entries"
        ).fetchone()[0]
    store = opened(path)
    try:
        assert totals(path) == (1, ROW_OVERHEAD_BYTES + old_values)
        assert (await store.stats()).stored_bytes == ROW_OVERHEAD_BYTES + old_values
        await store.put(make_entry(2, created_at=5.0))
        assert totals(path) == (2, ROW_OVERHEAD_BYTES + old_values + stored_size(make_entry(2)))
        assert await store.evict(max_bytes=None, max_entries=1) == 1  # the old one, created at 1.0
        assert await store.get(key(1)) is None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_each_row_keeps_its_stored_size_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    entry = chat_entry(1, random.Random(1))
    store = opened(path)
    try:
        await store.put(make_entry(2, sample=4))
        await store.put(entry)
    finally:
        await store.close()
    with raw(path) as connection:
        rows = dict(connection.execute("SELECT key, stored_size FROM entries").fetchall())
        samples = dict(connection.execute("SELECT key, sample FROM entries").fetchall())
    assert rows[bytes.fromhex(key(1))] == stored_size(entry)
    assert samples == {bytes.fromhex(key(1)): 0, bytes.fromhex(key(2)): 4}


@pytest_twisted.ensureDeferred
async def test_stored_sizes_are_what_the_file_grows_by(tmp_path: Path) -> None:
    """The fixed overhead per row is an estimate: it must stay near what SQLite really spends."""
    path = tmp_path / "cache.db"
    rng = random.Random(3)
    entries = [chat_entry(n, rng) for n in range(3000)]
    store = opened(path)
    try:
        await store.put(make_entry("first"))
        with raw(path) as connection:
            before = used_bytes(connection)
        for start in range(0, len(entries), 250):
            await store.put_all(entries[start : start + 250])
        stored = (await store.stats()).stored_bytes - stored_size(make_entry("first"))
    finally:
        await store.close()
    with raw(path) as connection:
        connection.execute("DELETE FROM changes")  # trimmed after five minutes anyway
        grown = used_bytes(connection) - before
    # Since schema version 7 each row also holds its search text (2.6 KB here,
    # uncompressed), which the stored size counts; rows of 4 to 8 KB then take
    # an 8 KiB page each, so the file grows by up to 45% more than the values
    # (15% before, when these rows were 1 to 4 KB).
    assert 0.9 < grown / stored < 1.45, (grown, stored)


def used_bytes(connection: sqlite3.Connection) -> int:
    """Bytes of the pages in use: the file's, less its free pages, WAL included."""
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


# Small transactions


@pytest_twisted.ensureDeferred
async def test_an_eviction_commits_a_batch_at_a_time_and_puts_go_between(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorded(store)
    try:
        await store.put_all([make_entry(n, created_at=float(n)) for n in range(2 * BATCH + 300)])
        changes.clear()
        evicted = store.evict(max_bytes=None, max_entries=100)
        late = make_entry("late", created_at=10_000.0)
        put = store.put(late)
        order: list[str] = []
        put.addCallback(lambda _: order.append("put"))
        evicted.addCallback(lambda count: order.append(f"evicted {count}"))
        await gatherResults([put, evicted])
        assert order == ["put", f"evicted {2 * BATCH + 201}"]
        assert [(c.kind, len(c.keys)) for c in changes] == [
            (ChangeKind.PURGE, BATCH),
            (ChangeKind.PUT, 1),
            (ChangeKind.PURGE, BATCH),
            (ChangeKind.PURGE, 201),
        ]
        assert await store.get(late.key) == late
        assert totals(path)[0] == 100
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_cancelling_an_eviction_stops_it_after_the_transaction_under_way(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorded(store)
    try:
        await store.put_all([make_entry(n, created_at=float(n)) for n in range(3 * BATCH)])
        changes.clear()
        evicted = store.evict(max_bytes=None, max_entries=0)
        evicted.cancel()
        with pytest.raises(CancelledError):
            await evicted
        assert (await store.stats()).entries == 2 * BATCH  # counts the write under way
        assert [(c.kind, len(c.keys)) for c in changes] == [(ChangeKind.PURGE, BATCH)]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_closing_the_store_stops_an_eviction_between_transactions(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    await store.put_all([make_entry(n, created_at=float(n)) for n in range(3 * BATCH)])
    evicted = store.evict(max_bytes=None, max_entries=0)
    await store.close()
    assert await evicted == BATCH
    assert totals(path)[0] == 2 * BATCH


@pytest_twisted.ensureDeferred
async def test_a_read_only_database_refuses_to_evict_or_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    await store.put_all([make_entry(n, expires_at=1.0) for n in range(3)])
    await store.close()
    connect_read_only(monkeypatch)
    store = opened(path)
    try:
        with pytest.raises(StoreError, match="read-only"):
            await store.evict(max_bytes=None, max_entries=1)
        with pytest.raises(StoreError, match="read-only"):
            await store.prune(now=2.0)
        assert (await store.stats()).entries == 3
    finally:
        await store.close()


# The WAL


async def largest_wal(path: Path, seconds: float) -> tuple[int, int]:
    """The WAL's largest size under back-to-back commits for ``seconds``, and the bytes put."""
    wal = Path(f"{path}-wal")
    store = opened(path)
    largest = written = n = 0
    try:
        deadline = reactor.seconds() + seconds
        while reactor.seconds() < deadline:  # the next commit as soon as one is done
            batch = [make_entry(n + i, body=bytes(range(256)) * 2) for i in range(4)]
            n += len(batch)
            await gatherResults([store.put(entry) for entry in batch])
            written += sum(len(entry.body) for entry in batch)
            largest = max(largest, wal.stat().st_size)
    finally:
        await store.close()
    return largest, written


@pytest_twisted.ensureDeferred
async def test_the_wal_starts_over_under_a_steady_stream_of_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Checkpoints on a reader never quite catch up with commits that never
    pause, and the WAL only grows; once it passes the limit the store
    checkpoints between two writes, and the WAL starts over, cut back.
    """
    monkeypatch.setattr(_sqlite, "WAL_LIMIT_BYTES", 1 << 20)
    monkeypatch.setattr(_adbapi, "WATCH_SECONDS", 0.1)  # a second's writes, in a tenth
    grown, _ = await largest_wal(tmp_path / "a.db", 1.5)
    monkeypatch.setattr(_sqlite.SQLiteDialect, "log_too_large", lambda self: False)
    unchecked, _ = await largest_wal(tmp_path / "b.db", 1.5)
    assert grown * 4 < unchecked
