"""
An in-memory :class:`stasis.store.Store` for resource-level tests that run without threads.

Failures can be switched on to show how the proxy behaves when its database
refuses reads or writes.
"""

from __future__ import annotations

from attrs import define, evolve, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from stasis.store import Entry, StoreStats


@define
class MemoryStore:
    clock: IReactorTime
    entries: dict[str, Entry] = field(factory=dict)
    fail_reads: bool = False
    fail_writes: bool = False
    writable: bool = True
    secret: bytes = b"s" * 32
    #: How many lookups went to the "database" (``get``), as opposed to ``peek``.
    gets: int = 0
    #: Whether known_absent answers (as the SQLite store's key filter does once loaded).
    knows_keys: bool = False
    #: Keys known_absent calls absent though present: another process's insert not yet seen.
    unseen: set[str] = field(factory=set)
    #: While True, puts wait (uncommitted, invisible to get) until release_writes().
    hold_writes: bool = False
    _held: list[tuple[Entry, Deferred[None]]] = field(factory=list)

    def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def get(self, key: str) -> Deferred[Entry | None]:
        self.gets += 1
        if self.fail_reads:
            return fail(OSError("disk I/O error"))
        return succeed(self.entries.get(key))

    def peek(self, key: str) -> Entry | None:
        return None if self.fail_reads else self.entries.get(key)

    def known_absent(self, key: str) -> bool:
        return key in self.unseen or (self.knows_keys and key not in self.entries)

    def put(self, entry: Entry) -> Deferred[None]:
        if self.fail_writes:
            return fail(OSError("database or disk is full"))
        if self.hold_writes:
            committed: Deferred[None] = Deferred()
            self._held.append((entry, committed))
            return committed
        self.entries[entry.key] = entry
        return succeed(None)

    def release_writes(self) -> None:
        """Commit the held puts, in order, and stop holding."""
        self.hold_writes = False
        held, self._held = self._held, []
        for entry, committed in held:
            self.entries[entry.key] = entry
            committed.callback(None)

    def delete(self, key: str) -> Deferred[bool]:
        return succeed(self.entries.pop(key, None) is not None)

    def list_entries(self, limit: int = 100, offset: int = 0) -> Deferred[list[Entry]]:
        ordered = sorted(self.entries.values(), key=lambda e: e.created_at, reverse=True)
        return succeed(ordered[offset : offset + limit])

    def stats(self) -> Deferred[StoreStats]:
        values = list(self.entries.values())
        return succeed(
            StoreStats(
                entries=len(values),
                tokens_saved=sum(e.usage.total * e.hit_count for e in values),
                db_size_bytes=sum(len(e.body) for e in values),
                oldest=min((e.created_at for e in values), default=None),
                newest=max((e.created_at for e in values), default=None),
            )
        )

    def prune(self, created_before: float) -> Deferred[int]:
        old = [k for k, e in self.entries.items() if e.created_at < created_before]
        for key in old:
            del self.entries[key]
        return succeed(len(old))

    def on_external_change(self, callback: object) -> None:
        pass

    def record_hit(self, key: str, when: float) -> None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries[key] = evolve(entry, hit_count=entry.hit_count + 1, last_hit_at=when)
