"""
The interface every cache store offers: the engine, the management commands,
the admin API and the pytest plugin use nothing else, so a second engine
(PostgreSQL) is one more implementation, not a change to its callers.

It is deliberately narrow: the in-memory speed-ups (hot entries, the key
filter, batching of hit counts) belong to the cache engine, which keeps them
right through the store's change feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred

from stasis.model import Entry, EntryFilter, Page, StoreStats
from stasis.store._feed import ChangeFeed

__all__ = ["EVERY_ENTRY", "Store", "StoreError"]

#: The filter that matches every entry.
EVERY_ENTRY = EntryFilter()


class StoreError(Exception):
    """The cache database cannot be opened or used; the message says why."""


class Store(Protocol):
    """
    What stasis needs from a cache database.

    Every method returning a Deferred fires once its work is committed (or
    read); writes are applied in the order they were asked for, so a delete
    asked for after a put is never undone by that put. Each committed change
    is published on :attr:`changes`, this process's at once, other
    processes' within about a second.
    """

    @property
    def secret(self) -> bytes:
        """The HMAC secret for credential fingerprints; fixed for the database's life."""

    @property
    def writable(self) -> bool:
        """Whether a miss should be stored; False while the database refuses writes."""

    @property
    def location(self) -> str:
        """Where the database is, for log lines and errors: never a password."""

    @property
    def changes(self) -> ChangeFeed:
        """Committed puts, deletes and purges, naming their keys."""

    def open(self) -> None:
        """Connect, create or migrate the schema; :class:`StoreError` if it cannot be used."""

    async def close(self) -> None:
        """Wait for the writes asked for so far, then disconnect."""

    def get(self, key: str) -> Deferred[Entry | None]: ...

    def put(self, entry: Entry) -> Deferred[None]:
        """Store ``entry``, replacing any entry of its key; fires once committed."""

    def delete(self, key: str) -> Deferred[bool]:
        """Remove ``key``'s entry; fires with whether there was one."""

    def list_entries(
        self, where: EntryFilter = EVERY_ENTRY, limit: int = 100, cursor: str | None = None
    ) -> Deferred[Page]:
        """
        Entries matching ``where``, newest first, at most ``limit`` of them.

        ``cursor`` comes from the previous page: paging by cursor, not by offset,
        stays as fast at the 100,000th entry as at the first, and an entry
        stored meanwhile neither repeats nor skips one.
        """

    def purge(self, where: EntryFilter) -> Deferred[int]:
        """Remove every entry matching ``where``; fires with how many."""

    def prune(self, now: float) -> Deferred[int]:
        """Remove the entries expired at ``now``; fires with how many."""

    def stats(self) -> Deferred[StoreStats]:
        """Counted after every write asked for so far."""

    def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> Deferred[None]:
        """Add hits to entries: ``{key: (count, time of the last)}``."""

    def scan_keys(self, visit: Callable[[bytes], None]) -> Deferred[None]:
        """
        Call ``visit`` with every stored key (its 32 raw bytes), off the reactor
        thread where the store has threads, letting other threads run now and
        then: a million keys must not hold up requests.
        """
