"""
The engine's in-memory layers over a real SQLite store, while another process
(a raw ``sqlite3`` connection: a management command, another daemon) writes
to the same file: its delete evicts exactly that key within a second, and its
insert empties nothing and reaches the key filter.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from stasis.cache import CacheEngine
from stasis.model import Entry, TokenUsage
from stasis.routing import Routes
from stasis.store import Store, open_store
from stasis.upstream.aws import AwsSigner
from tests.waiting import wait_for

#: Another process's change must be seen within a second; the poll allows for a loaded machine.
SEEN_WITHIN = 3.0


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def entry(n: int | str) -> Entry:
    return Entry(
        key=key(n),
        status=200,
        headers=((b"content-type", b"application/json"),),
        body=b'{"n": "%s"}' % str(n).encode(),
        created_at=1_700_000_000.0,
        path="/v1/chat/completions",
        provider="openai",
        usage=TokenUsage.of(1, 2),
    )


class NoUpstream:
    timeout = 1.0

    def request(self, *args: object) -> object:
        raise AssertionError("these tests never go upstream")


@pytest_twisted.async_yield_fixture
async def engine(tmp_path: Path) -> AsyncIterator[CacheEngine]:
    store: Store = open_store(str(tmp_path / "cache.db"), reactor)
    store.open()
    cache = CacheEngine(
        store=store,
        upstream=NoUpstream(),  # type: ignore[arg-type]
        routes=Routes(everything="http://upstream.invalid"),
        clock=reactor,
        signer=AwsSigner(),
    )
    cache.start()
    try:
        yield cache
    finally:
        await cache.close()
        await store.close()


async def _warm(engine: CacheEngine, *names: str) -> None:
    for name in names:
        await engine.store.put(entry(name))
        found = await engine._lookup(key(name))
        assert found == entry(name)
    assert all(engine.hot.get(key(name)) is not None for name in names)


def _raw(engine: CacheEngine) -> sqlite3.Connection:
    return sqlite3.connect(engine.store.location, isolation_level=None)


@pytest_twisted.ensureDeferred
async def test_another_process_deleting_a_key_evicts_that_key_only(
    engine: CacheEngine,
) -> None:
    await _warm(engine, "kept", "deleted")
    with _raw(engine) as other:
        other.execute("DELETE FROM entries WHERE key = ?", (bytes.fromhex(key("deleted")),))
    await wait_for(lambda: engine.hot.get(key("deleted")) is None, SEEN_WITHIN)
    assert engine.hot.get(key("kept")) == entry("kept")
    assert await engine._lookup(key("deleted")) is None


@pytest_twisted.ensureDeferred
async def test_another_process_inserting_empties_nothing_and_is_known_to_the_key_filter(
    engine: CacheEngine,
) -> None:
    await _warm(engine, "mine")
    # A miss: the key filter is read.
    assert await engine._lookup(key("not yet")) is None
    await wait_for(lambda: engine.key_filter.ready)
    assert engine.key_filter.absent(key("theirs"))
    other_store = open_store(engine.store.location, reactor)
    other_store.open()
    try:
        await other_store.put(entry("theirs"))
    finally:
        await other_store.close()
    await wait_for(lambda: not engine.key_filter.absent(key("theirs")), SEEN_WITHIN)
    assert engine.hot.get(key("mine")) == entry("mine")
    assert await engine._lookup(key("theirs")) == entry("theirs")
