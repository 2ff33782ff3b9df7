"""
The store contract: the same tests against every implementation of :class:`stasis.store.Store`.

Each test takes ``subject``, one store per implementation (the in-memory
double the engine's tests run on, and SQLite and PostgreSQL through
``open_store``), plus a way to hold its commits back, so that ordering can
be shown on all of them alike: the double holds its writes in memory, SQLite
is held by another connection taking the write lock, PostgreSQL by another
connection taking the stasis advisory lock (the store waits for either, as
for any other process). The PostgreSQL store gets a database of its own on a
real server (:mod:`tests.postgres_support`), or is skipped without one.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import define, evolve, field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from stasis.model import (
    Change,
    ChangeKind,
    Entry,
    EntryFilter,
    EntryInfo,
    Saving,
    StoredRequest,
    TokenUsage,
)
from stasis.store import EVERY_ENTRY, Store, StoreError, open_store
from stasis.store._rows import stored_size
from tests.memory_store import MemoryStore
from tests.postgres_support import fresh_database
from tests.store_support import key, make_entry, merged

IMPLEMENTATIONS = ["memory", "sqlite", "postgresql"]


@define
class Subject:
    """One store under test, with a way to hold its commits back and to let them go."""

    store: Store
    hold: Callable[[], None]
    release: Callable[[], None]
    #: Every change the store published, in order.
    changes: list[Change] = field(factory=list)
    #: For an SQL store: run statements on a plain connection of their own
    #: (a raw SQL client), and open another store on the same database.
    execute: Callable[[list[str]], None] | None = None
    reopen: Callable[[], Store] | None = None

    def local(self) -> list[Change]:
        return [change for change in self.changes if change.local]


def _memory() -> Subject:
    store = MemoryStore(reactor)

    def hold() -> None:
        store.hold_writes = True

    return Subject(store, hold, store.release_writes)


def _sqlite(path: Path) -> Subject:
    store = open_store(str(path), reactor)
    holder: list[sqlite3.Connection] = []

    def hold() -> None:
        connection = sqlite3.connect(str(path), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")  # the write lock: the store's writes wait
        holder.append(connection)

    def release() -> None:
        connection = holder.pop()
        connection.execute("COMMIT")
        connection.close()

    def execute(statements: list[str]) -> None:
        connection = sqlite3.connect(str(path), isolation_level=None)
        try:
            for statement in statements:
                connection.execute(statement)
        finally:
            connection.close()

    return Subject(
        store, hold, release, execute=execute, reopen=lambda: open_store(str(path), reactor)
    )


def _postgresql(url: str) -> Subject:
    import psycopg

    from stasis.store._schema_postgres import ADVISORY_LOCK

    store = open_store(url, reactor)
    holder: list[psycopg.Connection[object]] = []

    def hold() -> None:
        connection: psycopg.Connection[object] = psycopg.connect(url)
        # The lock every stasis write transaction takes first: the store's writes wait.
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        holder.append(connection)

    def release() -> None:
        connection = holder.pop()
        connection.commit()
        connection.close()

    def execute(statements: list[str]) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement.encode())

    return Subject(store, hold, release, execute=execute, reopen=lambda: open_store(url, reactor))


@pytest_twisted.async_yield_fixture(params=IMPLEMENTATIONS)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    with contextlib.ExitStack() as stack:
        if request.param == "memory":
            made = _memory()
        elif request.param == "sqlite":
            made = _sqlite(tmp_path / "cache.db")
        else:
            server = request.getfixturevalue("postgres_server")
            made = _postgresql(stack.enter_context(fresh_database(server)))
        made.store.open()
        made.store.changes.subscribe(made.changes.append)
        try:
            yield made
        finally:
            await made.store.close()


@pytest.fixture(autouse=True)
def _hypothesis_wrapped_once(request: pytest.FixtureRequest) -> Iterator[None]:
    """
    pytest-twisted runs a hypothesis test's examples in the reactor by wrapping
    the test's ``hypothesis.inner_test`` in place; a parametrized test is one
    function run once per parameter, so from the second parameter on it would be
    wrapped twice and fail ("blockon cannot be called from the twisted greenlet").
    Put the unwrapped one back after each run.
    """
    hypothesis = getattr(request.function, "hypothesis", None)
    inner = getattr(hypothesis, "inner_test", None)
    yield
    if hypothesis is not None:
        hypothesis.inner_test = inner


async def put_all(store: Store, entries: list[Entry]) -> None:
    """Put every entry at once, as concurrent misses would, and wait for them all."""
    await gatherResults([store.put(entry) for entry in entries])


async def listed(store: Store, where: EntryFilter = EVERY_ENTRY, limit: int = 7) -> list[str]:
    """Every key a listing gives, page after page."""
    keys: list[str] = []
    cursor = None
    for _ in range(1000):  # a cursor that goes nowhere must fail the test, not hang it
        page = await store.list_entries(where, limit, cursor)
        keys += [info.key for info in page.entries]
        if page.cursor is None:
            return keys
        assert len(page.entries) == limit
        cursor = page.cursor
    raise AssertionError("the listing never ended")


def newest_first(entries: list[Entry]) -> list[str]:
    return [e.key for e in sorted(entries, key=lambda e: (e.created_at, e.key), reverse=True)]


# Entries


@pytest_twisted.ensureDeferred
async def test_an_entry_round_trips_with_every_field(subject: Subject) -> None:
    store = subject.store
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
        timeline=tuple((i * 37, i * 250) for i in range(1, 5000)),
        sample=3,
    )
    await store.put(entry)
    assert await store.get(entry.key) == entry
    assert await store.get(key("unknown")) is None


@pytest_twisted.ensureDeferred
async def test_the_stored_request_and_shared_key_are_read_only_when_asked_for(
    subject: Subject,
) -> None:
    store = subject.store
    request = StoredRequest(
        query="api-version=2024-06-01&x=%FE",
        headers=(("accept", "text/event-stream"), ("anthropic-version", "2023-06-01")),
        body=b'{"model": "m", "messages": [{"content": "caf\xc3\xa9 \\ud800"}]}' + bytes(300),
        ignored=("user", "messages[*].id", "metadata.caf\u00e9"),
    )
    entry = make_entry(1, shared_key=key("shared 1"), request=request)
    old = make_entry(2)  # stored by an older stasis: no request, no shared key
    await store.put(entry)
    await store.put(old)
    served = await store.get(entry.key)
    assert served == evolve(entry, request=None)
    assert served is not None and served.portable_key == key("shared 1")
    assert await store.get(entry.key, request=True) == entry
    assert await store.get(old.key, request=True) == old
    assert old.portable_key == old.key
    listed_info = (await store.list_entries()).entries
    assert {info.key: info.portable_key for info in listed_info} == {
        entry.key: key("shared 1"),
        old.key: old.key,
    }


@pytest_twisted.ensureDeferred
async def test_get_many_reads_the_entries_that_exist_in_the_order_asked(subject: Subject) -> None:
    store = subject.store
    entries = [make_entry(n, request=StoredRequest(body=b"%d" % n)) for n in range(1200)]
    await store.put_all(entries)
    wanted = [key(1100), key("absent"), key(3), key(700)]
    found = await store.get_many(wanted)
    assert [entry.key for entry in found] == [key(1100), key(3), key(700)]
    assert found[0].request == StoredRequest(body=b"1100")
    assert len(await store.get_many([entry.key for entry in entries])) == 1200
    assert await store.get_many([]) == []


@pytest_twisted.ensureDeferred
async def test_put_all_stores_every_entry_and_publishes_one_change(subject: Subject) -> None:
    store = subject.store
    await store.put(make_entry(0, status=500))
    entries = [make_entry(n) for n in range(3)]
    assert await store.put_all(entries) == 3
    assert [await store.get(entry.key) for entry in entries] == entries
    assert [(change.kind, list(change.keys)) for change in subject.local()] == [
        (ChangeKind.PUT, [key(0)]),
        (ChangeKind.PUT, [key(0), key(1), key(2)]),
    ]
    assert await store.put_all([]) == 0


@pytest_twisted.ensureDeferred
async def test_match_keys_finds_keys_by_a_hex_prefix(subject: Subject) -> None:
    store = subject.store
    keys = sorted(key(n) for n in range(300))
    await store.put_all([make_entry(n) for n in range(300)])
    assert await store.match_keys(keys[5]) == (keys[5],)
    assert await store.match_keys(keys[5][:20].upper()) == (keys[5],)
    first = keys[0][0]
    starting = [k for k in keys if k.startswith(first)]
    assert await store.match_keys(first, limit=3) == tuple(starting[:3])
    assert await store.match_keys(keys[5][:-1] + "x") == ()
    assert await store.match_keys("") == ()
    assert await store.match_keys("zz") == ()


@pytest_twisted.ensureDeferred
async def test_empty_and_large_bodies_round_trip(subject: Subject) -> None:
    empty = make_entry("empty", body=b"", headers=())
    large = make_entry("large", body=random.Random(5).randbytes(5 * 1024 * 1024))
    await put_all(subject.store, [empty, large])
    assert await subject.store.get(empty.key) == empty
    assert await subject.store.get(large.key) == large


@pytest_twisted.ensureDeferred
async def test_a_put_replaces_the_entry_of_its_key_hits_and_all(subject: Subject) -> None:
    store = subject.store
    await store.put(make_entry(1, body=b"old", status=500))
    await store.add_hits({key(1): (3, 1_700_000_050.0)})
    fresh = make_entry(1, body=b"new", created_at=1_700_000_100.0)
    await store.put(fresh)
    assert await store.get(key(1)) == fresh
    assert (await store.stats()).entries == 1


@pytest_twisted.ensureDeferred
async def test_delete_says_whether_there_was_an_entry(subject: Subject) -> None:
    store = subject.store
    await put_all(store, [make_entry(1), make_entry(2)])
    assert await store.delete(key(1)) is True
    assert await store.delete(key(1)) is False
    assert await store.delete(key("never")) is False
    assert await store.get(key(1)) is None
    assert await store.get(key(2)) == make_entry(2)


# Order: writes apply in the order asked for, and reads that count wait for them


@pytest_twisted.ensureDeferred
async def test_a_delete_after_an_uncommitted_put_is_not_undone_by_it(subject: Subject) -> None:
    store = subject.store
    subject.hold()
    put = store.put(make_entry(1))
    deleted = store.delete(key(1))
    pruned = store.prune(now=2e9)
    subject.release()
    await put
    assert await deleted is True
    assert await pruned == 0
    assert await store.get(key(1)) is None


@pytest_twisted.ensureDeferred
async def test_of_two_puts_of_one_key_in_flight_the_later_is_kept(subject: Subject) -> None:
    store = subject.store
    newer = make_entry(1, body=b"newer", created_at=1_700_000_001.0)
    subject.hold()
    first, second = store.put(make_entry(1)), store.put(newer)
    subject.release()
    await gatherResults([first, second])
    assert await store.get(key(1)) == newer


@pytest_twisted.ensureDeferred
async def test_stats_and_listings_count_the_writes_asked_for_before_them(
    subject: Subject,
) -> None:
    store = subject.store
    await store.put(make_entry(0))
    subject.hold()
    puts = [store.put(make_entry(n, created_at=1_700_000_000.0 + n)) for n in range(1, 4)]
    deleted = store.delete(key(0))
    stats = store.stats()
    page = store.list_entries()
    assert not stats.called  # it waits for the writes before it
    subject.release()
    assert (await stats).entries == 3
    assert [info.key for info in (await page).entries] == [key(3), key(2), key(1)]
    await gatherResults(puts)
    assert await deleted is True


@pytest_twisted.ensureDeferred
async def test_a_write_asked_for_as_a_commit_is_heard_of_still_counts(subject: Subject) -> None:
    store = subject.store
    first = store.put(make_entry(1))
    deleted = store.delete(key(1))
    chained: list[Deferred[None]] = []
    first.addCallback(lambda _: chained.append(store.put(make_entry(2))))
    assert await deleted is True
    assert (await store.stats()).entries == 1  # after the put asked for before it
    await chained[0]
    assert [info.key for info in (await store.list_entries()).entries] == [key(2)]


@pytest_twisted.ensureDeferred
async def test_lookups_do_not_wait_for_a_commit(subject: Subject) -> None:
    store = subject.store
    await store.put(make_entry(1))
    subject.hold()
    put = store.put(make_entry(2))
    try:
        assert await store.get(key(1)) == make_entry(1)
        assert await store.get(key(2)) is None  # not committed yet
    finally:
        subject.release()
    await put
    assert await store.get(key(2)) == make_entry(2)


# Hits and statistics


@pytest_twisted.ensureDeferred
async def test_hits_accumulate_and_count_saved_tokens(subject: Subject) -> None:
    store = subject.store
    await put_all(
        store,
        [
            make_entry(1, usage=TokenUsage(100, 20, 120), created_at=1000.0),
            make_entry(2, usage=TokenUsage(7, 3, 10), created_at=3000.0),
            make_entry(3, usage=TokenUsage(1, 1, 2), created_at=2000.0),
        ],
    )
    before = len(subject.changes)
    await store.add_hits({key(1): (2, 5001.0), key(2): (1, 5002.0), key("gone"): (4, 5003.0)})
    await store.add_hits({key(1): (1, 6000.0)})
    await store.add_hits({})
    one, two, three = [await store.get(key(n)) for n in (1, 2, 3)]
    assert one is not None and two is not None and three is not None
    assert (one.hit_count, one.last_hit_at) == (3, 6000.0)
    assert (two.hit_count, two.last_hit_at) == (1, 5002.0)
    assert (three.hit_count, three.last_hit_at) == (0, None)
    assert await store.get(key("gone")) is None
    # A hit changes no answer: nothing in front of the store has to forget anything.
    assert subject.changes[before:] == []

    stats = await store.stats()
    assert stats.entries == 3
    assert stats.tokens_saved == 120 * 3 + 10 * 1
    assert (stats.oldest, stats.newest) == (1000.0, 3000.0)
    assert stats.db_size_bytes > 0


@pytest_twisted.ensureDeferred
async def test_stats_of_an_empty_store(subject: Subject) -> None:
    stats = await subject.store.stats()
    assert (stats.entries, stats.tokens_saved, stats.oldest, stats.newest) == (0, 0, None, None)
    assert stats.db_size_bytes >= 0


# Removing by filter and by expiry


@pytest_twisted.ensureDeferred
async def test_prune_removes_the_entries_expired_at_that_time(subject: Subject) -> None:
    store = subject.store
    expiries = {0: None, 1: 100.0, 2: 150.0, 3: 200.0, 4: 300.0}
    await put_all(store, [make_entry(n, expires_at=at) for n, at in expiries.items()])
    subject.changes.clear()
    assert await store.prune(now=150.0) == 2  # expired at 150: expires_at <= 150
    assert await store.prune(now=150.0) == 0
    assert [(c.kind, sorted(c.keys)) for c in subject.changes] == [
        (ChangeKind.PURGE, sorted([key(1), key(2)]))
    ]
    assert sorted(await listed(store)) == sorted([key(0), key(3), key(4)])
    assert await store.prune(now=1e12) == 2
    assert await listed(store) == [key(0)]  # never expires


@pytest_twisted.ensureDeferred
async def test_purge_removes_what_the_filter_matches_and_names_the_keys(
    subject: Subject,
) -> None:
    store = subject.store
    entries = [
        make_entry(n, namespace="ci" if n % 2 else "", created_at=1000.0 + n) for n in range(6)
    ]
    await put_all(store, entries)
    subject.changes.clear()
    where = EntryFilter(namespace="ci", since=1002.0)
    assert await store.purge(where) == 2
    assert await store.purge(where) == 0
    assert [(c.kind, sorted(c.keys), c.local) for c in subject.changes] == [
        (ChangeKind.PURGE, sorted([key(3), key(5)]), True)
    ]
    assert await listed(store) == [key(4), key(2), key(1), key(0)]
    assert await store.purge(EVERY_ENTRY) == 4
    assert (await store.stats()).entries == 0


@pytest_twisted.ensureDeferred
async def test_a_large_prune_removes_every_expired_entry_and_names_each(subject: Subject) -> None:
    store = subject.store
    await store.put_all([make_entry(n, expires_at=100.0 + n % 2) for n in range(1203)])
    await store.put(make_entry("forever"))
    subject.changes.clear()
    assert await store.prune(now=101.0) == 1203
    assert [(kind, sorted(keys)) for kind, keys in merged(subject.changes)] == [
        (ChangeKind.PURGE, sorted(key(n) for n in range(1203)))
    ]
    assert await listed(store) == [key("forever")]


# Bounds: stored sizes and eviction


def used_at(n: int) -> float:
    return 1_700_000_000.0 + n


@pytest_twisted.ensureDeferred
async def test_stored_bytes_are_each_entrys_packed_values_and_a_fixed_overhead(
    subject: Subject,
) -> None:
    store = subject.store
    entries = [
        make_entry(1),
        make_entry(2, body=random.Random(2).randbytes(20_000)),
        make_entry(3, request=StoredRequest(body=b"{}" * 500), timeline=((5, 1), (14, 2))),
    ]
    await store.put_all(entries)
    sizes = [stored_size(entry) for entry in entries]
    assert sizes[1] > 20_000 > sizes[0] > 0  # random bytes do not compress
    assert (await store.stats()).stored_bytes == sum(sizes)
    await store.add_hits({key(1): (3, 5.0)})  # a hit changes no size
    await store.put(make_entry(2))  # a replacement counts once, at its new size
    assert (await store.stats()).stored_bytes == sizes[0] + sizes[2] + stored_size(make_entry(2))
    await store.delete(key(3))
    await store.purge(EntryFilter(path="/v1/chat/completions"))
    assert (await store.stats()).stored_bytes == 0


@pytest_twisted.ensureDeferred
async def test_evict_removes_the_least_recently_used_until_both_bounds_hold(
    subject: Subject,
) -> None:
    store = subject.store
    # Created in order 0..9; 2 and 5 were hit since, 5 most recently.
    await store.put_all([make_entry(n, created_at=used_at(n)) for n in range(10)])
    await store.add_hits({key(2): (1, used_at(20)), key(5): (4, used_at(30))})
    subject.changes.clear()
    assert await store.evict(max_bytes=None, max_entries=6) == 4
    assert [(c.kind, sorted(c.keys)) for c in subject.changes] == [
        (ChangeKind.PURGE, sorted(key(n) for n in (0, 1, 3, 4)))
    ]
    assert sorted(await listed(store)) == sorted(key(n) for n in (2, 5, 6, 7, 8, 9))
    # Bounded by size: every entry here is the same size.
    each = (await store.stats()).stored_bytes // 6
    assert await store.evict(max_bytes=3 * each + each // 2, max_entries=None) == 3
    assert sorted(await listed(store)) == sorted(key(n) for n in (9, 2, 5))
    # Both bounds: the stricter one decides.
    assert await store.evict(max_bytes=10 * each, max_entries=1) == 2
    assert await listed(store) == [key(5)]
    assert (await store.stats()).stored_bytes == each


@pytest_twisted.ensureDeferred
async def test_evict_within_the_bounds_removes_nothing(subject: Subject) -> None:
    store = subject.store
    assert await store.evict(max_bytes=0, max_entries=0) == 0  # empty
    await store.put_all([make_entry(n) for n in range(3)])
    size = (await store.stats()).stored_bytes
    subject.changes.clear()
    assert await store.evict(max_bytes=None, max_entries=None) == 0
    assert await store.evict(max_bytes=size, max_entries=3) == 0
    assert subject.changes == []
    assert await store.evict(max_bytes=size - 1, max_entries=None) == 1


@pytest_twisted.ensureDeferred
async def test_a_large_eviction_removes_all_it_must_and_names_each_key(subject: Subject) -> None:
    store = subject.store
    await store.put_all([make_entry(n, created_at=used_at(n)) for n in range(1300)])
    subject.changes.clear()
    assert await store.evict(max_bytes=None, max_entries=150) == 1150
    assert [(kind, sorted(keys)) for kind, keys in merged(subject.changes)] == [
        (ChangeKind.PURGE, sorted(key(n) for n in range(1150)))
    ]
    assert (await store.stats()).entries == 150


@pytest_twisted.ensureDeferred
async def test_an_eviction_counts_the_puts_asked_for_before_it(subject: Subject) -> None:
    store = subject.store
    await store.put(make_entry(0, created_at=used_at(0)))
    subject.hold()
    puts = [store.put(make_entry(n, created_at=used_at(n))) for n in (1, 2)]
    evicted = store.evict(max_bytes=None, max_entries=1)
    subject.release()
    await gatherResults(puts)
    assert await evicted == 2
    assert await listed(store) == [key(2)]


# Listings


@pytest_twisted.ensureDeferred
async def test_a_listing_is_newest_first_ties_by_key_and_pages_by_cursor(
    subject: Subject,
) -> None:
    store = subject.store
    entries = [make_entry(n, created_at=1000.0 + n % 3) for n in range(8)]
    await put_all(store, entries)
    first = await store.list_entries(limit=3)
    assert [info.key for info in first.entries] == newest_first(entries)[:3]
    assert first.entries[0] == EntryInfo.of(max(entries, key=lambda e: (e.created_at, e.key)))
    assert first.cursor is not None
    for limit in (1, 2, 3, 7, 8, 100):
        assert await listed(store, limit=limit) == newest_first(entries)
    last = await store.list_entries(limit=8)
    assert last.cursor is None  # no empty page to fetch after the last one


@pytest_twisted.ensureDeferred
async def test_each_filter_field_narrows_a_listing(subject: Subject) -> None:
    store = subject.store
    entries = [
        make_entry(
            n,
            provider=["openai", "anthropic"][n % 2],
            model=[None, "gpt-4o", "claude"][n % 3],
            namespace=["", "ci"][n // 6],
            created_at=1000.0 + n,
        )
        for n in range(12)
    ]
    await put_all(store, entries)
    for where in (
        EntryFilter(provider="anthropic"),
        EntryFilter(model="gpt-4o"),
        EntryFilter(namespace=""),
        EntryFilter(since=1003.0),
        EntryFilter(until=1003.0),
        EntryFilter(since=1003.0, until=1003.0),
        EntryFilter(provider="openai", namespace="ci", since=1004.0, until=1011.0),
        EntryFilter(model="nothing"),
    ):
        expected = newest_first([e for e in entries if where.matches(e)])
        assert await listed(store, where, limit=2) == expected, where


@pytest_twisted.ensureDeferred
async def test_a_cursor_that_is_not_one_is_refused(subject: Subject) -> None:
    with pytest.raises(StoreError):
        await subject.store.list_entries(cursor="not a cursor")


_TIMES = st.sampled_from([1000.0, 1000.5, 1001.0, 1002.0])
_entries = st.lists(
    st.builds(
        lambda n, created_at, provider, model, namespace: make_entry(
            n, created_at=created_at, provider=provider, model=model, namespace=namespace
        ),
        st.integers(0, 10_000),
        _TIMES,
        st.sampled_from(["openai", "anthropic"]),
        st.sampled_from([None, "a", "b"]),
        st.sampled_from(["", "ci"]),
    ),
    max_size=25,
    unique_by=lambda entry: entry.key,
)
_filters = st.builds(
    EntryFilter,
    provider=st.none() | st.sampled_from(["openai", "anthropic"]),
    model=st.none() | st.sampled_from(["a", "b"]),
    namespace=st.none() | st.sampled_from(["", "ci"]),
    since=st.none() | _TIMES,
    until=st.none() | _TIMES,
)
_examples = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_examples
@given(entries=_entries, where=_filters, limit=st.integers(1, 6))
@pytest_twisted.ensureDeferred
async def test_pages_together_are_the_filtered_entries_newest_first(
    subject: Subject, entries: list[Entry], where: EntryFilter, limit: int
) -> None:
    store = subject.store
    await store.purge(EVERY_ENTRY)
    await put_all(store, entries)
    assert await listed(store, where, limit) == newest_first(
        [e for e in entries if where.matches(e)]
    )


@_examples
@given(
    entries=_entries,
    meanwhile=st.lists(st.tuples(st.sampled_from(["put", "delete"]), _TIMES), max_size=8),
    where=_filters,
    limit=st.integers(1, 4),
)
@pytest_twisted.ensureDeferred
async def test_entries_stored_or_removed_between_pages_neither_repeat_nor_skip_one(
    subject: Subject,
    entries: list[Entry],
    meanwhile: list[tuple[str, float]],
    where: EntryFilter,
    limit: int,
) -> None:
    store = subject.store
    await store.purge(EVERY_ENTRY)
    await put_all(store, entries)
    steps = iter(enumerate(meanwhile))
    removed: set[str] = set()
    added: list[Entry] = []
    keys: list[str] = []
    cursor = None
    for _ in range(1000):
        page = await store.list_entries(where, limit, cursor)
        keys += [info.key for info in page.entries]
        if page.cursor is None:
            break
        cursor = page.cursor
        step = next(steps, None)
        if step is not None:
            n, (operation, created_at) = step
            if operation == "put":
                added.append(make_entry(f"meanwhile-{n}", created_at=created_at))
                await store.put(added[-1])
            elif entries:
                removed.add(entries[n % len(entries)].key)
                await store.delete(entries[n % len(entries)].key)
    else:
        raise AssertionError("the listing never ended")
    assert len(keys) == len(set(keys)), "an entry repeated"
    stayed = [e for e in entries if where.matches(e) and e.key not in removed]
    assert set(keys) >= {e.key for e in stayed}, "an entry skipped"
    assert set(keys) <= {e.key for e in [*entries, *added] if where.matches(e)}
    order = {e.key: (e.created_at, e.key) for e in [*entries, *added]}
    assert [order[k] for k in keys] == sorted((order[k] for k in keys), reverse=True)


# Text search


def chat(n: int | str, prompt: str, answer: str, **fields: Any) -> Entry:
    """An OpenAI chat entry: ``prompt`` asked, ``answer`` answered."""
    request = {
        "model": fields.get("model", "gpt-4o-mini"),
        "messages": [{"role": "user", "content": prompt}],
    }
    body = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
    return make_entry(
        n,
        body=json.dumps(body).encode(),
        request=StoredRequest(body=json.dumps(request).encode()),
        **fields,
    )


@pytest_twisted.ensureDeferred
async def test_a_text_search_finds_the_model_the_prompt_or_the_answer_in_any_case(
    subject: Subject,
) -> None:
    store = subject.store
    entries = [
        chat(0, "What is the WEATHER in Oslo?", "Rain.", created_at=1000.0),
        chat(1, "Tell me a joke", "Why did the weather vane spin?", created_at=1001.0),
        chat(2, "Hello", "Hi!", model="weather-model-1", created_at=1002.0),
        chat(3, "100% sure? a_b", "Straße", created_at=1003.0),
        chat(4, "Hello", "Hi!", created_at=1004.0),
        make_entry(5, body=b"not json", created_at=1005.0),
    ]
    await put_all(store, entries)

    async def found(text: str, **fields: Any) -> list[str]:
        return await listed(store, EntryFilter(text=text, **fields), limit=2)

    assert await found("Weather") == [key(2), key(1), key(0)]
    assert await found("weather", model="gpt-4o-mini") == [key(1), key(0)]
    assert await found("% s") == [key(3)]  # % and _ are themselves, not patterns
    assert await found("a_b") == [key(3)]
    assert await found("%") == [key(3)]
    assert await found("a%b") == []
    assert await found("STRASSE") == [key(3)]  # casefolded: ß is ss
    assert await found("hello") == [key(4), key(2)]
    assert await found("nowhere at all") == []
    assert await found("") == newest_first(entries)  # no text: every entry
    assert await found("gpt-4o-mini") == newest_first(
        [e for e in entries if e.model == "gpt-4o-mini"]
    )
    assert await store.purge(EntryFilter(text="WEATHER", until=1002.0)) == 2
    assert await listed(store) == [key(5), key(4), key(3), key(2)]


_words = st.sampled_from(["Rain", "rain", "%", "_", "ß", "SS", "é", "İ", "a b", "\n", "x\x00"])
_text = st.lists(_words, max_size=4).map("".join)
_searched = st.lists(
    st.builds(
        lambda n, created_at, model, prompt, answer: chat(
            n, prompt, answer, model=model, created_at=created_at
        ),
        st.integers(0, 10_000),
        _TIMES,
        st.none() | _text,
        _text,
        _text,
    ),
    max_size=12,
    unique_by=lambda entry: entry.key,
)


@_examples
@given(entries=_searched, text=_text | st.text(max_size=3), limit=st.integers(1, 5))
@pytest_twisted.ensureDeferred
async def test_a_text_search_finds_exactly_the_entries_the_filter_matches(
    subject: Subject, entries: list[Entry], text: str, limit: int
) -> None:
    store = subject.store
    await store.purge(EVERY_ENTRY)
    await put_all(store, entries)
    where = EntryFilter(text=text)
    matched = [e for e in entries if where.matches(e)]
    assert await listed(store, where, limit) == newest_first(matched)
    assert await store.purge(where) == len(matched)
    assert sorted(await listed(store)) == sorted(e.key for e in entries if e not in matched)


@pytest_twisted.ensureDeferred
async def test_entries_stored_before_the_search_text_are_found_once_reopened(
    subject: Subject,
) -> None:
    """
    A database of schema version 6 (no search text) migrated by a store
    opening it: its entries are given their search text, quietly (no change
    published), and a search finds them at once, however many there are.
    """
    if subject.execute is None or subject.reopen is None:
        pytest.skip("the in-memory double has no schema")
    entries = [chat(n, f"question {n}", f"answer {n}", created_at=1000.0 + n) for n in range(450)]
    entries.append(make_entry("broken", body=b"\xff", created_at=999.0))
    await put_all(subject.store, entries)
    await subject.store.close()
    subject.execute(
        [
            "DROP INDEX entries_unsearchable",
            "ALTER TABLE entries DROP COLUMN search_text",
            "UPDATE meta SET value = '6' WHERE name = 'schema_version'",
        ]
    )
    store = subject.reopen()
    store.open()
    heard: list[Change] = []
    store.changes.subscribe(heard.append)
    try:
        assert await listed(store, EntryFilter(text="ANSWER 7"), limit=50) == newest_first(
            [e for e in entries if "answer 7" in e.body.decode("latin-1")]
        )
        assert await listed(store, EntryFilter(text="question 449")) == [key(449)]
        assert await listed(store, EntryFilter(text="gpt-4o-mini")) == newest_first(entries)
        await store.put(chat("new", "question new", "answer new"))
        assert await listed(store, EntryFilter(text="new")) == [key("new")]
    finally:
        await store.close()
    assert [change.kind for change in heard if change.local] == [ChangeKind.PUT]


@pytest_twisted.ensureDeferred
async def test_tokens_saved_are_summed_by_model_and_by_namespace(subject: Subject) -> None:
    store = subject.store
    entries = [
        make_entry(1, model="a", namespace="", usage=TokenUsage.of(10, 0), hit_count=3),
        make_entry(2, model="a", namespace="ci", usage=TokenUsage.of(5, 5), hit_count=1),
        make_entry(3, model="b", namespace="ci", usage=TokenUsage.of(100, 0), hit_count=1),
        make_entry(4, model=None, namespace="ci", usage=TokenUsage.of(7, 0), hit_count=0),
        make_entry(5, model="c", namespace="", usage=TokenUsage.of(7, 0), hit_count=0),
        make_entry(6, model="c", namespace="", usage=TokenUsage.of(7, 0), hit_count=0),
    ]
    await put_all(store, entries)
    await store.add_hits({key(4): (0, 5.0)})
    assert await store.tokens_saved_by("model") == [
        Saving("b", 1, 100),
        Saving("a", 2, 40),
        Saving("c", 2, 0),
        Saving(None, 1, 0),
    ]
    assert await store.tokens_saved_by("namespace") == [Saving("ci", 3, 110), Saving("", 3, 30)]
    assert await store.tokens_saved_by("model", limit=2) == [
        Saving("b", 1, 100),
        Saving("a", 2, 40),
    ]
    await store.add_hits({key(5): (1, 6.0)})
    assert (await store.tokens_saved_by("model"))[2] == Saving("c", 2, 7)
    with pytest.raises(ValueError):
        await store.tokens_saved_by("path")  # type: ignore[arg-type]


# Keys


@pytest_twisted.ensureDeferred
async def test_scan_keys_visits_every_stored_key_as_raw_bytes(subject: Subject) -> None:
    store = subject.store
    await put_all(store, [make_entry(n) for n in range(600)])
    await store.delete(key(7))
    seen: list[bytes] = []
    await store.scan_keys(seen.append)
    assert sorted(seen) == sorted(bytes.fromhex(key(n)) for n in range(600) if n != 7)


# The change feed


@pytest_twisted.ensureDeferred
async def test_each_committed_write_is_published_in_commit_order(subject: Subject) -> None:
    store = subject.store
    await put_all(store, [make_entry(1), make_entry(2, namespace="ci", expires_at=10.0)])
    await store.put(make_entry(3, namespace="ci"))
    await store.put(make_entry(1, body=b"again"))
    await store.delete(key(1))
    await store.delete(key(1))  # nothing to delete: nothing published
    await store.purge(EntryFilter(namespace="ci", until=1_700_000_000.0))  # matches nothing
    await store.prune(now=10.0)
    await store.purge(EntryFilter(namespace="ci"))
    published = merged(subject.changes)
    assert [(kind, sorted(keys)) for kind, keys in published] == [
        (ChangeKind.PUT, sorted([key(1), key(2), key(3), key(1)])),
        (ChangeKind.DELETE, [key(1)]),
        (ChangeKind.PURGE, sorted([key(2), key(3)])),
    ]
    assert all(change.local for change in subject.changes)


@pytest_twisted.ensureDeferred
async def test_a_change_is_published_before_its_caller_hears_of_the_commit(
    subject: Subject,
) -> None:
    store = subject.store
    events: list[object] = []
    store.changes.subscribe(lambda change: events.append((change.kind, change.keys)))
    put = store.put(make_entry(1))
    put.addCallback(lambda _: events.append("put committed"))
    await put
    deleted = store.delete(key(1))
    deleted.addCallback(lambda _: events.append("delete committed"))
    await deleted
    assert events == [
        (ChangeKind.PUT, (key(1),)),
        "put committed",
        (ChangeKind.DELETE, (key(1),)),
        "delete committed",
    ]


@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_raises_does_not_stop_the_others(subject: Subject) -> None:
    def broken(change: Change) -> None:
        raise RuntimeError("a bug in a subscriber")

    heard: list[Change] = []
    unsubscribe = subject.store.changes.subscribe(broken)
    subject.store.changes.subscribe(heard.append)
    await subject.store.put(make_entry(1))
    unsubscribe()
    await subject.store.delete(key(1))
    assert merged(heard) == [(ChangeKind.PUT, [key(1)]), (ChangeKind.DELETE, [key(1)])]


# Against a model


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("seed", range(4))
async def test_random_operations_match_a_dict(subject: Subject, seed: int) -> None:
    rng = random.Random(seed)
    store = subject.store
    model: dict[str, Entry] = {}
    keys = [key(n) for n in range(6)]
    for step in range(80):
        k = rng.choice(keys)
        operation = rng.choice(["put", "put", "get", "get", "delete", "list", "hit"])
        context = f"seed {seed}, step {step}"
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
                created_at=float(rng.randint(0, 20)),
                model=rng.choice([None, "gpt-4o", "claude-3-5-sonnet"]),
                namespace=rng.choice(["", "a", "b"]),
                usage=TokenUsage(rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 99)),
                expires_at=rng.choice([None, float(step + 60)]),
            )
            await store.put(entry)
            model[k] = entry
        elif operation == "get":
            assert await store.get(k) == model.get(k), context
        elif operation == "delete":
            assert await store.delete(k) is (k in model), context
            model.pop(k, None)
        elif operation == "hit":
            await store.add_hits({k: (2, float(step))})
            if k in model:
                model[k] = evolve(
                    model[k], hit_count=model[k].hit_count + 2, last_hit_at=float(step)
                )
        else:
            page = await store.list_entries(limit=10)
            expected = sorted(model.values(), key=lambda e: (e.created_at, e.key), reverse=True)
            assert list(page.entries) == [EntryInfo.of(e) for e in expected], context
    for k in keys:
        assert await store.get(k) == model.get(k)
    assert (await store.stats()).entries == len(model)


# Claims: one fetch for a key among the processes sharing the store


@pytest_twisted.ensureDeferred
async def test_a_claim_is_held_by_one_holder_until_released(subject: Subject) -> None:
    store = subject.store
    assert await store.claim(key(1), "a", 30.0) is True
    assert await store.claim(key(1), "b", 30.0) is False
    assert await store.claim(key(1), "a", 30.0) is True  # renewing one's own claim
    assert await store.claim(key(2), "b", 30.0) is True  # a claim is per key
    await store.release(key(1), "b")  # not b's to release
    assert await store.claim(key(1), "b", 30.0) is False
    await store.release(key(1), "a")
    assert await store.claim(key(1), "b", 30.0) is True
    assert subject.changes == []  # a claim changes no answer


@pytest_twisted.ensureDeferred
async def test_a_claim_whose_holder_stopped_renewing_it_lapses(subject: Subject) -> None:
    store = subject.store
    assert await store.claim(key(1), "dead", 0.05) is True
    deadline = reactor.seconds() + 10
    while not await store.claim(key(1), "alive", 30.0):
        assert reactor.seconds() < deadline, "the dead holder's claim never lapsed"
        await deferLater(reactor, 0.05)
    assert await store.claim(key(1), "dead", 30.0) is False


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_on_one_key_give_it_to_exactly_one(subject: Subject) -> None:
    store = subject.store
    subject.hold()
    asked = [store.claim(key(7), f"holder-{n}", 30.0) for n in range(8)]
    subject.release()
    taken = await gatherResults(asked)
    assert sorted(taken) == [False] * 7 + [True]


@pytest_twisted.ensureDeferred
async def test_the_put_of_a_claimed_key_gives_the_claim_up(subject: Subject) -> None:
    store = subject.store
    entry = make_entry(1)
    assert await store.claim(entry.key, "a", 30.0) is True
    await store.put(entry)
    assert await store.claim(entry.key, "b", 30.0) is True  # no release needed
    await store.release(entry.key, "a")  # nothing left of a's: b keeps it
    assert await store.claim(entry.key, "c", 30.0) is False


# One bad entry fails alone


@pytest_twisted.ensureDeferred
async def test_an_entry_the_database_cannot_encode_fails_alone(subject: Subject) -> None:
    """
    Puts committed together must not fail together: one entry the database
    refuses (a count past its INTEGER) fails alone, the others in its batch
    are stored, and the store goes on taking writes.
    """
    store = subject.store
    if isinstance(store, MemoryStore):
        pytest.skip("the in-memory double holds any value")
    good = [make_entry(n) for n in range(4)]
    bad = make_entry("bad", usage=TokenUsage.of(2**70, 1))
    subject.hold()
    puts = [store.put(entry) for entry in good[:2]] + [store.put(bad)]
    puts += [store.put(entry) for entry in good[2:]]
    subject.release()
    outcomes = await gatherResults(
        [d.addCallbacks(lambda _: "stored", lambda failure: failure.type) for d in puts]
    )
    assert outcomes == ["stored", "stored", StoreError, "stored", "stored"]
    assert {entry.key for entry in good} == {
        e.key for e in [await store.get(entry.key) for entry in good] if e is not None
    }
    assert await store.get(bad.key) is None
    assert store.writable
    published = {key for change in subject.local() for key in change.keys}
    assert published == {entry.key for entry in good}


@pytest_twisted.ensureDeferred
async def test_a_model_name_with_a_lone_surrogate_is_stored(subject: Subject) -> None:
    store = subject.store
    entry = make_entry(1, model="gpt-\ud800", namespace="n")
    await put_all(store, [entry, make_entry(2)])
    stored = await store.get(entry.key)
    assert stored is not None and stored.body == entry.body
    assert stored.model is not None and stored.model.startswith("gpt-")
    assert await store.get(make_entry(2).key) is not None
