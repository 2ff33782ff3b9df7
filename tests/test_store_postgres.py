"""
The store on PostgreSQL: what the contract suite cannot show on every store alike.

Creating, sharing and migrating the schema; several stores (daemons) on one
database at once; the change feed through LISTEN/NOTIFY; passwords kept out
of everything shown; a server that cannot be reached, or goes away and comes
back. On a real server (:mod:`tests.postgres_support`), a database per test;
the tests that stop the server have a cluster of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from stasis.model import Change, ChangeKind, EntryFilter
from stasis.store import Store, StoreError, open_store
from stasis.store._adbapi import WRITE_RETRY_SECONDS, AdbapiStore
from stasis.store._rows import stored_size
from stasis.store._schema import SCHEMA_VERSION, SchemaFiles
from tests.postgres_support import Cluster, fresh_database
from tests.store_support import ShiftedReactor, key, make_entry, merged
from tests.waiting import wait_for

psycopg = pytest.importorskip("psycopg")

from stasis.store._postgres import PostgreSQLDialect  # noqa: E402
from stasis.store._schema_postgres import ADVISORY_LOCK, FILES, migrate  # noqa: E402
from stasis.store._url import DatabaseURL  # noqa: E402

#: Another process's change must reach the subscribers within this (the contract).
WITHIN = 1.0
#: How long a test waits for something that should come much sooner.
PATIENCE = 10.0


def opened(url: str, clock: Any = reactor) -> Store:
    store = open_store(url, clock)
    store.open()
    return store


def sql(url: str, statement: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a plain connection of its own (a raw SQL client), committed."""
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, parameters)
        return cursor.fetchall() if cursor.description else []


class Heard:
    """The changes a store published, each with the moment it came (time.monotonic)."""

    def __init__(self, store: Store) -> None:
        self.changes: list[tuple[float, Change]] = []
        store.changes.subscribe(lambda change: self.changes.append((time.monotonic(), change)))

    def external(self, since: int = 0) -> list[Change]:
        return [change for _, change in self.changes[since:] if not change.local]

    async def wait(self, condition: Callable[[list[Change]], bool], since: int = 0) -> float:
        """Wait until the external changes since ``since`` satisfy ``condition``; when they did."""
        deadline = time.monotonic() + PATIENCE
        while not condition(self.external(since)):
            assert time.monotonic() < deadline, f"not heard: {self.external(since)}"
            await deferLater(reactor, 0.01, lambda: None)
        return time.monotonic()


def names(kind: ChangeKind, *keys: str) -> Callable[[list[Change]], bool]:
    wanted = set(keys)
    return lambda changes: wanted <= {k for c in changes if c.kind is kind for k in c.keys}


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every log event while the test runs, formatted, failures' tracebacks included."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        text = formatEvent(event) or ""
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        lines.append(f"{getattr(event.get('log_level'), 'name', '?')}: {text}")

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


# Opening, and the schema


@pytest_twisted.ensureDeferred
async def test_open_creates_the_current_schema_and_a_secret(postgres_url: str) -> None:
    store = opened(postgres_url)
    try:
        assert len(store.secret) == 32
        assert store.writable and store.shared
        assert store.location == postgres_url  # no password to leave out
        await store.put(make_entry(1))
        await store.get(key(1))
        applications = sql(
            postgres_url,
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert len(applications) >= 3  # the listener, the writer, a reader
        assert set(applications) == {("stasis",)}
    finally:
        await store.close()
    meta = dict(sql(postgres_url, "SELECT name, value FROM meta"))
    assert int(bytes(meta["schema_version"])) == SCHEMA_VERSION == 7
    assert bytes(meta["secret"]) == store.secret
    tables = sql(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert sorted(t for (t,) in tables) == ["claims", "entries", "meta", "totals"]
    indexes = sql(postgres_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'entries'")
    assert sorted(i for (i,) in indexes) == [
        "entries_created_at",
        "entries_expires_at",
        "entries_last_used",
        "entries_pkey",
        "entries_unsearchable",
    ]
    triggers = sql(
        postgres_url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
    )
    assert [t for (t,) in triggers] == [
        "changes_after_insert_or_delete",
        "changes_after_update",
        "totals_after_delete",
        "totals_after_insert",
        "totals_after_update",
        "totals_at_commit",
    ]


def test_two_daemons_starting_at_once_on_an_empty_database_make_one_schema(
    postgres_url: str,
) -> None:
    """Each prepares in its own thread and connection, all at the same moment."""
    starting = 4
    barrier = threading.Barrier(starting)
    secrets: list[bytes] = []
    failures: list[BaseException] = []

    def start() -> None:
        dialect = PostgreSQLDialect(DatabaseURL(postgres_url))
        barrier.wait()
        try:
            prepared = dialect.prepare()
        except BaseException as e:
            failures.append(e)
            return
        prepared.watcher.close()
        secrets.append(prepared.secret)

    threads = [threading.Thread(target=start) for _ in range(starting)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert len(secrets) == starting and len(set(secrets)) == 1
    assert sql(postgres_url, "SELECT count(*) FROM meta WHERE name = 'secret'") == [(1,)]


@pytest_twisted.ensureDeferred
async def test_a_store_starting_beside_a_long_write_does_not_wait_for_it(
    postgres_url: str,
) -> None:
    await opened(postgres_url).close()
    with psycopg.connect(postgres_url) as writing:  # an import, say, holding the write lock
        writing.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        started = time.monotonic()
        store = opened(postgres_url)
        try:
            assert time.monotonic() - started < 2.0
            assert await store.get(key(1)) is None
        finally:
            writing.commit()
            await store.close()


@pytest_twisted.ensureDeferred
async def test_a_write_lock_held_past_the_lock_timeout_is_waited_out(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on SQLite (issue 15 #10): the puts wait, and are committed once it is let go."""
    from stasis.store import _postgres

    monkeypatch.setattr(_postgres, "LOCK_TIMEOUT_SECONDS", 0.2)
    store = opened(postgres_url)
    try:
        with psycopg.connect(postgres_url) as writing:  # an import, say, holding the write lock
            writing.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            puts = [store.put(make_entry(n)) for n in range(3)]
            await wait_for(lambda: store.held_up, deadline=PATIENCE)
            await deferLater(reactor, 0.6, lambda: None)  # three lock timeouts
            assert not any(put.called for put in puts)
            assert store.writable
            with pytest.raises(StoreError, match="locked by another process"):
                await store.claim(key(9), "me", 30.0)  # claims do not wait
            writing.commit()
        await gatherResults(puts)
        assert not store.held_up
        assert (await store.stats()).entries == 3
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_every_store_on_the_database_shares_its_secret(
    postgres_url: str, postgres_server: str
) -> None:
    first = opened(postgres_url)
    second = opened(postgres_url)
    try:
        assert second.secret == first.secret
    finally:
        await first.close()
        await second.close()
    again = opened(postgres_url)
    await again.close()
    assert again.secret == first.secret
    with fresh_database(postgres_server) as elsewhere:
        other = opened(elsewhere)
        await other.close()
    assert other.secret != first.secret


def schema_folder(tmp_path: Path, *extra: tuple[str, str]) -> SchemaFiles:
    """The package's PostgreSQL files and ``extra`` (name, SQL) ones, as a newer stasis has them."""
    folder = tmp_path / "schema"
    folder.mkdir()
    for migration in FILES.migrations():
        shutil.copy(Path(str(FILES.folder)) / migration.name, folder)
    for name, script in extra:
        (folder / name).write_text(script)
    return SchemaFiles("postgresql", folder, FILES.split, newest=SCHEMA_VERSION + len(extra))


NOTES = (
    "0008-notes.sql",
    """
    -- A later version's file: a column, and a function whose body holds ';'.
    ALTER TABLE entries ADD COLUMN note text;
    CREATE FUNCTION stasis_noted() RETURNS bigint LANGUAGE plpgsql AS $$
    BEGIN
        RETURN (SELECT count(*) FROM entries WHERE note IS NOT NULL);
    END
    $$;
    """,
)


def version_of(url: str) -> int:
    (value,) = sql(url, "SELECT value FROM meta WHERE name = 'schema_version'")[0]
    return int(bytes(value))


@pytest_twisted.ensureDeferred
async def test_a_newer_stasis_migrates_the_schema_and_an_older_one_refuses_it(
    postgres_url: str, tmp_path: Path
) -> None:
    store = opened(postgres_url)
    try:
        await store.put(make_entry(1))
    finally:
        await store.close()
    newer = schema_folder(tmp_path, NOTES)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert migrate(connection, newer) == (store.secret, False)
    assert version_of(postgres_url) == SCHEMA_VERSION + 1
    assert sql(postgres_url, "SELECT stasis_noted()") == [(0,)]
    assert sql(postgres_url, "SELECT count(*) FROM entries") == [(1,)]

    with pytest.raises(StoreError) as refused:
        opened(postgres_url)
    assert str(refused.value).endswith(
        f"schema version {SCHEMA_VERSION + 1}, newer than this stasis understands "
        f"({SCHEMA_VERSION}); upgrade stasis"
    )
    assert version_of(postgres_url) == SCHEMA_VERSION + 1  # left alone


def test_an_empty_database_applies_every_file(postgres_url: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        secret, read_only = migrate(connection, schema_folder(tmp_path, NOTES))
    assert len(secret) == 32 and not read_only
    assert version_of(postgres_url) == SCHEMA_VERSION + 1
    assert sql(postgres_url, "SELECT stasis_noted()") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_migration_that_fails_leaves_the_database_as_it_was(
    postgres_url: str, tmp_path: Path
) -> None:
    await opened(postgres_url).close()
    broken = schema_folder(
        tmp_path, ("0008-broken.sql", "ALTER TABLE entries ADD COLUMN note text;\nSELECT 1 / 0;")
    )
    with (
        psycopg.connect(postgres_url, autocommit=True) as connection,
        pytest.raises(psycopg.errors.DivisionByZero),
    ):
        migrate(connection, broken)
    assert version_of(postgres_url) == SCHEMA_VERSION
    columns = sql(
        postgres_url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'entries' AND column_name = 'note'",
    )
    assert columns == []


@pytest_twisted.ensureDeferred
async def test_a_read_only_database_serves_its_hits(postgres_url: str) -> None:
    store = opened(postgres_url)
    try:
        await store.put(make_entry(1))
    finally:
        await store.close()
    name = postgres_url.rpartition("/")[2]
    sql(postgres_url, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    store = opened(postgres_url)
    try:
        assert not store.writable
        assert await store.get(key(1)) == make_entry(1)
        with pytest.raises(StoreError, match="read-only"):
            await store.put(make_entry(2))
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_the_size_is_stasiss_tables_not_the_whole_database(postgres_url: str) -> None:
    store = opened(postgres_url)
    try:
        empty = (await store.stats()).db_size_bytes
        await store.put_all([make_entry(n, body=os.urandom(4000)) for n in range(100)])
        full = (await store.stats()).db_size_bytes
    finally:
        await store.close()
    ((database,),) = sql(postgres_url, "SELECT pg_database_size(current_database())")
    assert 0 < empty < full < database
    assert full - empty >= 100 * 4000


def totals_are_right(url: str) -> None:
    kept = sql(url, "SELECT entry_count, stored_bytes FROM totals")
    counted = sql(url, "SELECT count(*), COALESCE(sum(stasis_stored_size(e)), 0) FROM entries e")
    assert kept == [(c, int(s)) for c, s in counted]


@pytest_twisted.ensureDeferred
async def test_the_totals_follow_every_kind_of_write_once_committed(postgres_url: str) -> None:
    """Kept once per transaction, at its commit: never a row counted twice, or rolled back."""
    store = opened(postgres_url)
    try:
        await store.put_all([make_entry(n, namespace=str(n % 3)) for n in range(3000)])
        totals_are_right(postgres_url)
        await store.put_all([make_entry(n, body=b"longer, now" * n) for n in range(0, 3000, 7)])
        await store.delete(key(1))
        await store.purge(EntryFilter(namespace="2"))
        await store.add_hits({key(3): (2, 5.0)})
        totals_are_right(postgres_url)
        assert await store.evict(max_bytes=None, max_entries=700) > 0
        totals_are_right(postgres_url)
    finally:
        await store.close()
    with psycopg.connect(postgres_url) as connection:  # a raw client's transaction
        connection.execute("DELETE FROM entries WHERE namespace = '0'")
        with pytest.raises(psycopg.errors.DivisionByZero), connection.transaction():
            connection.execute("DELETE FROM entries")
            connection.execute("SELECT 1 / 0")
        connection.commit()
    totals_are_right(postgres_url)
    ((left,),) = sql(postgres_url, "SELECT entry_count FROM totals")
    assert 0 < left < 700  # namespace 0 went, the savepoint's delete of the rest did not


@pytest_twisted.ensureDeferred
async def test_text_a_text_column_cannot_hold_is_stored_all_the_same(postgres_url: str) -> None:
    store = opened(postgres_url)
    try:
        await store.put_all([make_entry(1, model="gpt\x00evil"), make_entry(2)])
        stored = await store.get(key(1))
        assert stored is not None and stored.model == "gpt\ufffdevil"
        assert store.writable
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_claim_lasts_by_the_servers_clock(postgres_url: str) -> None:
    store = opened(postgres_url)
    try:
        assert await store.claim(key(1), "a", 30.0) is True
    finally:
        await store.close()
    ((left,),) = sql(
        postgres_url,
        "SELECT expires_at - EXTRACT(EPOCH FROM clock_timestamp())::double precision FROM claims",
    )
    assert 28.0 < left <= 30.0


# Several stores (daemons) on one database


@pytest_twisted.ensureDeferred
async def test_two_stores_storing_the_same_keys_at_once_upsert(postgres_url: str) -> None:
    one, other = opened(postgres_url), opened(postgres_url)
    try:
        await gatherResults(
            [
                put
                for n in range(40)
                for put in (
                    one.put(make_entry(n, body=b"one")),
                    other.put(make_entry(n, body=b"other, longer")),
                )
            ]
        )
        stored = [await one.get(key(n)) for n in range(40)]
        stats = await other.stats()
    finally:
        await one.close()
        await other.close()
    assert all(entry is not None and entry.body in (b"one", b"other, longer") for entry in stored)
    assert stats.entries == 40
    assert stats.stored_bytes == sum(stored_size(entry) for entry in stored if entry)
    kept = sql(postgres_url, "SELECT entry_count, stored_bytes FROM totals")
    counted = sql(postgres_url, "SELECT count(*), sum(stasis_stored_size(e)) FROM entries e")
    assert kept == [(40, stats.stored_bytes)] == [(c, int(s)) for c, s in counted]


@pytest_twisted.ensureDeferred
async def test_hits_counted_by_two_stores_at_once_add_up(postgres_url: str) -> None:
    one, other = opened(postgres_url), opened(postgres_url)
    try:
        await one.put_all([make_entry(0), make_entry(1)])
        now = time.time()
        await gatherResults(
            [
                hits
                for _ in range(100)
                for hits in (
                    one.add_hits({key(0): (1, now), key(1): (2, now)}),
                    other.add_hits({key(1): (1, now), key(0): (3, now)}),
                )
            ]
        )
        counts = [(await one.get(key(n))) for n in (0, 1)]
    finally:
        await one.close()
        await other.close()
    assert [entry.hit_count for entry in counts if entry] == [400, 300]


# The change feed


@pytest_twisted.ensureDeferred
async def test_another_stores_changes_reach_the_subscribers_within_a_second(
    postgres_url: str,
) -> None:
    watching, writing = opened(postgres_url), opened(postgres_url)
    heard = Heard(watching)
    try:
        await writing.put_all([make_entry(n) for n in range(3)])
        stored = time.monotonic()
        assert await heard.wait(names(ChangeKind.PUT, key(0), key(1), key(2))) - stored < WITHIN

        mark = len(heard.changes)
        await writing.delete(key(1))
        deleted = time.monotonic()
        assert await heard.wait(names(ChangeKind.DELETE, key(1)), mark) - deleted < WITHIN
        assert heard.external(mark) == [Change(ChangeKind.DELETE, (key(1),), local=False)]

        # Counting hits notifies nothing: the next change heard is the purge after them.
        mark = len(heard.changes)
        await writing.add_hits({key(0): (5, 1.0), key(2): (1, 2.0)})
        await writing.purge(EntryFilter(path="/v1/chat/completions"))
        purged = time.monotonic()
        assert await heard.wait(names(ChangeKind.DELETE, key(0), key(2)), mark) - purged < WITHIN
        assert [(c.kind, sorted(c.keys)) for c in heard.external(mark)] == [
            (ChangeKind.DELETE, sorted([key(0), key(2)]))
        ]

        # This store's own writes are published once, as its own.
        mark = len(heard.changes)
        await watching.put(make_entry(7))
        await writing.delete(key(8))  # nothing to delete: nothing published
        await writing.put(make_entry(9))
        await heard.wait(names(ChangeKind.PUT, key(9)), mark)
        assert [change for _, change in heard.changes[mark:]] == [
            Change(ChangeKind.PUT, (key(7),), local=True),
            Change(ChangeKind.PUT, (key(9),), local=False),
        ]
    finally:
        await watching.close()
        await writing.close()


@pytest_twisted.ensureDeferred
async def test_a_large_purge_elsewhere_comes_as_one_change(postgres_url: str) -> None:
    watching, writing = opened(postgres_url), opened(postgres_url)
    heard = Heard(watching)
    keys = [key(n) for n in range(2000)]
    try:
        await writing.put_all([make_entry(n, namespace="bulk") for n in range(2000)])
        await heard.wait(names(ChangeKind.PUT, *keys))
        mark = len(heard.changes)
        assert await writing.purge(EntryFilter(namespace="bulk")) == 2000
        await heard.wait(names(ChangeKind.DELETE, *keys), mark)
    finally:
        await watching.close()
        await writing.close()
    assert [(kind, sorted(k)) for kind, k in merged(heard.external(mark))] == [
        (ChangeKind.DELETE, sorted(keys))
    ]
    assert len(heard.external(mark)) <= 2  # one a look, and it rarely takes two


@pytest_twisted.ensureDeferred
async def test_raw_sql_changes_are_heard_and_updates_of_hits_only_are_not(
    postgres_url: str,
) -> None:
    store = opened(postgres_url)
    heard = Heard(store)
    try:
        await store.put_all([make_entry(1), make_entry(2)])
        digest = bytes.fromhex(key(1))
        sql(
            postgres_url,
            "UPDATE entries SET hit_count = 9, last_hit_at = 5 WHERE key = %s",
            (digest,),
        )
        sql(postgres_url, "UPDATE entries SET status = 201 WHERE key = %s", (digest,))
        sql(postgres_url, "DELETE FROM entries WHERE key = %s", (bytes.fromhex(key(2)),))
        await heard.wait(names(ChangeKind.DELETE, key(2)))
    finally:
        await store.close()
    assert heard.external() == [
        Change(ChangeKind.PUT, (key(1),), local=False),
        Change(ChangeKind.DELETE, (key(2),), local=False),
    ]


@pytest_twisted.ensureDeferred
async def test_a_lost_listening_connection_is_made_again_and_says_reset(
    postgres_url: str,
) -> None:
    store = opened(postgres_url)
    heard = Heard(store)
    try:
        await store.put(make_entry(1))
        killed = sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = 'LISTEN stasis_changes'",
        )
        assert killed == [(True,)]
        await heard.wait(lambda changes: Change(ChangeKind.RESET, (), local=False) in changes)
        mark = len(heard.changes)
        sql(postgres_url, "DELETE FROM entries")
        await heard.wait(names(ChangeKind.DELETE, key(1)), mark)
        await deferLater(reactor, 0.5, lambda: None)
    finally:
        await store.close()
    resets = [c for c in heard.external() if c.kind is ChangeKind.RESET]
    assert len(resets) == 1


# Passwords


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://stasis:hunter2@db.example:5432/cache",
        "postgres://stasis:hunter2@db.example/cache?sslmode=require&password=hunter2",
        "POSTGRESQL://stasis:hunter2@[db.example/cache",
        "postgresql://stasis:hunter2 with spaces@db.example/cache",
    ],
)
def test_a_url_is_a_postgresql_store_whose_location_has_no_password(url: str) -> None:
    store = open_store(url, reactor)  # not connected yet
    assert isinstance(store, AdbapiStore) and isinstance(store.dialect, PostgreSQLDialect)
    assert "hunter2" not in store.location and "hunter2" not in repr(store)
    assert store.location.lower().startswith(url.partition(":")[0].lower() + "://stasis@")
    assert store.shared


@pytest.mark.parametrize(
    "url",
    [
        "POSTGRESQL://stasis:hunter2@[db.example/cache",
        "postgresql://stasis:hunter2 with spaces@127.0.0.1/cache",
        "postgresql://stasis:hunter2@127.0.0.1/cache?nonsense=1",
    ],
)
def test_a_url_libpq_refuses_is_an_error_without_its_password(url: str) -> None:
    with pytest.raises(StoreError) as refused:
        open_store(url, reactor).open()
    message = str(refused.value)
    assert "hunter2" not in message and "\n" not in message
    assert message.startswith("cannot use the cache database ")


def test_connections_time_out_and_say_they_are_stasis_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGAPPNAME", raising=False)
    given = PostgreSQLDialect(DatabaseURL("postgresql://u@h/db?sslmode=require"))
    _, (conninfo,), keywords = given.pool_arguments()
    assert conninfo == "postgresql://u@h/db?sslmode=require"  # passed through as it is
    assert (keywords["connect_timeout"], keywords["application_name"]) == ("5", "stasis")
    assert keywords["autocommit"] is True and keywords["cp_reconnect"] is True
    told = PostgreSQLDialect(DatabaseURL("postgresql://u@h/db?connect_timeout=30"))
    assert "connect_timeout" not in told.pool_arguments()[2]
    monkeypatch.setenv("PGAPPNAME", "mine")
    assert "application_name" not in given.pool_arguments()[2]


def test_an_unreachable_server_is_one_line_without_the_password(closed_port: int) -> None:
    url = f"postgresql://stasis:hunter2@127.0.0.1:{closed_port}/stasis"
    store = open_store(url, reactor)
    with pytest.raises(StoreError) as refused:
        store.open()
    message = str(refused.value)
    assert message.startswith(
        f"cannot connect to the cache database postgresql://stasis@127.0.0.1:{closed_port}/stasis: "
    )
    assert message.endswith("Connection refused")
    assert "hunter2" not in message and "\n" not in message


@pytest_twisted.ensureDeferred
async def test_the_password_comes_from_the_url_pgpassword_or_pgpass_and_is_never_shown(
    own_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logged: list[str],
) -> None:
    password = "pw-Wh1sp3r-s3cret"
    own_cluster.require_password("stasis_user", password)
    name = "passworded"
    sql(own_cluster.url, f"CREATE DATABASE {name} OWNER stasis_user")
    bare = f"postgresql://stasis_user@127.0.0.1:{own_cluster.port}/{name}"
    with_password = bare.replace("stasis_user@", f"stasis_user:{password}@")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))

    wrong = with_password.replace(password, "not-" + password)
    with pytest.raises(StoreError, match="password authentication failed") as refused:
        opened(wrong)
    assert password not in str(refused.value)
    with pytest.raises(StoreError, match="password"):
        opened(bare)  # none given anywhere

    store = opened(with_password)
    try:
        assert store.location == bare
        await store.put(make_entry(1))
        own_cluster.stop()
        with pytest.raises(StoreError) as failed:
            await store.put(make_entry(2))
        assert password not in str(failed.value) and bare in str(failed.value)
        own_cluster.start()
    finally:
        await store.close()

    monkeypatch.setenv("PGPASSWORD", password)
    store = opened(bare)
    await store.close()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{own_cluster.port}:{name}:stasis_user:{password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store = opened(bare)
    try:
        assert await store.get(key(1)) == make_entry(1)
    finally:
        await store.close()
    assert logged and not any(password in line for line in logged)


def test_without_psycopg_a_postgresql_url_says_what_to_install() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from twisted.internet import reactor\n"
        "from stasis.store import StoreError, open_store\n"
        "open_store('/tmp/an-sqlite-file-is-fine.db', reactor)\n"
        "try:\n"
        "    open_store('postgresql://me:hunter2@db.example/cache', reactor)\n"
        "except StoreError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert out == (
        "cannot use the cache database postgresql://me@db.example/cache: PostgreSQL needs "
        "psycopg, which is not installed; pip install 'stasis[postgres]'\n"
    )


def test_stasis_and_its_store_load_psycopg_only_for_a_postgresql_url() -> None:
    script = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "import stasis, stasis.keys\n"
        "from stasis.store import open_store\n"
        "open_store('/tmp/an-sqlite-file-is-fine.db', reactor)\n"
        "print('psycopg' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert out == "False\n"


# The server going away while the store is open


@pytest_twisted.ensureDeferred
async def test_the_store_reconnects_by_itself_when_the_server_is_back(
    own_cluster: Cluster, logged: list[str]
) -> None:
    url = own_cluster.url
    clock = ShiftedReactor()
    store = opened(url, clock)
    heard = Heard(store)
    try:
        await store.put(make_entry(1))
        assert await store.get(key(1)) == make_entry(1)

        own_cluster.stop()
        with pytest.raises(StoreError, match="cannot read the cache database"):
            await store.get(key(1))
        for n in (2, 3):  # two failures, one warning
            with pytest.raises(StoreError, match="cannot write the cache database"):
                await store.put(make_entry(n))
        assert not store.writable
        clock.offset += WRITE_RETRY_SECONDS  # a minute later, still failing: warned again
        with pytest.raises(StoreError):
            await store.put(make_entry(4))
        with pytest.raises(StoreError):
            await store.stats()

        own_cluster.start()
        back = time.monotonic()
        while True:
            try:
                await store.put(make_entry(5))
                assert await store.get(key(5)) == make_entry(5)
                break
            except StoreError:
                assert time.monotonic() - back < PATIENCE
                await deferLater(reactor, 0.1, lambda: None)
        recovered = time.monotonic() - back
        assert recovered < 5.0
        assert await store.get(key(1)) == make_entry(1)
        assert (await store.stats()).entries == 2
        # The listening connection was lost too: what happened meanwhile is unknown.
        await heard.wait(lambda changes: any(c.kind is ChangeKind.RESET for c in changes))
    finally:
        await store.close()
    warnings = [line for line in logged if "cannot write the cache database" in line]
    assert len(warnings) == 2, warnings
    assert not any("Traceback" in line or "Rollback failed" in line for line in logged), logged
