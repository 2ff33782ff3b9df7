"""
The key filter: a first-time request may skip its lookup, a stored one never does.

Property tests for the Bloom filter itself, then the SQLite store that keeps
one: loaded from the database at open, told of every put at once, and of other
processes' inserts within a second.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from stasis.store._known import MAX_BITS, MIN_BITS, KnownKeys
from twisted.internet import reactor
from twisted.internet.task import deferLater

from stasis.store import SQLiteStore
from tests.test_store import key, make_entry, open_store
from tests.waiting import wait_for

digests = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(digests, max_size=300), st.lists(digests, max_size=30))
def test_a_key_once_added_is_never_called_absent(added: list[bytes], raw: list[bytes]) -> None:
    known = KnownKeys()
    for n, digest in enumerate(added):
        # Both spellings of a key reach the same bits: the hex a request is keyed
        # by, and the raw bytes the database keeps.
        if n % 2:
            known.add(digest.hex())
        else:
            known.add_digest(digest)
    assert all(known.might_hold(digest.hex()) for digest in added)
    # A handful of keys in a 1 MiB filter: another key is absent unless added.
    for digest in raw:
        assert known.might_hold(digest.hex()) == (digest in added)


def test_most_keys_never_added_are_known_absent() -> None:
    known = KnownKeys(expected=50_000)
    for n in range(50_000):
        known.add(key(n))
    false_maybes = sum(known.might_hold(key(f"other-{n}")) for n in range(20_000))
    assert false_maybes < 20_000 * 0.01
    assert all(known.might_hold(key(n)) for n in range(0, 50_000, 7))


def test_the_filter_is_sized_for_the_keys_expected() -> None:
    assert KnownKeys().size_bytes == MIN_BITS // 8
    assert KnownKeys(expected=2_000_000).size_bytes == (1 << 25) // 8
    assert KnownKeys(expected=10**12).size_bytes == MAX_BITS // 8


def _loaded(store: SQLiteStore) -> Callable[[], bool]:
    """Whether the store has read its keys: a key never stored is known absent."""
    return lambda: store.known_absent(key("never stored"))


@pytest_twisted.ensureDeferred
async def test_the_store_reads_its_keys_after_its_first_miss(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    first = open_store(path)
    for n in range(50):
        await first.put(make_entry(n))
    await first.close()

    store = open_store(path)
    try:
        # Hits alone never need the filter: until a lookup misses, all are looked up.
        assert (await store.get(key(0))) == make_entry(0)
        await deferLater(reactor, 0.1, lambda: None)
        assert not store.known_absent(key("never stored"))
        assert (await store.get(key("never stored"))) is None
        # A put while the keys are read, and one before its commit, are both known.
        during = store.put(make_entry(50))
        await wait_for(_loaded(store))
        assert not any(store.known_absent(key(n)) for n in range(51))
        stored = store.put(make_entry(51))
        assert not store.known_absent(key(51))
        await during
        await stored
        assert (await store.get(key(51))) == make_entry(51)
        assert store.known_absent(key(52))
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_another_process_inserting_is_known_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = open_store(path)
    other = open_store(path)
    try:
        assert (await store.get(key("first miss"))) is None
        await wait_for(_loaded(store))
        assert store.known_absent(key("theirs"))
        await other.put(make_entry("theirs"))
        await wait_for(lambda: not store.known_absent(key("theirs")))
        # And a plain sqlite3 writer (a management command, say) as well.
        digest = hashlib.sha256(b"raw").digest()
        with sqlite3.connect(path) as raw:
            raw.execute(
                "INSERT INTO entries (key, method, path, status, headers, body, body_size,"
                " created_at) VALUES (?, 'POST', '/v1/x', 200, x'', x'', 0, 0)",
                (digest,),
            )
        await wait_for(lambda: not store.known_absent(digest.hex()))
    finally:
        await other.close()
        await store.close()
