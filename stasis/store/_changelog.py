"""
How a process learns which keys other processes changed in an SQLite database.

Triggers on ``entries`` log every insert, delete and update of an answer to
the ``changes`` table (``schema/sqlite/0003-changes.sql``), whoever makes it:
another daemon, a management command, a raw ``sqlite3`` client. Once a
second the store's writer thread asks ``PRAGMA data_version`` whether another
connection committed; if so it reads the log rows after the last one it read.

The log holds this process's own changes too, which were published when they
committed. In each write transaction the log's highest seq is read before and
after the statements: the writer holds the database's write lock, so the rows
between are this transaction's, and they are skipped when the log is read.

If rows this process never read are gone (trimmed while it was not looking,
the log replaced, the seqs gone backwards) it cannot know what changed, and
says so with a :attr:`~stasis.model.ChangeKind.RESET`; so it does when more
keys changed at once than are worth naming.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Iterable
from typing import Any, cast

from attrs import define, field

from stasis.log import logger
from stasis.model import Change, ChangeKind
from stasis.store._dialect import Noticed

__all__ = ["KEEP_SECONDS", "MAX_NAMED", "TRIM_EVERY_SECONDS", "ChangeLog"]

log = logger("stasis.store")

#: Log rows are kept this long: far longer than any open store waits between looks.
KEEP_SECONDS = 300.0
#: How often a store trims the log (when the database can be written).
TRIM_EVERY_SECONDS = 60.0
#: More unread rows than this in one look are published as one RESET instead
#: of naming every key (a mass purge by another process): forgetting everything
#: costs the in-memory layers less than being told of each key.
MAX_NAMED = 10_000

#: The highest seq ever given (AUTOINCREMENT keeps it, even with the log trimmed empty).
_HIGHEST = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)"
#: Deletes the rows older than the cutoff. Seqs rise with time, so the first row
#: young enough bounds the rest, and no index on ``at`` is needed.
_TRIM = (
    "DELETE FROM changes WHERE seq < COALESCE("
    "(SELECT seq FROM changes WHERE at >= ? ORDER BY seq LIMIT 1), "
    "(SELECT MAX(seq) + 1 FROM changes))"
)
_KINDS = {"put": ChangeKind.PUT, "delete": ChangeKind.DELETE}


def _highest(cursor: Any) -> int:
    return int(cursor.execute(_HIGHEST).fetchone()[0])


def _hex(key: object) -> str:
    # A key written as TEXT by a raw SQL client is no key stasis looks up; name
    # it all the same, so that nothing is ever silently left out.
    return (key.encode() if isinstance(key, str) else bytes(key)).hex()  # type: ignore[call-overload]


def _grouped(rows: Iterable[tuple[int, str, object]]) -> tuple[Change, ...]:
    """One change per run of rows of one kind, in seq order, each key named once."""
    changes = []
    for kind, run in itertools.groupby(rows, key=lambda row: row[1]):
        keys = tuple(dict.fromkeys(_hex(key) for _, _, key in run))
        # An unknown kind still names a key whose entry may be stale: forget it.
        changes.append(Change(_KINDS.get(kind, ChangeKind.DELETE), keys, local=False))
    return tuple(changes)


@define
class ChangeLog:
    """
    The :class:`~stasis.store._dialect.ChangeWatcher` of an SQLite database.

    Used only on the store's writer thread (see the protocol), so its state
    needs no lock.
    """

    #: Every log row up to this seq has been published or was this process's.
    last_seen: int
    #: Seq ranges ``(after, upto]`` this process wrote while rows before them
    #: were still unread; skipped when those are read.
    _own: list[tuple[int, int]] = field(factory=list, init=False)
    _data_version: int | None = field(default=None, init=False)
    _trimmed_at: float = field(default=-math.inf, init=False)

    @classmethod
    def at_end(cls, connection: sqlite3.Connection) -> ChangeLog:
        """A watcher that has seen everything logged so far."""
        return cls(_highest(connection))

    def begin_write(self, cursor: Any) -> object:
        return _highest(cursor)

    def end_write(self, cursor: Any, mark: object) -> object:
        return (mark, _highest(cursor))

    def committed(self, mark: object) -> None:
        before, after = cast(tuple[int, int], mark)
        if after == before:
            return  # logged nothing (counting hits)
        if before == self.last_seen:
            self.last_seen = after  # nothing unread before ours: the usual case
        elif self._own and self._own[-1][1] == before:
            self._own[-1] = (self._own[-1][0], after)
        else:
            self._own.append((before, after))

    def poll(self, connection: Any, now: float, writable: bool) -> Noticed:
        cursor = connection.cursor()
        try:
            version = int(cursor.execute("PRAGMA data_version").fetchone()[0])
            first = self._data_version is None
            committed = not first and version != self._data_version
            self._data_version = version
            # The first look has no data version to compare with: read the log.
            changes = self._read(cursor) if committed or first else ()
            if writable and now - self._trimmed_at >= TRIM_EVERY_SECONDS:
                self._trimmed_at = now
                self._trim(cursor, now - KEEP_SECONDS)
            return Noticed(committed, changes)
        finally:
            cursor.close()

    def close(self) -> None:
        """Nothing to let go of: the log is read on the store's own writer connection."""

    def _reset(self, highest: int) -> tuple[Change, ...]:
        self.last_seen = highest
        self._own = []
        return (Change(ChangeKind.RESET, (), local=False),)

    def _read(self, cursor: Any) -> tuple[Change, ...]:
        highest = _highest(cursor)
        if highest == self.last_seen:
            return ()
        if highest < self.last_seen:
            return self._reset(highest)  # the log was replaced or rebuilt
        (lowest,) = cursor.execute("SELECT MIN(seq) FROM changes").fetchone()
        if lowest is None or lowest > self.last_seen + 1:
            return self._reset(highest)  # rows this process never read were trimmed
        spans = []
        start = self.last_seen
        for after, upto in self._own:
            if after > start:
                spans.append((start, after))
            start = max(start, upto)
        if start < highest:
            spans.append((start, highest))
        if sum(upto - after for after, upto in spans) > MAX_NAMED:
            return self._reset(highest)
        rows: list[tuple[int, str, object]] = []
        for after, upto in spans:
            rows += cursor.execute(
                "SELECT seq, kind, key FROM changes WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, upto),
            ).fetchall()
        self.last_seen = highest
        self._own = []
        return _grouped(rows)

    def _trim(self, cursor: Any, cutoff: float) -> None:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(_TRIM, (cutoff,))
            cursor.execute("COMMIT")
        except sqlite3.Error as e:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            log.debug("cannot trim the change log: {error}", error=e)
