"""
A bounded in-memory map of hot entries in front of the database.

A hit served from memory skips adbapi's thread hop, which costs more reactor
time than the SQLite lookup itself. The map is bounded by bytes (bodies and
headers) and evicts the least recently used entry first.

It never serves what the database no longer holds: entries are replaced on
``put`` (kept once committed, unless deleted meanwhile), dropped on
``delete``/``prune``, and the whole map is dropped when another process (a
management command, a second daemon) commits to the same database, which the
store notices within a second.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from stasis.model import Entry, StoreStats
from stasis.store._protocol import Store

__all__ = ["HotCache"]

#: Bookkeeping per entry beyond its body and headers, roughly.
_OVERHEAD = 512


def _weight(entry: Entry) -> int:
    return len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers) + _OVERHEAD


@define
class HotCache:
    """
    Wraps a store (anything with the :class:`~stasis.store.Store` methods).

    ``budget`` is in bytes; an entry larger than a quarter of it is never
    kept in memory, so one huge stream cannot flush everything else.
    """

    store: Store
    budget: int
    _entries: OrderedDict[str, Entry] = field(factory=OrderedDict, init=False)
    _used: int = field(default=0, init=False)
    #: Entries put and not yet committed, by key: remembered once they are.
    _putting: dict[str, Entry] = field(factory=dict, init=False)

    @property
    def secret(self) -> bytes:
        return self.store.secret

    @property
    def writable(self) -> bool:
        return self.store.writable

    @property
    def used(self) -> int:
        return self._used

    def open(self) -> None:
        self.store.open()
        self.store.on_external_change(self.clear)

    async def close(self) -> None:
        self.clear()
        await self.store.close()

    def clear(self) -> None:
        self._entries.clear()
        self._used = 0

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._used -= _weight(entry)

    def _remember(self, entry: Entry) -> None:
        self._forget(entry.key)
        weight = _weight(entry)
        if weight > self.budget // 4:
            return
        self._entries[entry.key] = entry
        self._used += weight
        while self._used > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self._used -= _weight(evicted)

    def peek(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def known_absent(self, key: str) -> bool:
        return self.store.known_absent(key)

    def get(self, key: str) -> Deferred[Entry | None]:
        entry = self.peek(key)
        if entry is not None:
            return succeed(entry)

        def found(entry: Entry | None) -> Entry | None:
            if entry is not None:
                self._remember(entry)
            return entry

        return self.store.get(key).addCallback(found)

    def put(self, entry: Entry) -> Deferred[None]:
        # Forget first: if the write fails, the old answer must not linger here.
        self._forget(entry.key)
        self._putting[entry.key] = entry

        def settled(result: object) -> object:
            # Unless the key was deleted, or put again, while this commit ran.
            if self._putting.get(entry.key) is entry:
                del self._putting[entry.key]
                if not isinstance(result, Failure):
                    self._remember(entry)
            return result

        return self.store.put(entry).addBoth(settled)

    def delete(self, key: str) -> Deferred[bool]:
        self._forget(key)
        self._putting.pop(key, None)
        return self.store.delete(key)

    def prune(self, created_before: float) -> Deferred[int]:
        self.clear()
        self._putting.clear()
        return self.store.prune(created_before)

    def list_entries(self, limit: int = 100, offset: int = 0) -> Deferred[list[Entry]]:
        return self.store.list_entries(limit, offset)

    def stats(self) -> Deferred[StoreStats]:
        return self.store.stats()

    def record_hit(self, key: str, when: float) -> None:
        self.store.record_hit(key, when)

    def on_external_change(self, callback: Callable[[], object]) -> None:
        self.store.on_external_change(callback)
