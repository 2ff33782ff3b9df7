"""
An in-memory :class:`stasis.store.Store`: the test double the engine's tests run
on without threads, held to the same contract tests as the real stores.

Faults can be switched on to show how the engine behaves when its database
refuses reads or writes, or holds a commit back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from attrs import define, evolve, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from stasis.model import (
    Change,
    ChangeKind,
    Entry,
    EntryFilter,
    EntryInfo,
    Page,
    Saving,
    StoreStats,
)
from stasis.store import (
    EVERY_ENTRY,
    SAVING_COLUMNS,
    BadCursor,
    ChangeFeed,
    SavingColumn,
    StoreError,
)
from stasis.store._rows import stored_size

_T = TypeVar("_T")


def _order(entry: Entry) -> tuple[float, str]:
    return (entry.created_at, entry.key)


def _last_used(entry: Entry) -> float:
    return entry.created_at if entry.last_hit_at is None else entry.last_hit_at


@define
class MemoryStore:
    clock: IReactorTime
    entries: dict[str, Entry] = field(factory=dict)
    fail_reads: bool = False
    fail_writes: bool = False
    writable: bool = True
    secret: bytes = b"s" * 32
    location: str = "memory"
    changes: ChangeFeed = field(factory=ChangeFeed)
    #: How many lookups reached the "database".
    gets: int = 0
    #: While True, writes wait (uncommitted, invisible to get) until release_writes().
    hold_writes: bool = False
    #: What ``Store.held_up`` says: writes wait for a lock (set it with hold_writes).
    held_up: bool = False
    _held: list[tuple[Entry, Deferred[None]]] = field(factory=list)
    #: The other writes, and the reads that count the writes before them, asked
    #: for while writes were held: (how many puts were held then, what to do).
    _waiting: list[tuple[int, Callable[[], None]]] = field(factory=list)
    _open: bool = False
    #: Whether other daemons store into it too (``Store.shared``).
    shared: bool = False
    #: Live claims: key -> (holder, when it lapses on ``clock``).
    claims: dict[str, tuple[str, float]] = field(factory=dict)
    #: Each entry's stored size, worked out once: it packs the entry, as the SQL store does.
    _sizes: dict[str, tuple[Entry, int]] = field(factory=dict)

    def stored_size(self, entry: Entry) -> int:
        known = self._sizes.get(entry.key)
        if known is not None and all(
            getattr(known[0], name) is getattr(entry, name)
            for name in ("headers", "body", "timeline", "request")
        ):
            return known[1]  # the same answer (counting hits makes a new Entry of it)
        size = stored_size(entry)
        self._sizes[entry.key] = (entry, size)
        return size

    def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _commit(self, change: Change) -> None:
        self.changes.publish(change)

    def get(self, key: str, *, request: bool = False) -> Deferred[Entry | None]:
        self.gets += 1
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))
        entry = self.entries.get(key)
        if entry is not None and not request:
            entry = evolve(entry, request=None)
        return succeed(entry)

    def get_many(self, keys: Sequence[str]) -> Deferred[list[Entry]]:
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))
        return succeed([self.entries[key] for key in keys if key in self.entries])

    def match_keys(self, prefix: str, limit: int = 2) -> Deferred[tuple[str, ...]]:
        prefix = prefix.lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return self._in_turn(lambda: succeed(()))
        return self._in_turn(
            lambda: succeed(tuple(sorted(k for k in self.entries if k.startswith(prefix))[:limit]))
        )

    def put_all(self, entries: Sequence[Entry]) -> Deferred[int]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def put_all() -> Deferred[int]:
            for entry in entries:
                self.entries[entry.key] = entry
            if entries:
                keys = tuple(dict.fromkeys(entry.key for entry in entries))
                self._commit(Change(ChangeKind.PUT, keys))
            return succeed(len(entries))

        return self._in_turn(put_all)

    def put(self, entry: Entry) -> Deferred[None]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))
        if self.hold_writes or self._held:
            committed: Deferred[None] = Deferred()
            self._held.append((entry, committed))
            return committed
        self.entries[entry.key] = entry
        self.claims.pop(entry.key, None)  # the fetch it was claimed for is over
        self._commit(Change(ChangeKind.PUT, (entry.key,)))
        return succeed(None)

    def release_writes(self) -> None:
        """Commit the held writes, in the order they were asked for, and stop holding."""
        self.hold_writes = False
        held, self._held = self._held, []
        waiting, self._waiting = self._waiting, []
        for position in range(len(held) + 1):
            for _, action in (w for w in waiting if w[0] == position):
                action()
            if position < len(held):
                entry, committed = held[position]
                self.entries[entry.key] = entry
                self.claims.pop(entry.key, None)
                self._commit(Change(ChangeKind.PUT, (entry.key,)))
                committed.callback(None)

    def _in_turn(self, run: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        """``run()`` now, or, while writes are held, once the writes before it are released."""
        if not (self.hold_writes or self._held):
            return run()
        done: Deferred[_T] = Deferred()

        def later() -> None:
            run().chainDeferred(done)

        self._waiting.append((len(self._held), later))
        return done

    def delete(self, key: str) -> Deferred[bool]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def delete() -> Deferred[bool]:
            existed = self.entries.pop(key, None) is not None
            if existed:
                self._commit(Change(ChangeKind.DELETE, (key,)))
            return succeed(existed)

        return self._in_turn(delete)

    def claim(self, key: str, holder: str, seconds: float) -> Deferred[bool]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def claim() -> Deferred[bool]:
            now = self.clock.seconds()
            current = self.claims.get(key)
            if current is not None and current[0] != holder and current[1] > now:
                return succeed(False)
            self.claims[key] = (holder, now + seconds)
            return succeed(True)

        return self._in_turn(claim)

    def release(self, key: str, holder: str) -> Deferred[None]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def release() -> Deferred[None]:
            if self.claims.get(key, ("", 0.0))[0] == holder:
                del self.claims[key]
            return succeed(None)

        return self._in_turn(release)

    def external(self, change: Change) -> None:
        """Pretend another process changed the database."""
        for key in change.keys:
            if change.kind is not ChangeKind.PUT:
                self.entries.pop(key, None)
        self.changes.publish(evolve(change, local=False))

    def list_entries(
        self, where: EntryFilter = EVERY_ENTRY, limit: int = 100, cursor: str | None = None
    ) -> Deferred[Page]:
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))
        after: tuple[float, str] | None = None
        if cursor is not None:
            at, slash, key = cursor.partition("/")
            try:
                after = (float(at), key)
            except ValueError:
                slash = ""
            if not slash:
                return fail(BadCursor(f"not a listing cursor: {cursor!r}"))

        def listing() -> Deferred[Page]:
            chosen = sorted(
                (e for e in self.entries.values() if where.matches(e)), key=_order, reverse=True
            )
            if after is not None:
                chosen = [e for e in chosen if _order(e) < after]
            page = chosen[: max(limit, 0)]
            more = len(chosen) > len(page)
            next_cursor = f"{page[-1].created_at!r}/{page[-1].key}" if more and page else None
            return succeed(Page(tuple(EntryInfo.of(e) for e in page), next_cursor))

        return self._in_turn(listing)

    def _remove(self, chosen: Callable[[], list[str]]) -> Deferred[int]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def remove() -> Deferred[int]:
            keys = chosen()
            for key in keys:
                del self.entries[key]
            if keys:
                self._commit(Change(ChangeKind.PURGE, tuple(keys)))
            return succeed(len(keys))

        return self._in_turn(remove)

    def purge(self, where: EntryFilter) -> Deferred[int]:
        return self._remove(lambda: [k for k, e in self.entries.items() if where.matches(e)])

    def prune(self, now: float) -> Deferred[int]:
        return self._remove(lambda: [k for k, e in self.entries.items() if not e.is_fresh(now)])

    def evict(self, max_bytes: int | None, max_entries: int | None) -> Deferred[int]:
        def least_recently_used() -> list[str]:
            order = sorted(self.entries.values(), key=_last_used)
            count, size = len(order), sum(self.stored_size(e) for e in order)
            chosen = []
            for entry in order:
                if (max_entries is None or count <= max_entries) and (
                    max_bytes is None or size <= max_bytes
                ):
                    break
                chosen.append(entry.key)
                count -= 1
                size -= self.stored_size(entry)
            return chosen

        return self._remove(least_recently_used)

    def tokens_saved_by(self, column: SavingColumn, limit: int = 20) -> Deferred[list[Saving]]:
        if column not in SAVING_COLUMNS:
            return fail(ValueError(f"tokens are summed by model or namespace, not {column!r}"))
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))

        def count() -> Deferred[list[Saving]]:
            sums: dict[str | None, tuple[int, int]] = {}
            for e in self.entries.values():
                value = e.model if column == "model" else e.namespace
                entries, saved = sums.get(value, (0, 0))
                sums[value] = (entries + 1, saved + e.usage.total * e.hit_count)
            order = sorted(
                sums.items(),
                key=lambda item: (-item[1][1], -item[1][0], item[0] is None, item[0] or ""),
            )
            return succeed([Saving(v, n, saved) for v, (n, saved) in order[: max(limit, 0)]])

        return self._in_turn(count)

    def stats(self) -> Deferred[StoreStats]:
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))

        def count() -> Deferred[StoreStats]:
            values = list(self.entries.values())
            return succeed(
                StoreStats(
                    entries=len(values),
                    tokens_saved=sum(e.usage.total * e.hit_count for e in values),
                    db_size_bytes=sum(len(e.body) for e in values),
                    oldest=min((e.created_at for e in values), default=None),
                    newest=max((e.created_at for e in values), default=None),
                    stored_bytes=sum(self.stored_size(e) for e in values),
                )
            )

        return self._in_turn(count)

    def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> Deferred[None]:
        if self.fail_writes:
            return fail(StoreError("database or disk is full"))

        def add() -> Deferred[None]:
            for key, (count, when) in hits.items():
                entry = self.entries.get(key)
                if entry is not None:
                    self.entries[key] = evolve(
                        entry, hit_count=entry.hit_count + count, last_hit_at=when
                    )
            return succeed(None)

        return self._in_turn(add)

    def scan_keys(self, visit: Callable[[bytes], None]) -> Deferred[None]:
        if self.fail_reads:
            return fail(StoreError("disk I/O error"))
        for key in list(self.entries):
            visit(bytes.fromhex(key))
        return succeed(None)
