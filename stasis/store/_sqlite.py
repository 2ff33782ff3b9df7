"""
The cache store on SQLite, through a one-connection adbapi pool.

The reactor thread never waits on the database: every query runs in adbapi's
thread pools. Writes go through one connection, because SQLite allows one
writer anyway and a single writer cannot deadlock against itself; reads have
connections of their own, so a lookup never queues behind a commit (WAL lets
readers and the writer, and management commands, work side by side).

Writes are batched: entries stored while a commit is under way go into the
next transaction together (group commit), and a hit is counted in memory and
written at most a second later, so a hit costs no write transaction at all.

A Bloom filter of the keys in the database (:mod:`stasis.store._known`) lets
a first-time request skip its lookup. It is read on a reader thread after the
first lookup that finds nothing (a daemon that only replays never needs it),
then kept up to date with this daemon's puts and, within a second, other
processes' inserts.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
import zlib
from array import array
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import define, field
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from stasis.log import logger
from stasis.model import Entry, StoreStats, TokenUsage
from stasis.store._codec import decode, encode
from stasis.store._known import KnownKeys
from stasis.store._protocol import StoreError
from stasis.store._schema import SchemaError, check_version, migrate, read_secret

__all__ = ["SQLiteStore", "StoreError"]

_T = TypeVar("_T")

log = logger("stasis.store")

#: How long the store reports itself unwritable after a failed write.
WRITE_RETRY_SECONDS = 60.0
#: Hits are written to the database this long after the first unwritten one.
HIT_FLUSH_SECONDS = 1.0
#: How often to look for other processes' changes (management commands, other daemons).
WATCH_SECONDS = 1.0

_ENTRY_COLUMNS = (
    "key, namespace, provider, model, method, path, status, headers, body, "
    "input_tokens, output_tokens, total_tokens, created_at, expires_at, last_hit_at, hit_count, "
    "timeline"
)


def _encode_timeline(timeline: tuple[tuple[int, int], ...] | None) -> bytes | None:
    """Eight bytes an event (two unsigned 32-bit ints), compressed: streams have thousands."""
    if timeline is None:
        return None
    flat = array("I", [number for pair in timeline for number in pair])
    if sys.byteorder == "big":  # pragma: no cover
        flat.byteswap()
    return zlib.compress(flat.tobytes())


def _decode_timeline(raw: bytes | None) -> tuple[tuple[int, int], ...] | None:
    if raw is None:
        return None
    flat = array("I")
    flat.frombytes(zlib.decompress(raw))
    if sys.byteorder == "big":  # pragma: no cover
        flat.byteswap()
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


def _row_to_entry(row: Any) -> Entry:
    headers, body = decode(row[8], row[7])
    return Entry(
        key=bytes(row[0]).hex(),
        namespace=row[1],
        provider=row[2],
        model=row[3],
        method=row[4],
        path=row[5],
        status=row[6],
        headers=headers,
        body=body,
        usage=TokenUsage(input=row[9], output=row[10], total=row[11]),
        created_at=row[12],
        expires_at=row[13],
        last_hit_at=row[14],
        hit_count=row[15],
        timeline=_decode_timeline(row[16]),
    )


def _configure(connection: sqlite3.Connection) -> None:
    # Rows are ~1 KB: 8 KiB pages leave far less of each page unused than the
    # default 4 KiB (~810 bytes an entry against ~890), and a commit writes half
    # the WAL bytes 16 KiB pages would (the same size on disk). Only takes effect
    # on a new, empty database.
    connection.execute("PRAGMA page_size=8192")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.execute("PRAGMA synchronous=NORMAL")
    # A commit that crosses SQLite's 1000-page mark copies the WAL back into
    # the database before it returns: ~10 ms, with every answer waiting on its
    # commit held behind it. The daemon checkpoints on a reader instead
    # (SQLiteStore._checkpoint), beside the commits, not inside one.
    connection.execute("PRAGMA wal_autocheckpoint=0")
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as e:
        # A read-only database keeps its journal mode; open() finds it read-only.
        if "readonly" not in str(e):
            raise


_INSERT = (
    f"INSERT OR REPLACE INTO entries ({_ENTRY_COLUMNS}, body_size) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _entry_row(entry: Entry) -> tuple[Any, ...]:
    return (
        bytes.fromhex(entry.key),
        entry.namespace,
        entry.provider,
        entry.model,
        entry.method,
        entry.path,
        entry.status,
        b"",  # the headers travel in the packed value now
        encode(entry.headers, entry.body),
        entry.usage.input,
        entry.usage.output,
        entry.usage.total,
        entry.created_at,
        entry.expires_at,
        entry.last_hit_at,
        entry.hit_count,
        _encode_timeline(entry.timeline),
        len(entry.body),
    )


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@define
class SQLiteStore:
    """
    The adbapi-backed store. Call :meth:`open` before anything else.

    :meth:`open` prepares the schema synchronously, on purpose: it runs once,
    before the daemon listens, so a database that cannot be used stops the
    start-up with a clear error instead of failing every request later.
    """

    path: str
    reactor: IReactorTime
    #: Concurrent lookups; more threads than cores buys nothing.
    readers: int = 2
    _pool: adbapi.ConnectionPool | None = field(default=None, init=False)
    _read_pool: adbapi.ConnectionPool | None = field(default=None, init=False)
    _queued: list[tuple[Entry, Deferred[None]]] = field(factory=list, init=False)
    _secret: bytes = field(default=b"", init=False)
    _pending_hits: dict[str, tuple[int, float]] = field(factory=dict, init=False)
    _flush_call: IDelayedCall | None = field(default=None, init=False)
    _write_failed_at: float | None = field(default=None, init=False)
    _read_only: bool = field(default=False, init=False)
    _watchers: list[Callable[[], object]] = field(factory=list, init=False)
    _watch: LoopingCall | None = field(default=None, init=False)
    _data_version: int | None = field(default=None, init=False)
    #: The entries in the commit under way; empty when none is.
    _batch: list[tuple[Entry, Deferred[None]]] = field(factory=list, init=False)
    #: None until the keys in the database have been read.
    _known: KnownKeys | None = field(default=None, init=False)
    #: Keys put while the keys were being read; the largest rowid read so far.
    _known_pending: list[str] = field(factory=list, init=False)
    _known_rowid: int = field(default=0, init=False)
    _known_scanning: bool = field(default=False, init=False)
    #: Whether anything was written since the last checkpoint.
    _wrote: bool = field(default=False, init=False)

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def writable(self) -> bool:
        """False while writes are known to fail; misses then go through uncached."""
        if self._read_only:
            return False
        if self._write_failed_at is None:
            return True
        return self.reactor.seconds() - self._write_failed_at >= WRITE_RETRY_SECONDS

    def open(self) -> None:
        if self._pool is not None:
            return
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the cache database {self.path!r}: {e}") from e
        try:
            try:
                _configure(connection)
                migrate(connection)
            except sqlite3.OperationalError as e:
                if "readonly" not in str(e):
                    raise
                # A read-only copy of a current database still serves its hits.
                self._read_only = True
                log.warn(
                    "the cache database {path} is read-only: serving hits, not storing",
                    path=self.path,
                )
                check_version(connection)
            self._secret = read_secret(connection)
        except (sqlite3.Error, SchemaError) as e:
            raise StoreError(f"cannot use the cache database {self.path!r}: {e}") from e
        finally:
            connection.close()
        self._pool, self._read_pool = (
            adbapi.ConnectionPool(
                "sqlite3",
                self.path,
                check_same_thread=False,
                isolation_level=None,
                timeout=5.0,
                cp_min=1,
                cp_max=size,
                cp_openfun=_configure,
                cp_reactor=self.reactor,
            )
            for size in (1, self.readers)
        )
        self._watchers.append(self._scan_new_keys)
        self._watch = LoopingCall(lambda: ensureDeferred(self._every_second()))
        self._watch.clock = self.reactor
        self._watch.start(WATCH_SECONDS, now=True).addErrback(
            lambda failure: log.failure("watching the cache database failed", failure)
        )

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        self._watch = None
        try:
            await self._writes_settled()
            await self.flush_hits()
        finally:
            self._pool.close()
            self._pool = None
            if self._read_pool is not None:
                self._read_pool.close()
                self._read_pool = None

    @property
    def pool(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    def _interact(self, interaction: Callable[[Any], _T]) -> Deferred[_T]:
        """Run ``interaction(cursor)`` on the writer's connection, in one transaction."""
        d: Deferred[_T] = self.pool.runInteraction(interaction)
        return d

    def _read(self, query: Callable[[Any], _T]) -> Deferred[_T]:
        """Run ``query(cursor)`` on a reader's connection."""
        if self._read_pool is None:
            raise StoreError("the store is not open")
        d: Deferred[_T] = self._read_pool.runInteraction(query)
        return d

    def on_external_change(self, callback: Callable[[], object]) -> None:
        """
        Call ``callback`` when another connection commits to the database.

        SQLite's ``PRAGMA data_version`` changes only for other connections'
        commits; it is read on the writer's connection, the only one the
        daemon writes with, so the daemon's own writes never count. Checked
        every :data:`WATCH_SECONDS`.
        """
        self._watchers.append(callback)

    async def _every_second(self) -> None:
        """What an open store does once a second: notice other processes, checkpoint."""
        await self._check_data_version()
        await self._checkpoint()

    async def _checkpoint(self) -> None:
        """
        Copy what was written since the last time from the WAL into the database.

        PASSIVE, on a reader's connection: it never blocks the writer, and
        a commit never waits for it.
        """
        if not self._wrote or self._read_pool is None:
            return
        self._wrote = False
        try:
            await self._read(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        except Exception as e:
            log.debug("cannot checkpoint the cache database: {error}", error=e)

    async def _check_data_version(self) -> None:
        if self._pool is None:
            return
        try:
            version = await self._interact(
                lambda cursor: int(cursor.execute("PRAGMA data_version").fetchone()[0])
            )
        except Exception as e:
            log.debug("cannot read the data version: {error}", error=e)
            return
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        if changed:
            # Another process's commits are not checkpointed by it either.
            self._wrote = True
            for callback in list(self._watchers):
                callback()

    # Keys known to be absent

    def known_absent(self, key: str) -> bool:
        """
        True only if the database certainly does not hold ``key``: known
        without I/O, for a lookup that may be skipped.

        Another process's insert is known within :data:`WATCH_SECONDS` (and
        may be missed if it reused the rowid of a row deleted just before),
        so a caller that must never miss an entry (replay mode) looks it up.
        """
        return self._known is not None and not self._known.might_hold(key)

    def _scan_new_keys(self) -> None:
        """Another process committed: read the keys it may have added."""
        if self._known is not None:
            self._scan_keys()

    def _scan_keys(self) -> None:
        """Read the keys inserted since the last scan (all of them, the first time)."""
        if self._known_scanning or self._read_pool is None:
            return
        self._known_scanning = True
        after = self._known_rowid
        building = self._known is None
        if building:
            # Puts not yet committed may be missing from what the scan reads.
            self._known_pending = [entry.key for entry, _ in (*self._batch, *self._queued)]

        def scan(cursor: Any) -> tuple[KnownKeys | None, list[bytes], int]:
            known = None
            if building:
                (count,) = cursor.execute("SELECT COUNT(*) FROM entries").fetchone()
                known = KnownKeys(expected=2 * count)
            digests = []
            last = after
            rows = cursor.execute("SELECT rowid, key FROM entries WHERE rowid > ?", (after,))
            for n, (rowid, digest) in enumerate(rows):
                if known is not None:
                    known.add_digest(digest)
                else:
                    digests.append(digest)
                last = max(last, rowid)
                if n % 256 == 255:
                    # Let the reactor thread have the GIL: a million keys take
                    # seconds, and requests must not wait behind them.
                    time.sleep(0)
            return known, digests, last

        def scanned(result: tuple[KnownKeys | None, list[bytes], int]) -> None:
            built, digests, last = result
            if built is not None:
                self._known = built
            assert self._known is not None
            for digest in digests:
                self._known.add_digest(digest)
            for key in self._known_pending:
                self._known.add(key)
            self._known_pending = []
            self._known_rowid = last

        def failed(failure: Failure) -> None:
            # Until the keys are read every request is looked up, as without the
            # filter; the next lookup that finds nothing tries again.
            self._known_pending = []
            log.debug("cannot read the cache's keys: {error}", error=failure.value)

        def done(result: object) -> None:
            self._known_scanning = False

        self._read(scan).addCallbacks(scanned, failed).addBoth(done)

    def _remember_key(self, key: str) -> None:
        if self._known is not None:
            self._known.add(key)
        elif self._known_scanning:
            self._known_pending.append(key)

    # Reads

    def get(self, key: str) -> Deferred[Entry | None]:
        def select(cursor: Any) -> Entry | None:
            cursor.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE key = ?", (bytes.fromhex(key),)
            )
            row = cursor.fetchone()
            return None if row is None else _row_to_entry(row)

        d = self._read(select)
        if self._known is None and not self._known_scanning:
            d.addCallback(self._first_miss)
        return d

    def _first_miss(self, entry: Entry | None) -> Entry | None:
        """Misses are happening: read the keys, so the next ones need no lookup."""
        if entry is None and self._known is None:
            self._scan_keys()
        return entry

    def peek(self, key: str) -> Entry | None:
        return None  # every read is I/O

    def stats(self) -> Deferred[StoreStats]:
        def select(cursor: Any) -> StoreStats:
            cursor.execute(
                "SELECT COUNT(*), COALESCE(SUM(total_tokens * hit_count), 0), "
                "MIN(created_at), MAX(created_at) FROM entries"
            )
            count, saved, oldest, newest = cursor.fetchone()
            size = _file_size(self.path) + _file_size(self.path + "-wal")
            return StoreStats(
                entries=count, tokens_saved=saved, db_size_bytes=size, oldest=oldest, newest=newest
            )

        return self._writes_settled().addCallback(lambda _: self._read(select))

    def list_entries(self, limit: int = 100, offset: int = 0) -> Deferred[list[Entry]]:
        def select(cursor: Any) -> list[Entry]:
            cursor.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries ORDER BY created_at DESC LIMIT ? OFFSET ?",
                (limit, offset),
            )
            return [_row_to_entry(row) for row in cursor.fetchall()]

        return self._writes_settled().addCallback(lambda _: self._read(select))

    # Writes

    def _write(self, statement: str, parameters: Any, many: bool = False) -> Deferred[int]:
        def write(cursor: Any) -> int:
            cursor.execute("BEGIN IMMEDIATE")
            if many:
                cursor.executemany(statement, parameters)
            else:
                cursor.execute(statement, parameters)
            changed: int = cursor.rowcount
            return changed

        # After the puts before it: a delete must not be undone by an insert
        # that was only waiting for the commit under way.
        d = self._writes_settled().addCallback(lambda _: self._interact(write))

        def failed(failure: Any) -> Any:
            self._note_write_failure(failure.value)
            return failure

        def written(changed: int) -> int:
            self._wrote = True
            return changed

        d.addCallbacks(written, failed)
        return d

    def _note_write_failure(self, error: BaseException | None) -> None:
        first = self.writable
        self._write_failed_at = self.reactor.seconds()
        if first:
            log.warn(
                "cannot write the cache database {path} ({error}); answers are passed "
                "through uncached for the next {seconds:.0f}s",
                path=self.path,
                error=error,
                seconds=WRITE_RETRY_SECONDS,
            )

    def put(self, entry: Entry) -> Deferred[None]:
        """
        Store ``entry``, replacing any entry of the same key.

        The returned Deferred fires once the row is committed. Entries put
        while a commit is under way are written together in the next one.
        """
        # Hits counted for the entry being replaced are not the new entry's.
        self._pending_hits.pop(entry.key, None)
        self._remember_key(entry.key)
        stored: Deferred[None] = Deferred()
        self._queued.append((entry, stored))
        if not self._batch:
            self._commit_queued()
        return stored

    def _writes_settled(self) -> Deferred[None]:
        """
        Fires once every entry put so far is committed or has failed.

        A put may still be queued behind the commit under way when its caller
        has moved on (the proxy stops waiting after ``COMMIT_PATIENCE``, and
        close() may come at any time), so whatever must see the entries put
        so far (statistics, listings, deletes, closing) waits here. Lookups
        do not: the proxy keeps track of its own flights.
        """
        pending = self._queued or self._batch
        if not pending:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def settled(result: object) -> object:
            done.callback(None)
            return result

        # Commits go in order, so the last put settles last.
        pending[-1][1].addBoth(settled)
        return done

    def _commit_queued(self) -> None:
        batch, self._queued = self._queued, []
        self._batch = batch

        def insert(cursor: Any) -> None:
            # Compressing here keeps it off the reactor thread.
            rows = [_entry_row(entry) for entry, _ in batch]
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(_INSERT, rows)

        def settled(result: Any) -> None:
            self._batch = []
            if isinstance(result, Failure):
                self._note_write_failure(result.value)
                for _, stored in batch:
                    stored.errback(result)
            else:
                self._write_failed_at = None
                self._wrote = True
                for _, stored in batch:
                    stored.callback(None)
            if self._queued and self._pool is not None:
                self._commit_queued()

        maybeDeferred(self._interact, insert).addBoth(settled)

    def delete(self, key: str) -> Deferred[bool]:
        return self._write("DELETE FROM entries WHERE key = ?", (bytes.fromhex(key),)).addCallback(
            bool
        )

    def prune(self, created_before: float) -> Deferred[int]:
        """Delete entries created before ``created_before``; fires with how many."""
        return self._write("DELETE FROM entries WHERE created_at < ?", (created_before,))

    def record_hit(self, key: str, when: float) -> None:
        """Count a hit; it reaches the database within :data:`HIT_FLUSH_SECONDS`."""
        if self._pool is None:
            return  # closed: the daemon is stopping, and so is counting
        count, _ = self._pending_hits.get(key, (0, when))
        self._pending_hits[key] = (count + 1, when)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(HIT_FLUSH_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_call = None
        self.flush_hits().addErrback(lambda failure: None)

    def flush_hits(self) -> Deferred[int]:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._pending_hits = self._pending_hits, {}
        if not pending or self._read_only:
            return succeed(0)
        return self._write(
            "UPDATE entries SET hit_count = hit_count + ?, last_hit_at = ? WHERE key = ?",
            [(count, when, bytes.fromhex(key)) for key, (count, when) in pending.items()],
            many=True,
        )
