"""
The cache store: one interface, and the adbapi implementation on SQLite.

Everything the proxy and the management commands need from storage goes
through :class:`Store`, so that a second engine (PostgreSQL) is one more
implementation, not a change to its callers.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from stasis.store._entry import Entry, StoreStats, TokenUsage
from stasis.store._sqlite import SQLiteStore, StoreError

__all__ = ["Entry", "SQLiteStore", "Store", "StoreError", "StoreStats", "TokenUsage"]


class Store(Protocol):
    """What the daemon needs from a cache database."""

    @property
    def secret(self) -> bytes:
        """The HMAC secret for credential fingerprints; fixed for the database's life."""

    @property
    def writable(self) -> bool:
        """Whether a miss should be stored; False while the database refuses writes."""

    def open(self) -> None: ...

    async def close(self) -> None: ...

    def get(self, key: str) -> Deferred[Entry | None]: ...

    def put(self, entry: Entry) -> Deferred[None]: ...

    def delete(self, key: str) -> Deferred[bool]: ...

    def list_entries(self, limit: int = 100, offset: int = 0) -> Deferred[list[Entry]]: ...

    def stats(self) -> Deferred[StoreStats]: ...

    def prune(self, created_before: float) -> Deferred[int]: ...

    def record_hit(self, key: str, when: float) -> None: ...
