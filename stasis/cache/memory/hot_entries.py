"""
A bounded in-memory map of hot entries in front of the store.

A hit served from memory skips adbapi's thread hop, which costs more reactor
time than the SQLite lookup itself. The map is bounded by bytes (bodies and
headers) and evicts the least recently used entry first.

It never serves what the store no longer holds: a put is remembered once it
is committed (unless its key was deleted or put again meanwhile), and every
change the store's feed reports forgets its keys, this process's and, within
a second, other processes'.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, evolve, field

from stasis.model import Change, ChangeKind, Entry

__all__ = ["HotEntries"]

#: Bookkeeping per entry beyond its body and headers, roughly.
_OVERHEAD = 512


def _weight(entry: Entry) -> int:
    return len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers) + _OVERHEAD


@define
class HotEntries:
    """
    Entries by key, at most ``budget`` bytes of them.

    An entry larger than a quarter of the budget is never kept, so one huge
    stream cannot flush everything else; a budget of 0 keeps nothing.
    """

    budget: int
    _entries: OrderedDict[str, Entry] = field(factory=OrderedDict, init=False)
    _used: int = field(default=0, init=False)
    #: Entries put and not yet committed, by key: remembered once they are.
    _putting: dict[str, Entry] = field(factory=dict, init=False)

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def remember(self, entry: Entry) -> None:
        """Keep an entry just read from the store (or just stored), without its request."""
        if entry.request is not None:
            # A hit never reads the request an answer was stored for, and it
            # may be tens of MB that the budget, which weighs answers, would
            # not count: an entry just stored would keep it for as long as
            # its answer is hot.
            entry = evolve(entry, request=None)
        self.forget(entry.key)
        weight = _weight(entry)
        if weight > self.budget // 4:
            return
        self._entries[entry.key] = entry
        self._used += weight
        while self._used > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self._used -= _weight(evicted)

    def forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._used -= _weight(entry)

    def clear(self) -> None:
        self._entries.clear()
        self._putting.clear()
        self._used = 0

    def putting(self, entry: Entry) -> None:
        """``entry`` is being stored: :meth:`committed` will remember it."""
        self._putting[entry.key] = entry

    def committed(self, entry: Entry, stored: bool) -> None:
        """
        The put of ``entry`` settled; remember it if it was stored and nothing
        changed its key meanwhile (a delete, or a later put).
        """
        if self._putting.get(entry.key) is entry:
            del self._putting[entry.key]
            if stored:
                self.remember(entry)

    def on_change(self, change: Change) -> None:
        if change.kind is ChangeKind.RESET:
            self.clear()
            return
        if change.kind is ChangeKind.PUT and change.local:
            return  # this process's own put: committed() decides
        for key in change.keys:
            self.forget(key)
            if change.kind is not ChangeKind.PUT:
                self._putting.pop(key, None)
