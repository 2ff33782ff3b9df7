"""
The store on SQLite: what the contract suite cannot show on every store alike.

Opening and migrating real files, read-only and locked databases, failing
writes, the bytes in the database, checkpoints, and other processes' changes
seen through the change log (another store on the same file, and a raw
``sqlite3`` client). Every test closes its stores, so that adbapi's thread
pools are shut down before the next test starts.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from stasis.model import Change, ChangeKind, StoredRequest, TokenUsage
from stasis.store import (
    EVERY_ENTRY,
    EntryFilter,
    Store,
    StoreError,
    _changelog,
    _sqlite,
    open_store,
)
from stasis.store._adbapi import WRITE_RETRY_SECONDS, AdbapiStore
from stasis.store._changelog import KEEP_SECONDS, TRIM_EVERY_SECONDS, ChangeLog
from stasis.store._codec import decode, encode, encode_request
from stasis.store._schema import SCHEMA_VERSION, SchemaError
from stasis.store._schema_sqlite import migrate, migrations, split_statements
from stasis.store._sqlite import SQLiteDialect
from tests.store_support import ShiftedReactor, key, make_entry, merged, raw
from tests.waiting import wait_for

#: Another process's change is published within about a second; the deadline
#: leaves room for a machine busy with other tests.
SEEN_WITHIN = 5.0

# The schema as stasis 1 and 2 wrote it, verbatim: what existing databases hold.
HISTORIC_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    key           BLOB PRIMARY KEY,
    namespace     TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT '',
    model         TEXT,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    headers       BLOB NOT NULL,
    body          BLOB NOT NULL,
    body_size     INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens  INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    expires_at    REAL,
    last_hit_at   REAL,
    hit_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_created_at ON entries (created_at);
"""
HISTORIC_V2 = "ALTER TABLE entries ADD COLUMN timeline BLOB"


def opened(path: Path, clock: Any = reactor) -> Store:
    store = open_store(str(path), clock)
    store.open()
    return store


def meta(path: Path) -> dict[str, Any]:
    with raw(path) as connection:
        return dict(connection.execute("SELECT name, value FROM meta").fetchall())


def logged(path: Path) -> list[tuple[str, str]]:
    """The change log's rows, oldest first: (kind, key)."""
    with raw(path) as connection:
        rows = connection.execute("SELECT kind, key FROM changes ORDER BY seq").fetchall()
    return [(kind, bytes(k).hex()) for kind, k in rows]


def raw_insert(connection: sqlite3.Connection, digest: str, created_at: float = 1.0) -> None:
    """An entry written by hand, as a script or an older tool might."""
    connection.execute(
        "INSERT INTO entries (key, method, path, status, headers, body, body_size, created_at)"
        " VALUES (?, 'POST', '/v1/chat/completions', 200, x'', ?, 2, ?)",
        (bytes.fromhex(digest), encode((), b"{}"), created_at),
    )


def recorder(store: Store) -> list[Change]:
    changes: list[Change] = []
    store.changes.subscribe(changes.append)
    return changes


def external(changes: list[Change]) -> list[Change]:
    return [change for change in changes if not change.local]


async def seen(changes: list[Change], condition: Callable[[list[Change]], bool]) -> None:
    """Wait until the external changes published so far satisfy ``condition``."""
    await wait_for(lambda: condition(external(changes)), deadline=SEEN_WITHIN)


def names(digest: str) -> Callable[[list[Change]], bool]:
    return lambda changes: any(digest in change.keys for change in changes)


# Opening


@pytest_twisted.ensureDeferred
async def test_open_creates_the_current_schema_the_secret_and_the_change_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        assert len(store.secret) == 32
        assert store.writable
        assert store.location == str(path)
    finally:
        await store.close()
    values = meta(path)
    assert int(values["schema_version"]) == SCHEMA_VERSION == 7
    assert bytes(values["secret"]) == store.secret
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA page_size").fetchone()[0] == 8192
        objects = connection.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    assert objects == [
        ("table", "changes"),
        ("trigger", "changes_after_delete"),
        ("trigger", "changes_after_insert"),
        ("trigger", "changes_after_update"),
        ("table", "claims"),
        ("table", "entries"),
        ("index", "entries_created_at"),
        ("index", "entries_expires_at"),
        ("index", "entries_last_used"),
        ("index", "entries_unsearchable"),
        ("table", "meta"),
        ("table", "totals"),
        ("trigger", "totals_after_delete"),
        ("trigger", "totals_after_insert"),
        ("trigger", "totals_after_update"),
        ("trigger", "totals_before_insert"),
    ]


@pytest_twisted.ensureDeferred
async def test_reopening_keeps_the_secret_and_each_database_has_its_own(
    tmp_path: Path,
) -> None:
    first = opened(tmp_path / "a.db")
    await first.close()
    again = opened(tmp_path / "a.db")
    other = opened(tmp_path / "b.db")
    try:
        assert again.secret == first.secret
        assert other.secret != first.secret
    finally:
        await again.close()
        await other.close()


def test_the_schema_files_are_split_at_complete_statements_only() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (a TEXT DEFAULT 'x;y');
        CREATE TRIGGER t_log AFTER INSERT ON t
        BEGIN
            INSERT INTO t (a) SELECT 'one;' WHERE 0;
            INSERT INTO t (a) SELECT 'two' WHERE 0;
        END;
        -- trailing words
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    connection = sqlite3.connect(":memory:")
    for statement in statements:
        connection.execute(statement)
    connection.execute("INSERT INTO t DEFAULT VALUES")
    assert connection.execute("SELECT a FROM t").fetchall() == [("x;y",)]
    with pytest.raises(SchemaError, match="final ';'"):
        split_statements("CREATE TABLE u (a);\nCREATE TABLE v (b)")


def test_the_package_holds_one_schema_file_per_version() -> None:
    found = migrations()
    assert [(m.version, m.name) for m in found] == [
        (1, "0001-entries.sql"),
        (2, "0002-timeline.sql"),
        (3, "0003-changes.sql"),
        (4, "0004-requests.sql"),
        (5, "0005-policy.sql"),
        (6, "0006-claims.sql"),
        (7, "0007-search.sql"),
    ]
    assert [len(m.statements) for m in found] == [3, 1, 4, 2, 12, 1, 2]


#: The request a version 4 entry keeps, packed as version 4 packed it (no ignore rules).
HISTORIC_REQUEST = StoredRequest(headers=(("accept", "application/json"),), body=b'{"m": 1}')


def historic_database(path: Path, version: int) -> None:
    """A database as stasis ``version`` left it, with one entry of that version's format."""
    with raw(path) as connection:
        connection.executescript(HISTORIC_V1)
        if version >= 2:
            connection.execute(HISTORIC_V2)
        for migration in migrations()[2:version]:  # versions 3 on, as their files say
            for statement in migration.statements:
                connection.execute(statement)
        connection.execute("INSERT INTO meta VALUES ('secret', ?)", (b"k" * 32,))
        connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        if version == 1:  # a gzip body, headers as JSON beside it
            value, headers = gzip.compress(b"{}"), b'[["content-type", "application/json"]]'
        else:
            value, headers = encode(((b"content-type", b"application/json"),), b"{}"), b""
        connection.execute(
            "INSERT INTO entries (key, method, path, status, headers, body, body_size, created_at)"
            " VALUES (?, 'POST', '/v1/chat/completions', 200, ?, ?, 2, 1.0)",
            (bytes.fromhex(key(1)), headers, value),
        )
        if version >= 4:
            connection.execute(
                "UPDATE entries SET request = ?, shared_key = ?",
                (encode_request(HISTORIC_REQUEST), bytes.fromhex(key("shared 1"))),
            )
        if version >= 3:
            connection.execute("DELETE FROM changes")  # the set-up is nobody's change


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("version", [1, 2, 4])
async def test_an_older_database_is_migrated_and_keeps_its_entries(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    historic_database(path, version)
    store = opened(path)
    try:
        assert store.secret == b"k" * 32
        entry = await store.get(key(1))
        assert entry is not None
        assert (entry.body, entry.headers, entry.timeline, entry.sample) == (
            b"{}",
            ((b"content-type", b"application/json"),),
            None,
            0,
        )
        if version >= 4:
            assert (await store.get(key(1), request=True)) == evolve(
                entry, request=HISTORIC_REQUEST
            )
        await store.put(make_entry(2))
        await store.delete(key(1))
    finally:
        await store.close()
    assert int(meta(path)["schema_version"]) == SCHEMA_VERSION
    assert logged(path) == [("put", key(2)), ("delete", key(1))]


@pytest_twisted.ensureDeferred
async def test_a_migration_that_fails_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    historic_database(path, 2)
    with raw(path) as connection:  # in the way of version 3's table
        connection.execute("CREATE TABLE changes (something_else TEXT)")
    with pytest.raises(StoreError, match="already exists"):
        opened(path)
    assert meta(path)["schema_version"] == "2"
    with raw(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (1,)
        triggers = connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert triggers.fetchall() == []


@pytest_twisted.ensureDeferred
async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    await opened(path).close()
    with raw(path) as connection:
        connection.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(
        StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer .*upgrade stasis"
    ):
        opened(path)
    assert meta(path)["schema_version"] == str(SCHEMA_VERSION + 1)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    junk = b"this is not a SQLite database\n" * 200
    path.write_bytes(junk)
    with pytest.raises(StoreError, match=r"cache\.db"):
        opened(path)
    assert path.read_bytes() == junk


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-dir"):
        opened(tmp_path / "no-such-dir" / "cache.db")


@pytest_twisted.ensureDeferred
async def test_a_store_not_open_fails_every_call_with_store_error(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "cache.db"), reactor)
    for call in (
        lambda: store.get(key(1)),
        lambda: store.put(make_entry(1)),
        lambda: store.delete(key(1)),
        lambda: store.stats(),
        lambda: store.purge(EVERY_ENTRY),
    ):
        with pytest.raises(StoreError, match="not open"):
            await call()
    store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.put(make_entry(1))


@pytest_twisted.ensureDeferred
async def test_close_commits_the_puts_still_under_way(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = opened(path)
    puts = [store.put(make_entry(n)) for n in range(10)]  # one commits, the rest queue
    await store.close()
    assert all(put.called for put in puts)
    with raw(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM entries").fetchone() == (10,)


# The factory


def test_open_store_makes_an_sqlite_store_of_a_path_without_opening_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = open_store(str(path), reactor)
    assert isinstance(store, AdbapiStore)
    assert store.dialect == SQLiteDialect(str(path))
    assert not path.exists()


def test_a_url_of_an_unknown_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown database URL scheme 'mysql'"):
        open_store("mysql://user@host/db", reactor)


# What is in the database


@pytest_twisted.ensureDeferred
async def test_the_answer_is_stored_compressed_with_its_decoded_size(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    body = b'{"choices": [{"message": {"content": "Paris"}}]}\n' * 2000
    store = opened(path)
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
async def test_the_log_holds_each_stored_or_removed_key_and_no_hit(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    started = int(time.time())
    try:
        await gatherResults([store.put(make_entry(n)) for n in (1, 2)])
        await store.put(make_entry(1, body=b"replaced"))
        await store.add_hits({key(2): (5, 99.0)})
        await store.delete(key(1))
        await store.purge(EVERY_ENTRY)
    finally:
        await store.close()
    assert logged(path) == [
        ("put", key(1)),
        ("put", key(2)),
        ("put", key(1)),  # a replacement is one put: REPLACE fires no delete trigger
        ("delete", key(1)),
        ("delete", key(2)),  # by a purge: the log cannot tell, and need not
    ]
    with raw(path) as connection:
        (oldest, newest) = connection.execute("SELECT MIN(at), MAX(at) FROM changes").fetchone()
    assert started - 1 <= oldest <= newest <= time.time() + 1


@pytest_twisted.ensureDeferred
async def test_puts_asked_for_during_a_commit_are_committed_together(tmp_path: Path) -> None:
    store = opened(tmp_path / "g.db")
    changes = recorder(store)
    try:
        await gatherResults([store.put(make_entry(n)) for n in range(20)])
        # The first put's commit began at once; the 19 asked for meanwhile made one more.
        assert [len(change.keys) for change in changes] == [1, 19]
        assert (await store.stats()).entries == 20
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_scan_keys_visits_on_a_database_thread(tmp_path: Path) -> None:
    store = opened(tmp_path / "cache.db")
    threads: set[int] = set()
    try:
        await gatherResults([store.put(make_entry(n)) for n in range(300)])
        await store.scan_keys(lambda _: threads.add(threading.get_ident()))
    finally:
        await store.close()
    assert threads and threading.get_ident() not in threads


# Writes that fail, read-only and locked databases


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
async def test_a_failed_write_makes_the_store_unwritable_for_a_minute(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    clock = ShiftedReactor()
    store = opened(path, clock)
    try:
        assert store.writable
        refuse(path, "INSERT")
        with pytest.raises(StoreError, match=r"cannot write .* full"):
            await store.put(make_entry(1))
        assert not store.writable

        clock.offset += WRITE_RETRY_SECONDS - 1
        assert not store.writable
        clock.offset += 1
        assert store.writable

        # Still failing: the store gives up for another minute.
        with pytest.raises(StoreError):
            await store.put(make_entry(1))
        assert not store.writable

        # A write that works makes it writable at once.
        allow(path, "INSERT")
        await store.put(make_entry(1, expires_at=10.0))
        assert store.writable
        assert await store.get(key(1)) == make_entry(1, expires_at=10.0)

        # Deletes, purges, prunes and hits are writes too.
        refuse(path, "DELETE")
        for write in (
            lambda: store.delete(key(1)),
            lambda: store.purge(EVERY_ENTRY),
            lambda: store.prune(now=2e9),
        ):
            clock.offset += WRITE_RETRY_SECONDS
            assert store.writable
            with pytest.raises(StoreError):
                await write()
            assert not store.writable
        refuse(path, "UPDATE")
        with pytest.raises(StoreError):
            await store.add_hits({key(1): (1, 5.0)})
        allow(path, "DELETE")
        assert await store.delete(key(1)) is True
        assert store.writable
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_writes_that_keep_failing_are_warned_of_once_a_minute(tmp_path: Path) -> None:
    """
    Not once per failure, and not only once: counted hits fail every few
    seconds on a busy daemon whose database is full, and each failure keeps
    the store unwritable, but the warning still comes every minute.
    """
    path = tmp_path / "cache.db"
    clock = ShiftedReactor()
    store = opened(path, clock)
    warnings: list[str] = []

    def observe(event: LogEvent) -> None:
        if "cannot write the cache database" in (formatEvent(event) or ""):
            warnings.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        await store.put(make_entry(1))
        refuse(path, "UPDATE")
        for _ in range(36):  # three minutes of failures, every five seconds
            with pytest.raises(StoreError):
                await store.add_hits({key(1): (1, 5.0)})
            assert not store.writable
            clock.offset += 5
        assert len(warnings) == 3
        assert "database or disk is full" in warnings[0]
    finally:
        globalLogPublisher.removeObserver(observe)
        await store.close()


@pytest_twisted.ensureDeferred
async def test_put_all_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        await store.put(make_entry(1, status=201))
        entries = [make_entry(1), make_entry(2, usage=TokenUsage.of(2**70, 1)), make_entry(3)]
        with pytest.raises(StoreError, match="too large"):
            await store.put_all(entries)
        assert await store.get(key(1)) == make_entry(1, status=201)
        assert await store.get(key(3)) is None
        assert logged(path) == [("put", key(1))]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_bad_entry_fails_alone_and_the_store_stays_writable(tmp_path: Path) -> None:
    """
    One entry the database refuses (a count past SQLite's INTEGER), committed
    in a batch with others: the batch is split, only it fails, and misses go
    on being stored (the contract suite shows the batch; this, the last word).
    """
    path = tmp_path / "cache.db"
    store = opened(path)
    try:
        with raw(path) as holder:
            holder.execute("BEGIN IMMEDIATE")  # hold the first commit, so the next two batch
            first = store.put(make_entry(1))
            good = store.put(make_entry(3))
            bad = store.put(make_entry(2, usage=TokenUsage.of(2**70, 1)))
            holder.execute("COMMIT")
        await first
        await good
        with pytest.raises(StoreError, match="too large"):
            await bad
        assert store.writable
        assert await store.get(key(3)) == make_entry(3)
        assert await store.get(key(2)) is None
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
    store = opened(path)
    try:
        assert not store.writable
        assert store.secret == secret
        assert await store.get(key(1)) == make_entry(1)
        assert (await store.stats()).entries == 1
        await store.add_hits({key(1): (1, 99.0)})  # dropped: nowhere to count them
        with pytest.raises(StoreError, match="read-only"):
            await store.put(make_entry(2))
        assert not store.writable
    finally:
        await store.close()


async def make_database(path: Path) -> bytes:
    store = opened(path)
    try:
        await store.put(make_entry(1))
    finally:
        await store.close()
    return store.secret


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
async def test_a_read_only_database_serves_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_mode: str
) -> None:
    path = tmp_path / "cache.db"
    secret = await make_database(path)
    with raw(path) as connection:
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connect_read_only(monkeypatch)
    await check_serves_read_only(path, secret)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
@pytest_twisted.ensureDeferred
async def test_a_read_only_file_serves_hits(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    secret = await make_database(path)
    path.chmod(0o444)
    try:
        await check_serves_read_only(path, secret)
    finally:
        path.chmod(0o644)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
async def test_a_read_only_database_of_a_newer_schema_is_refused(
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
        opened(path)


def test_a_read_only_database_of_an_older_schema_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v2.db"
    historic_database(path, 2)
    connect_read_only(monkeypatch)
    with pytest.raises(StoreError, match=rf"version 2 and is read-only.*version {SCHEMA_VERSION}"):
        opened(path)


def test_a_read_only_empty_database_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"")
    connect_read_only(monkeypatch)
    with pytest.raises(StoreError, match="read-only"):
        opened(path)


# Checkpoints


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
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = opened(path)
    try:
        for n in range(50):
            await store.put(make_entry(n))
        await wait_for(lambda: rows_in_the_database_file(path, scratch) == 50, deadline=5.0)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_another_processes_commits_are_checkpointed_too(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = opened(path)
    try:
        await store.put(make_entry(1))
        await wait_for(lambda: rows_in_the_database_file(path, scratch) == 1, deadline=5.0)
        with raw(path) as other:  # it never checkpoints, and is not the last to close
            other.execute("PRAGMA wal_autocheckpoint=0")
            raw_insert(other, key(2))
            await wait_for(lambda: rows_in_the_database_file(path, scratch) == 2, deadline=5.0)
    finally:
        await store.close()


# Other processes' changes


@pytest_twisted.ensureDeferred
async def test_another_stores_changes_are_published_naming_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    here, there = opened(path), opened(path)
    changes = recorder(here)
    try:
        await gatherResults([there.put(make_entry(n, namespace="ci")) for n in range(1, 4)])
        await seen(changes, names(key(3)))
        await there.delete(key(1))
        await seen(changes, names(key(1)))
        await there.purge(EntryFilter(namespace="ci"))
        await seen(changes, lambda found: sum(len(change.keys) for change in found) == 6)
        told = [(change.kind, k) for change in external(changes) for k in change.keys]
        assert sorted(told[:3]) == sorted((ChangeKind.PUT, key(n)) for n in range(1, 4))
        assert told[3] == (ChangeKind.DELETE, key(1))
        # Seen from here a purge is deletes: the log cannot tell them apart.
        assert sorted(told[4:]) == sorted((ChangeKind.DELETE, key(n)) for n in (2, 3))
        assert external(changes) == changes  # nothing happened here
    finally:
        await here.close()
        await there.close()


@pytest_twisted.ensureDeferred
async def test_a_raw_sql_clients_changes_are_published_naming_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorder(store)
    try:
        await gatherResults([store.put(make_entry(n)) for n in (1, 2)])
        with raw(path) as other:
            other.execute("DELETE FROM entries WHERE key = ?", (bytes.fromhex(key(1)),))
            await seen(changes, lambda found: len(found) == 1)
            assert external(changes) == [Change(ChangeKind.DELETE, (key(1),), local=False)]
            assert await store.get(key(1)) is None

            raw_insert(other, key(3))
            await seen(changes, lambda found: len(found) == 2)
            assert external(changes)[1] == Change(ChangeKind.PUT, (key(3),), local=False)

            # Counting hits logs nothing; changing an answer, or a key, does.
            other.execute("UPDATE entries SET hit_count = hit_count + 1, last_hit_at = 5.0")
            other.execute("UPDATE entries SET status = 500 WHERE key = ?", (bytes.fromhex(key(2)),))
            other.execute(
                "UPDATE entries SET key = ? WHERE key = ?",
                (bytes.fromhex(key(4)), bytes.fromhex(key(3))),
            )
            await seen(changes, names(key(4)))
            assert merged(external(changes)[2:]) == [
                (ChangeKind.PUT, [key(2)]),
                (ChangeKind.DELETE, [key(3)]),
                (ChangeKind.PUT, [key(4)]),
            ]
        assert not any(change.kind is ChangeKind.RESET for change in changes)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_this_processes_changes_are_never_published_as_another_processes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cache.db"
    one, two = opened(path), opened(path)
    heard = {"one": recorder(one), "two": recorder(two)}
    try:
        # Interleaved: each writes while the other's changes are still unread.
        for n in range(12):
            writer, name = (one, "one") if n % 3 else (two, "two")
            await writer.put(make_entry(f"{name}-{n}"))
            if n % 4 == 0:
                await writer.delete(key(f"{name}-{n}"))
            if n == 6:
                await one.purge(EntryFilter(until=0.0))  # matches nothing
        await one.put(make_entry("one-last"))
        await two.put(make_entry("two-last"))
        await seen(heard["one"], names(key("two-last")))
        await seen(heard["two"], names(key("one-last")))
        for name, changes in heard.items():
            theirs = {k for change in external(changes) for k in change.keys}
            ours = {k for change in changes if change.local for k in change.keys}
            assert theirs and ours
            assert not theirs & ours, f"{name} was told of its own changes"
            assert not any(change.kind is ChangeKind.RESET for change in changes)
    finally:
        await one.close()
        await two.close()


@pytest_twisted.ensureDeferred
async def test_rows_this_process_never_read_being_gone_is_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorder(store)
    try:
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            raw_insert(other, key(1))
            other.execute("DELETE FROM changes")  # trimmed before the store read it
            other.execute("COMMIT")
            await seen(changes, lambda found: len(found) == 1)
            assert changes == [Change(ChangeKind.RESET, (), local=False)]
            # After a reset, changes are named again.
            other.execute("DELETE FROM entries WHERE key = ?", (bytes.fromhex(key(1)),))
            await seen(changes, lambda found: len(found) == 2)
            assert changes[1] == Change(ChangeKind.DELETE, (key(1),), local=False)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_log_gone_backwards_is_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorder(store)
    try:
        await gatherResults([store.put(make_entry(n)) for n in range(5)])
        with raw(path) as other:  # as if the log were rebuilt, or the file restored
            other.execute("BEGIN IMMEDIATE")
            other.execute("DELETE FROM changes")
            other.execute("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'changes'")
            raw_insert(other, key(9))
            other.execute("COMMIT")
        await seen(changes, lambda found: len(found) == 1)
        assert external(changes) == [Change(ChangeKind.RESET, (), local=False)]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_more_keys_changed_at_once_than_are_worth_naming_is_a_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_changelog, "MAX_NAMED", 5)
    path = tmp_path / "cache.db"
    store = opened(path)
    changes = recorder(store)
    try:
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            for n in range(6):
                raw_insert(other, key(n))
            other.execute("COMMIT")
            await seen(changes, lambda found: len(found) == 1)
            assert external(changes) == [Change(ChangeKind.RESET, (), local=False)]
            for n in range(5):
                raw_insert(other, key(10 + n))
            await seen(changes, lambda found: len(merged(found)) == 2)
            assert merged(external(changes))[1] == (ChangeKind.PUT, [key(10 + n) for n in range(5)])
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_the_log_is_trimmed_of_old_rows_at_most_once_a_minute(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    clock = ShiftedReactor()
    store = opened(path, clock)  # trims at once: nothing is old yet
    changes = recorder(store)
    try:
        await gatherResults([store.put(make_entry(n)) for n in range(4)])
        with raw(path) as other:
            aged = int(time.time() - KEEP_SECONDS - 10)
            other.execute("UPDATE changes SET at = ? WHERE seq <= 2", (aged,))
            raw_insert(other, key("marker"))
        await seen(changes, names(key("marker")))  # the store has looked since
        assert len(logged(path)) == 5  # not a minute since the last trim
        clock.offset += TRIM_EVERY_SECONDS
        await wait_for(lambda: len(logged(path)) == 3, deadline=SEEN_WITHIN)
        assert logged(path) == [("put", key(2)), ("put", key(3)), ("put", key("marker"))]
    finally:
        await store.close()


_steps = st.lists(
    st.tuples(st.sampled_from(["ours", "theirs", "look"]), st.integers(0, 3)), max_size=30
)


@settings(max_examples=100, deadline=None)
@given(steps=_steps)
def test_the_log_tells_exactly_the_other_processes_changes_in_order(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """
    The change log's reader alone, driven step by step: whatever the interleaving
    of this process's transactions, another's, and looks at the log, the keys it
    reports are the other process's, each once, in commit order.
    """
    path = tmp_path_factory.mktemp("log") / "cache.db"
    ours = sqlite3.connect(str(path), isolation_level=None)
    theirs = sqlite3.connect(str(path), isolation_level=None)
    try:
        _sqlite.configure(ours)
        migrate(ours)
        changelog = ChangeLog.at_end(ours)
        expected: list[str] = []
        told: list[str] = []

        def look() -> None:
            noticed = changelog.poll(ours, now=time.time(), writable=False)
            assert all(not change.local for change in noticed.changes)
            assert ChangeKind.RESET not in [change.kind for change in noticed.changes]
            told.extend(k for change in noticed.changes for k in change.keys)

        for n, (step, rows) in enumerate(steps):
            digests = [key(f"{n}-{row}") for row in range(rows)]
            if step == "ours":  # as AdbapiStore's writer does it
                cursor = ours.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                mark = changelog.begin_write(cursor)
                for digest in digests:
                    raw_insert(ours, digest)
                mark = changelog.end_write(cursor, mark)
                ours.commit()
                changelog.committed(mark)
            elif step == "theirs":
                theirs.execute("BEGIN IMMEDIATE")
                for digest in digests:
                    raw_insert(theirs, digest)
                theirs.execute("COMMIT")
                expected += digests
            else:
                look()
        look()
        assert told == expected
    finally:
        ours.close()
        theirs.close()


# The codec


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


def test_processes_opening_a_new_file_together_all_start(tmp_path: Path) -> None:
    # Turning a new file's journal into a WAL was refused as "locked" at once
    # to one of several processes doing it together: about 3 rounds in 40 of
    # four processes, and a worker of --workers failed to start.
    opened = subprocess.run(
        [sys.executable, "-m", "tests.open_race", str(tmp_path), "40"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert (opened.returncode, opened.stdout) == (0, ""), opened.stdout + opened.stderr
