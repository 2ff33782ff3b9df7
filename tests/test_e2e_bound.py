"""
End to end: a real daemon with ``--max-entries`` keeps its cache, and its
file, from growing past the bound, and keeps the entries in use.

Thousands of distinct chat calls go through a ``twistd -n stasis`` in front
of the fake upstream, from a few threads with keep-alive connections; a few
early answers are asked for again between waves of new ones. SQLite reuses
the pages that evicted entries free, so the database file stops growing once
the bound is reached; what still grows (the change log, kept five minutes
for other processes) is small beside the answers.
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream

BOUND = 400
HOT = 10
#: New calls between two uses of the hot ones: fewer than BOUND - HOT.
WAVE = 380
#: Distinct calls stored before the file is measured, then stored after it.
FIRST, MORE = 4 * WAVE + HOT, 3 * WAVE
#: Each call's prompt (and so its echoed answer) is this long.
PROMPT_BYTES = 5000
#: The fake upstream takes ~40 ms a call (delayed ACKs), so many are in flight.
THREADS = 32
#: How much the file may still grow once at its plateau: the change log's rows
#: for the calls after it (kept five minutes, for other processes; about 60
#: bytes a put or an eviction, 2 % here).
MARGIN = 0.05

#: Random words: text that packs to about 60 %, so answers are a few KB in the file.
_TEXT = " ".join(
    "".join(random.Random(n).choices("etaoinshrdlucmfwypvbgkjqxz", k=2 + n % 8))
    for n in range(PROMPT_BYTES)
)


def prompt(n: int) -> str:
    """Call ``n``'s prompt: distinct, and as varied as prose (cheap: the test makes thousands)."""
    start = (n * 7919) % (len(_TEXT) - PROMPT_BYTES)
    return f"call {n}: {_TEXT[start : start + PROMPT_BYTES]}"


class Client:
    """Chat calls from a few threads, each with its own keep-alive connection."""

    def __init__(self, url: str) -> None:
        self.netloc = urlsplit(url).netloc
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(THREADS)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(self.netloc, timeout=30)
        return connection  # type: ignore[no-any-return]

    def call(self, n: int) -> tuple[str, str]:
        """The X-Stasis-Status and X-Stasis-Key of call ``n``."""
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(n)}]}
        )
        connection = self._connection()
        connection.request(
            "POST",
            "/v1/chat/completions",
            body,
            {"Authorization": "Bearer sk-bound", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        return response.getheader("x-stasis-status", ""), response.getheader("x-stasis-key", "")

    def calls(self, numbers: range | list[int]) -> list[tuple[str, str]]:
        return list(self.pool.map(self.call, numbers))


@pytest.fixture
def client_of() -> Iterator[Callable[[Daemon], Client]]:
    made: list[Client] = []

    def make(daemon: Daemon) -> Client:
        made.append(Client(daemon.url))
        return made[-1]

    yield make
    for client in made:
        client.pool.shutdown()


def hit_counts(db: Path, keys: list[str]) -> list[int]:
    with closing(sqlite3.connect(db)) as connection:
        return [
            row[0] if row else 0
            for row in (
                connection.execute(
                    "SELECT hit_count FROM entries WHERE key = ?", (bytes.fromhex(k),)
                ).fetchone()
                for k in keys
            )
        ]


def size(db: Path) -> int:
    return db.stat().st_size


def test_a_bounded_cache_keeps_its_most_used_entries_and_its_file_stops_growing(
    start: Callable[..., Daemon],
    upstream: FakeUpstream,
    client_of: Callable[[Daemon], Client],
) -> None:
    daemon = start("--max-entries", str(BOUND), "--log-level", "warn")
    client = client_of(daemon)

    def entries() -> int:
        return int(daemon.get_json("/stats")["totalEntries"])

    hot = client.calls(range(HOT))
    assert {status for status, _ in hot} == {"MISS"}
    hot_keys = [k for _, k in hot]
    rounds = 0

    def use_the_hot_ones() -> None:
        # Used again, and those uses written down (within a second), before
        # the next wave: so they are among the most recently used.
        nonlocal rounds
        rounds += 1
        assert {status for status, _ in client.calls(range(HOT))} == {"HIT"}
        poll_until(lambda: min(hit_counts(daemon.db, hot_keys)) >= rounds)

    def store(numbers: range) -> None:
        for wave in range(numbers.start, numbers.stop, WAVE):
            use_the_hot_ones()
            statuses = client.calls(range(wave, min(wave + WAVE, numbers.stop)))
            assert {status for status, _ in statuses} == {"MISS"}
            # Eviction runs in the background, about once a second: waiting
            # for it between waves keeps the most the file ever holds at one
            # wave over the bound, however slowly a busy machine runs it.
            poll_until(lambda: entries() <= BOUND)

    store(range(HOT, FIRST))
    poll_until(lambda: entries() <= BOUND)
    plateau = size(daemon.db)

    store(range(FIRST, FIRST + MORE))
    poll_until(lambda: entries() <= BOUND)
    after = size(daemon.db)

    stats = daemon.get_json("/stats")
    assert stats["maxEntries"] == BOUND and stats["maxSizeBytes"] is None
    assert stats["evictions"] >= FIRST + MORE - BOUND
    # Every stored entry is still about the size of one answer and request.
    assert 2_000 < stats["storedBytes"] / stats["totalEntries"] < 20_000
    assert plateau <= after <= plateau * (1 + MARGIN), (plateau, after)
    # Unbounded, the calls would take well over twice as much.
    assert after * 2 < (FIRST + MORE) * stats["storedBytes"] / stats["totalEntries"]
    calls = len(upstream.calls())
    assert calls == FIRST + MORE
    # The hot ones were never evicted: served from the cache, no upstream call.
    assert {status for status, _ in client.calls(range(HOT))} == {"HIT"}
    assert len(upstream.calls()) == calls
