"""
The SQLite cache store, against real database files and the real reactor.

Every test closes its store, so that adbapi's thread pool is shut down before
the next one starts. Hit counters are flushed explicitly, never waited for.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from stasis.model import TokenUsage
from stasis.store import Entry, SQLiteStore, StoreError, StoreStats
from stasis.store._codec import decode, encode
from stasis.store._schema import _V1, SCHEMA_VERSION
from stasis.store._sqlite import WRITE_RETRY_SECONDS
from tests.waiting import wait_for

GZIP_MAGIC = b"\x1f\x8b"


def key(n: int | str) -> str:
    """A cache key as the proxy makes them: 64 lowercase hex digits."""
    return hashlib.sha256(str(n).encode()).hexdigest()


def make_entry(n: int | str = 0, **fields: Any) -> Entry:
    values: dict[str, Any] = {
        "key": key(n),
        "status": 200,
        "headers": ((b"content-type", b"application/json"),),
        "body": b'{"answer": 42}',
        "created_at": 1_700_000_000.0,
        "method": "POST",
        "path": "/v1/chat/completions",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "usage": TokenUsage(input=10, output=5, total=15),
    }
    values.update(fields)
    return Entry(**values)


def open_store(path: Path, clock: Any = reactor) -> SQLiteStore:
    store = SQLiteStore(str(path), clock)
    store.open()
    return store


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection beside the store's, in autocommit mode."""
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def meta(path: Path) -> dict[str, Any]:
    with raw(path) as connection:
        return dict(connection.execute("SELECT name, value FROM meta").fetchall())


class ShiftedReactor:
    """
    The real reactor, whose ``seconds()`` the test can move forward.

    ``task.Clock`` cannot stand in: the store hands its reactor to adbapi as
    ``cp_reactor``, which needs ``callWhenRunning``, ``addSystemEventTrigger``
    and ``callFromThread``.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return float(reactor.seconds()) + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


# Opening


@pytest_twisted.ensureDeferred
async def test_open_creates_the_current_schema_and_secret(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = open_store(path)
    try:
        assert len(store.secret) == 32
        assert store.writable
    finally:
        await store.close()
    values = meta(path)
    assert int(values["schema_version"]) == SCHEMA_VERSION
    assert bytes(values["secret"]) == store.secret
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest_twisted.ensureDeferred
async def test_reopen_keeps_secret_and_databases_differ(tmp_path: Path) -> None:
    first = open_store(tmp_path / "a.db")
    await first.close()
    again = open_store(tmp_path / "a.db")
    other = open_store(tmp_path / "b.db")
    try:
        assert again.secret == first.secret
        assert other.secret != first.secret
        assert len(other.secret) == 32
    finally:
        await again.close()
        await other.close()
    assert int(meta(tmp_path / "a.db")["schema_version"]) == SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    await open_store(path).close()
    with raw(path) as connection:
        connection.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    store = SQLiteStore(str(path), reactor)
    with pytest.raises(StoreError, match="upgrade"):
        store.open()
    await store.close()
    assert meta(path)["schema_version"] == str(SCHEMA_VERSION + 1)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    junk = b"this is not a SQLite database\n" * 200
    path.write_bytes(junk)
    with pytest.raises(StoreError, match=r"cache\.db"):
        SQLiteStore(str(path), reactor).open()
    assert path.read_bytes() == junk


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-dir"):
        SQLiteStore(str(tmp_path / "no-such-dir" / "cache.db"), reactor).open()


@pytest_twisted.ensureDeferred
async def test_operations_before_open_raise_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "cache.db"), reactor)
    with pytest.raises(StoreError, match="not open"):
        store.get(key(0))
    await store.close()


# Entries


@pytest_twisted.ensureDeferred
async def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        entry = Entry(
            key=key("all"),
            status=429,
            headers=(
                (b"Content-Type", b"text/plain; charset=iso-8859-1"),
                (b"set-cookie", b"a=1"),
                (b"X-Caf\xe9", b"r\xe9sum\xe9 \xff\x00\x7f"),
                (b"set-cookie", b"b=2"),
                (b"set-cookie", b"a=3"),
            ),
            body=bytes(range(256)) * 3,
            created_at=1_700_000_123.456789,
            method="PUT",
            path="/model/anthropic.claude-3/invoke?x=1",
            provider="bedrock",
            model=None,
            namespace="team-a",
            usage=TokenUsage(input=1234, output=56789, total=58023),
            expires_at=1_700_086_523.25,
            last_hit_at=1_700_000_200.5,
            hit_count=7,
        )
        await store.put(entry)
        assert await store.get(entry.key) == entry
        assert await store.get(key("unknown")) is None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_empty_and_large_bodies(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        empty = make_entry("empty", body=b"", headers=())
        large = make_entry("large", body=random.Random(5).randbytes(5 * 1024 * 1024))
        await store.put(empty)
        await store.put(large)
        assert await store.get(empty.key) == empty
        got = await store.get(large.key)
        assert got is not None
        assert got.body == large.body
    finally:
        await store.close()
    with raw(tmp_path / "cache.db") as connection:
        sizes = dict(
            connection.execute(
                "SELECT key, body_size FROM entries WHERE key IN (?, ?)",
                (bytes.fromhex(empty.key), bytes.fromhex(large.key)),
            ).fetchall()
        )
    assert sizes == {bytes.fromhex(empty.key): 0, bytes.fromhex(large.key): 5 * 1024 * 1024}


@pytest_twisted.ensureDeferred
async def test_body_and_headers_are_stored_compressed_with_decoded_size(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    body = b'{"choices": [{"message": {"content": "Paris"}}]}\n' * 2000
    store = open_store(path)
    try:
        await store.put(make_entry(1, body=body))
    finally:
        await store.close()
    with raw(path) as connection:
        stored, headers, size = connection.execute(
            "SELECT body, headers, body_size FROM entries WHERE key = ?", (bytes.fromhex(key(1)),)
        ).fetchone()
    assert len(stored) < len(body) // 10
    assert headers == b""  # packed with the body
    assert decode(stored, headers) == (make_entry(1).headers, body)
    assert size == len(body)


@pytest_twisted.ensureDeferred
async def test_put_replaces_entry_of_same_key(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        await store.put(make_entry(1, body=b"old", status=500))
        store.record_hit(key(1), 1_700_000_050.0)
        await store.flush_hits()
        fresh = make_entry(1, body=b"new", status=200, created_at=1_700_000_100.0)
        await store.put(fresh)
        assert await store.get(key(1)) == fresh  # hits of the old answer are gone too
        assert (await store.stats()).entries == 1
    finally:
        await store.close()


# Hits and stats


@pytest_twisted.ensureDeferred
async def test_hits_accumulate_and_count_saved_tokens(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        await store.put(make_entry(1, usage=TokenUsage(100, 20, 120), created_at=1000.0))
        await store.put(make_entry(2, usage=TokenUsage(7, 3, 10), created_at=3000.0))
        await store.put(make_entry(3, usage=TokenUsage(1, 1, 2), created_at=2000.0))

        assert await store.flush_hits() == 0
        store.record_hit(key(1), 5000.0)
        store.record_hit(key(1), 5001.0)
        store.record_hit(key(2), 5002.0)
        store.record_hit(key("gone"), 5003.0)  # no such entry: ignored
        assert await store.flush_hits() == 2

        one = await store.get(key(1))
        assert one is not None
        assert (one.hit_count, one.last_hit_at) == (2, 5001.0)

        store.record_hit(key(1), 6000.0)
        await store.flush_hits()
        one = await store.get(key(1))
        two = await store.get(key(2))
        three = await store.get(key(3))
        assert one is not None and two is not None and three is not None
        assert (one.hit_count, one.last_hit_at) == (3, 6000.0)
        assert (two.hit_count, two.last_hit_at) == (1, 5002.0)
        assert (three.hit_count, three.last_hit_at) == (0, None)

        stats = await store.stats()
        assert stats.entries == 3
        assert stats.tokens_saved == 120 * 3 + 10 * 1 + 2 * 0
        assert (stats.oldest, stats.newest) == (1000.0, 3000.0)
        assert stats.db_size_bytes > 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_stats_of_empty_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        stats = await store.stats()
        assert stats == StoreStats(
            entries=0, tokens_saved=0, db_size_bytes=stats.db_size_bytes, oldest=None, newest=None
        )
        assert stats.db_size_bytes > 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_close_flushes_pending_hits(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = open_store(path)
    try:
        await store.put(make_entry(1))
        store.record_hit(key(1), 42.0)
    finally:
        await store.close()
    store = open_store(path)
    try:
        entry = await store.get(key(1))
        assert entry is not None
        assert (entry.hit_count, entry.last_hit_at) == (1, 42.0)
    finally:
        await store.close()


# Deleting, pruning, listing


@pytest_twisted.ensureDeferred
async def test_delete_reports_whether_it_deleted(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        await store.put(make_entry(1))
        await store.put(make_entry(2))
        assert await store.delete(key(1)) is True
        assert await store.delete(key(1)) is False
        assert await store.delete(key("never")) is False
        assert await store.get(key(1)) is None
        assert await store.get(key(2)) is not None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_prune_removes_only_older_entries(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        for n, created in enumerate([100.0, 150.0, 200.0, 300.0]):
            await store.put(make_entry(n, created_at=created))
        assert await store.prune(200.0) == 2
        assert await store.prune(200.0) == 0
        remaining = await store.list_entries()
        assert [e.created_at for e in remaining] == [300.0, 200.0]
        assert await store.prune(1e12) == 2
        assert (await store.stats()).entries == 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_list_entries_newest_first_with_limit_and_offset(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cache.db")
    try:
        order = [3, 1, 4, 0, 2]
        for n in order:
            await store.put(make_entry(n, created_at=1000.0 + n))

        def created(entries: list[Entry]) -> list[float]:
            return [e.created_at for e in entries]

        assert created(await store.list_entries()) == [1004.0, 1003.0, 1002.0, 1001.0, 1000.0]
        assert created(await store.list_entries(limit=2)) == [1004.0, 1003.0]
        assert created(await store.list_entries(limit=2, offset=2)) == [1002.0, 1001.0]
        assert created(await store.list_entries(limit=2, offset=4)) == [1000.0]
        assert await store.list_entries(offset=5) == []
        listed = await store.list_entries(limit=1)
        assert listed == [await store.get(key(4))]
    finally:
        await store.close()


# Failing writes and read-only databases


def refuse(path: Path, operation: str) -> None:
    """Make every ``operation`` on the entries table fail, as a full disk would."""
    with raw(path) as connection:
        connection.execute(
            f"CREATE TRIGGER refuse_{operation.lower()} BEFORE {operation} ON entries "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


def allow(path: Path, operation: str) -> None:
    with raw(path) as connection:
        connection.execute(f"DROP TRIGGER refuse_{operation.lower()}")


@pytest_twisted.ensureDeferred
async def test_failed_write_makes_store_unwritable_for_a_while(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    clock = ShiftedReactor()
    store = open_store(path, clock)
    try:
        assert store.writable
        refuse(path, "INSERT")
        with pytest.raises(sqlite3.Error, match="full"):
            await store.put(make_entry(1))
        assert not store.writable

        clock.offset += WRITE_RETRY_SECONDS - 1
        assert not store.writable
        clock.offset += 1
        assert store.writable

        # Still failing: the store gives up for another minute.
        with pytest.raises(sqlite3.Error):
            await store.put(make_entry(1))
        assert not store.writable

        # A write that works makes it writable at once.
        allow(path, "INSERT")
        await store.put(make_entry(1))
        assert store.writable
        assert await store.get(key(1)) == make_entry(1)

        # Deletes, prunes and hit flushes count as writes too.
        refuse(path, "DELETE")
        with pytest.raises(sqlite3.Error):
            await store.delete(key(1))
        assert not store.writable
        clock.offset += WRITE_RETRY_SECONDS
        assert store.writable
        with pytest.raises(sqlite3.Error):
            await store.prune(1e12)
        assert not store.writable
        allow(path, "DELETE")
        assert await store.delete(key(1)) is True
    finally:
        await store.close()


def connect_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Open every SQLite database read-only, as SQLite itself does when the file
    cannot be opened for writing. (chmod cannot show this: the tests run as root.)
    """
    real_connect = sqlite3.connect

    def connect(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        uri = Path(database).absolute().as_uri() + "?mode=ro"
        return real_connect(uri, *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


async def check_serves_read_only(path: Path, secret: bytes) -> None:
    store = open_store(path)
    try:
        assert not store.writable
        assert store.secret == secret
        assert await store.get(key(1)) == make_entry(1)
        assert (await store.stats()).entries == 1
        store.record_hit(key(1), 99.0)
        assert await store.flush_hits() == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.put(make_entry(2))
        assert not store.writable
    finally:
        await store.close()


async def make_database(path: Path) -> bytes:
    store = open_store(path)
    try:
        await store.put(make_entry(1))
    finally:
        await store.close()
    return store.secret


@pytest_twisted.ensureDeferred
async def test_read_only_database_serves_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    secret = await make_database(path)
    connect_read_only(monkeypatch)
    await check_serves_read_only(path, secret)


@pytest_twisted.ensureDeferred
async def test_read_only_database_in_rollback_journal_mode_serves_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    secret = await make_database(path)
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    connect_read_only(monkeypatch)
    await check_serves_read_only(path, secret)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
async def test_read_only_database_of_newer_schema_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_mode: str
) -> None:
    path = tmp_path / "cache.db"
    await make_database(path)
    with raw(path) as connection:
        connection.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connect_read_only(monkeypatch)
    with pytest.raises(StoreError, match="upgrade"):
        SQLiteStore(str(path), reactor).open()


def test_read_only_empty_database_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"")
    connect_read_only(monkeypatch)
    with pytest.raises(StoreError, match="read-only"):
        SQLiteStore(str(path), reactor).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
@pytest_twisted.ensureDeferred
async def test_read_only_file_serves_hits(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    secret = await make_database(path)
    path.chmod(0o444)
    try:
        await check_serves_read_only(path, secret)
    finally:
        path.chmod(0o644)


# Against a model


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("seed", range(6))
async def test_random_operations_match_a_dict(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(tmp_path / "cache.db")
    model: dict[str, Entry] = {}
    keys = [key(n) for n in range(6)]
    try:
        for step in range(80):
            k = rng.choice(keys)
            operation = rng.choice(["put", "put", "get", "get", "delete", "list"])
            if operation == "put":
                entry = make_entry(
                    step,
                    key=k,
                    status=rng.choice([200, 201, 400, 429, 500]),
                    headers=tuple(
                        (rng.randbytes(rng.randint(1, 8)), rng.randbytes(rng.randint(0, 20)))
                        for _ in range(rng.randint(0, 4))
                    ),
                    body=rng.randbytes(rng.randint(0, 3000)),
                    created_at=float(step),
                    model=rng.choice([None, "gpt-4o", "claude-3-5-sonnet"]),
                    namespace=rng.choice(["", "a", "b"]),
                    usage=TokenUsage(rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 99)),
                    expires_at=rng.choice([None, float(step + 60)]),
                )
                await store.put(entry)
                model[k] = entry
            elif operation == "get":
                assert await store.get(k) == model.get(k), f"seed {seed}, step {step}"
            elif operation == "delete":
                assert await store.delete(k) is (k in model), f"seed {seed}, step {step}"
                model.pop(k, None)
            else:
                newest_first = sorted(model.values(), key=lambda e: e.created_at, reverse=True)
                assert await store.list_entries() == newest_first, f"seed {seed}, step {step}"
        for k in keys:
            assert await store.get(k) == model.get(k)
        assert (await store.stats()).entries == len(model)
    finally:
        await store.close()


# Pure helpers

header_pairs = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(header_pairs)
def test_headers_and_body_round_trip_through_the_codec(pairs: list[tuple[bytes, bytes]]) -> None:
    headers = tuple(pairs)
    for body in (b"", b"\x00binary\x00", b'{"id": "chatcmpl-1", "object": "chat.completion"}'):
        assert decode(encode(headers, body), b"") == (headers, body)


def test_an_llm_answer_packs_smaller_than_gzip() -> None:
    answer = (
        b'{"id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1700000000, '
        b'"model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "message": {"role": '
        b'"assistant", "content": "Paris is the capital of France.", "refusal": null}, '
        b'"logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 14, '
        b'"completion_tokens": 8, "total_tokens": 22}}'
    )
    headers = ((b"content-type", b"application/json"), (b"x-request-id", b"req_0a1b2c"))
    assert len(encode(headers, answer)) < 0.8 * len(gzip.compress(answer))


@pytest_twisted.ensureDeferred
async def test_a_version_1_database_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with raw(path) as connection:
        connection.executescript(_V1)
        connection.execute("INSERT INTO meta VALUES ('secret', ?)", (b"k" * 32,))
        connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        connection.execute(
            "INSERT INTO entries (key, method, path, status, headers, body, body_size, created_at)"
            " VALUES (?, 'POST', '/v1/chat/completions', 200, '[]', ?, 2, 1.0)",
            (bytes.fromhex(key(1)), gzip.compress(b"{}")),
        )
    store = open_store(path)
    try:
        assert store.secret == b"k" * 32
        entry = await store.get(key(1))
        assert entry is not None
        assert (entry.body, entry.timeline) == (b"{}", None)
    finally:
        await store.close()
    assert int(meta(path)["schema_version"]) == SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_a_stream_timeline_round_trips(tmp_path: Path) -> None:
    timeline = tuple((i * 37, i * 250) for i in range(1, 5000))
    store = open_store(tmp_path / "s.db")
    try:
        await store.put(make_entry(7, timeline=timeline))
        await store.put(make_entry(8))
        streamed, plain = await store.get(key(7)), await store.get(key(8))
        assert streamed is not None and plain is not None
        assert streamed.timeline == timeline
        assert plain.timeline is None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_puts_made_while_a_commit_runs_are_committed_together(tmp_path: Path) -> None:
    store = open_store(tmp_path / "g.db")
    try:
        first = store.put(make_entry(100))
        rest = [store.put(make_entry(n)) for n in range(101, 120)]
        await first
        for stored in rest:
            await stored
        found = [await store.get(key(n)) for n in range(100, 120)]
        assert all(entry is not None for entry in found)
        assert (await store.stats()).entries == 20
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_put_after_close_fails_instead_of_hanging(tmp_path: Path) -> None:
    store = open_store(tmp_path / "c.db")
    await store.close()
    with pytest.raises(StoreError):
        await store.put(make_entry(1))


# The proxy answers a miss without waiting for its commit; what must see the
# entries put so far waits for them instead.


@pytest_twisted.ensureDeferred
async def test_stats_and_listings_see_puts_not_yet_committed(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        for n in range(5):
            store.put(make_entry(n, created_at=1_700_000_000.0 + n))  # not awaited
        assert (await store.stats()).entries == 5
        store.put(make_entry(5, created_at=1_700_000_005.0))
        listed = await store.list_entries(limit=10)
        assert [entry.key for entry in listed] == [key(n) for n in range(5, -1, -1)]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_delete_after_an_uncommitted_put_is_not_undone_by_it(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    store = open_store(path)
    try:
        store.put(make_entry(0))
        store.put(make_entry(1))  # queued behind the first put's commit
        assert await store.delete(key(1)) is True
        assert await store.get(key(1)) is None
        assert await store.prune(created_before=2e9) == 1
    finally:
        await store.close()
    with raw(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)


@pytest_twisted.ensureDeferred
async def test_close_commits_the_puts_still_under_way(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = open_store(path)
    for n in range(10):
        store.put(make_entry(n))  # the first commits, the rest are queued behind it
    await store.close()
    with raw(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (10,)


def rows_in_the_database_file(path: Path, scratch: Path) -> int:
    """Rows in the main file alone, as if the WAL beside it were lost."""
    copy = scratch / "main-file-only.db"
    copy.write_bytes(path.read_bytes())
    try:
        with raw(copy) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    except sqlite3.DatabaseError:
        return -1  # copied in the middle of a checkpoint
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


@pytest_twisted.ensureDeferred
async def test_commits_are_checkpointed_into_the_database_file_beside_them(
    tmp_path: Path,
) -> None:
    """No commit copies the WAL back (that would hold its answer); a reader does, every second."""
    path = tmp_path / "w.db"
    store = open_store(path)
    try:
        for n in range(50):
            await store.put(make_entry(n))
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        await wait_for(lambda: rows_in_the_database_file(path, scratch) == 50, deadline=5.0)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_another_processes_commits_are_checkpointed_too(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = open_store(path)
    try:
        await store.put(make_entry(1))
        await wait_for(lambda: rows_in_the_database_file(path, scratch) == 1, deadline=5.0)
        with raw(path) as other:  # it never checkpoints, and is not the last to close
            other.execute("PRAGMA wal_autocheckpoint=0")
            other.execute("CREATE TEMP TABLE copy AS SELECT * FROM entries")
            other.execute("UPDATE copy SET key = ?", (bytes.fromhex(key(2)),))
            other.execute("INSERT INTO entries SELECT * FROM copy")
            await wait_for(lambda: rows_in_the_database_file(path, scratch) == 2, deadline=5.0)
    finally:
        await store.close()
