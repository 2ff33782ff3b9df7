"""
The interface every cache store offers: the daemon and the management
commands use nothing else, so a second engine is one more implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred

from stasis.store._entry import Entry, StoreStats

__all__ = ["Store"]


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

    def peek(self, key: str) -> Entry | None:
        """The entry if it is at hand without I/O (in memory), else None."""

    def known_absent(self, key: str) -> bool:
        """True only if the database certainly lacks ``key``, known without I/O."""

    def put(self, entry: Entry) -> Deferred[None]: ...

    def delete(self, key: str) -> Deferred[bool]: ...

    def list_entries(self, limit: int = 100, offset: int = 0) -> Deferred[list[Entry]]: ...

    def stats(self) -> Deferred[StoreStats]: ...

    def prune(self, created_before: float) -> Deferred[int]: ...

    def record_hit(self, key: str, when: float) -> None: ...

    def on_external_change(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (within a second or so) when another process changes the data."""
