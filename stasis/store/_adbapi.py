"""
The cache store over adbapi, the same on every SQL engine; a dialect says the rest.

The reactor thread never waits on the database: every query runs in adbapi's
thread pools. Writes go through one connection, because SQLite allows one
writer anyway and a single writer cannot deadlock against itself; reads have
connections of their own, so a lookup never queues behind a commit.

Writes are applied one transaction at a time, in the order they were asked
for, puts grouped (:mod:`stasis.store._writes`). Each committed write is
published on :attr:`AdbapiStore.changes` before its caller hears of it; other
processes' changes are looked for as often as the dialect asks (at least once
a second), and once a second what was written is checkpointed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from attrs import define, field
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from stasis.log import RateLimitedWarning, logger
from stasis.model import Change, ChangeKind, Entry, EntryFilter, Page, StoreStats
from stasis.store._bounds import Batch, evict_batch, prune_batch
from stasis.store._dialect import ChangeWatcher, Dialect
from stasis.store._feed import ChangeFeed
from stasis.store._listing import page, page_query, where_sql
from stasis.store._pool import connection_pool
from stasis.store._protocol import EVERY_ENTRY, StoreError
from stasis.store._rows import (
    ENTRY_COLUMNS,
    REQUEST_COLUMNS,
    SIZE_SQL,
    WRITTEN_COLUMNS,
    entry_row,
    row_to_entry,
)
from stasis.store._writes import Write, WriteQueue

__all__ = ["WATCH_SECONDS", "WRITE_RETRY_SECONDS", "AdbapiStore"]

_T = TypeVar("_T")

log = logger("stasis.store")

#: How long the store reports itself unwritable after a failed write; also
#: how often, at most, it warns that writes fail.
WRITE_RETRY_SECONDS = 60.0
#: How often to checkpoint, and to look for other processes' changes at the
#: least (a dialect may ask for more often: ``Dialect.watch_seconds``).
WATCH_SECONDS = 1.0
#: Keys handed to ``scan_keys``'s visitor between two chances for the reactor
#: thread to take the GIL.
SCAN_YIELD_EVERY = 256
#: Keys read by one query of ``get_many`` (SQLite allows 32766 parameters).
GET_MANY_BATCH = 500


def _keys(keys: list[bytes]) -> tuple[str, ...]:
    return tuple(key.hex() for key in keys)


@define
class AdbapiStore:
    """
    A :class:`~stasis.store.Store` on an SQL database. Call :meth:`open` first.

    :meth:`open` prepares the schema synchronously, on purpose: it runs once,
    before the daemon listens, so a database that cannot be used stops the
    start-up with a clear error instead of failing every request later.
    """

    dialect: Dialect
    reactor: IReactorTime
    #: Other processes (workers) store into the same file: see ``Store.shared``.
    workers_share: bool = False
    #: Concurrent lookups; more threads than cores buys nothing.
    readers: int = 2
    _changes: ChangeFeed = field(factory=ChangeFeed, init=False)
    _writer: adbapi.ConnectionPool | None = field(default=None, init=False)
    _reader: adbapi.ConnectionPool | None = field(default=None, init=False)
    _watcher: ChangeWatcher | None = field(default=None, init=False)
    _secret: bytes = field(default=b"", init=False)
    _read_only: bool = field(default=False, init=False)
    _closing: bool = field(default=False, init=False)
    _write_failed_at: float | None = field(default=None, init=False)
    _write_warning: RateLimitedWarning = field(init=False)
    _writes: WriteQueue = field(init=False)
    #: Statements made once, with the dialect's spelling.
    _select_entry: str = field(init=False)
    _upsert: str = field(init=False)
    #: Whether anything was committed (here or elsewhere) since the last checkpoint.
    _wrote: bool = field(default=False, init=False)
    #: Whether a checkpoint on the writer's connection is waiting its turn.
    _log_checkpoint_queued: bool = field(default=False, init=False)
    _loop: LoopingCall | None = field(default=None, init=False)
    #: Rounds of the loop since the last checkpoint, and how many make a checkpoint's turn.
    _rounds: int = field(default=0, init=False)
    _rounds_per_checkpoint: int = field(default=1, init=False)
    #: Fires once the loop has stopped and its last round is over.
    _loop_done: Deferred[Any] | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._writes = WriteQueue(self._transaction, self._noted)
        self._write_warning = RateLimitedWarning(log, self.reactor, WRITE_RETRY_SECONDS)
        self._select_entry = f"SELECT {ENTRY_COLUMNS} FROM entries WHERE key = {self.dialect.param}"
        self._upsert = self.dialect.upsert(WRITTEN_COLUMNS)

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def location(self) -> str:
        return self.dialect.location

    @property
    def changes(self) -> ChangeFeed:
        return self._changes

    @property
    def shared(self) -> bool:
        return self.workers_share or self.dialect.shared

    @property
    def writable(self) -> bool:
        """False while writes are known to fail; misses then go through uncached."""
        if self._read_only:
            return False
        if self._write_failed_at is None:
            return True
        return self.reactor.seconds() - self._write_failed_at >= WRITE_RETRY_SECONDS

    # Opening and closing

    def open(self) -> None:
        if self._writer is not None:
            return
        prepared = self.dialect.prepare()
        self._secret = prepared.secret
        self._read_only = prepared.read_only
        self._watcher = prepared.watcher
        self._closing = False
        module, args, keywords = self.dialect.pool_arguments()
        self._writer, self._reader = (
            connection_pool(module, args, keywords, size, self.reactor)
            for size in (1, self.readers)
        )
        interval = min(WATCH_SECONDS, self.dialect.watch_seconds)
        self._rounds, self._rounds_per_checkpoint = 0, max(1, round(WATCH_SECONDS / interval))
        self._loop = LoopingCall(lambda: ensureDeferred(self._every_round()))
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(interval, now=True).addErrback(
            lambda failure: log.failure("watching the cache database failed", failure)
        )

    async def close(self) -> None:
        """Wait for the writes asked for so far (later ones fail), then disconnect."""
        if self._writer is None or self._closing:
            return
        self._closing = True
        try:
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            if self._loop_done is not None:
                await self._loop_done
            await self._writes.settled()
        finally:
            self._loop = self._loop_done = None
            if self._watcher is not None:
                self._watcher.close()
            self._writer.close()
            self._writer = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # Reads

    def _read(self, query: Callable[[Any], _T]) -> Deferred[_T]:
        """Run ``query(cursor)`` on a reader's connection; database errors become StoreError."""
        if self._reader is None:
            return fail(StoreError("the store is not open"))
        d: Deferred[_T] = self._reader.runInteraction(query)
        d.addErrback(self._failed, "read")
        return d

    def _failed(self, failure: Failure, doing: str) -> Failure:
        if failure.check(StoreError):
            return failure
        why = self._describe(failure)
        error = StoreError(f"cannot {doing} the cache database {self.location}: {why}")
        error.__cause__ = failure.value
        return Failure(error)

    def _describe(self, failure: Failure) -> str:
        """A failure's error as one line, never a password (``Dialect.describe``)."""
        error = failure.value
        return self.dialect.describe(error) if error is not None else failure.getErrorMessage()

    def get(self, key: str, *, request: bool = False) -> Deferred[Entry | None]:
        digest = bytes.fromhex(key)
        statement = self._select_entry
        if request:
            statement = f"SELECT {REQUEST_COLUMNS} FROM entries WHERE key = {self.dialect.param}"

        def select(cursor: Any) -> Entry | None:
            cursor.execute(statement, (digest,))
            row = cursor.fetchone()
            return None if row is None else row_to_entry(row)

        return self._read(select)

    def get_many(self, keys: Sequence[str]) -> Deferred[list[Entry]]:
        digests = [bytes.fromhex(key) for key in keys]
        p = self.dialect.param

        def select(cursor: Any) -> list[Entry]:
            found: dict[bytes, Entry] = {}
            for start in range(0, len(digests), GET_MANY_BATCH):
                batch = digests[start : start + GET_MANY_BATCH]
                marks = ", ".join([p] * len(batch))
                cursor.execute(
                    f"SELECT {REQUEST_COLUMNS} FROM entries WHERE key IN ({marks})", batch
                )
                for row in cursor.fetchall():
                    found[bytes(row[0])] = row_to_entry(row)
            return [found[digest] for digest in digests if digest in found]

        return self._read(select)

    def match_keys(self, prefix: str, limit: int = 2) -> Deferred[tuple[str, ...]]:
        prefix = prefix.lower()
        if not prefix or len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix):
            return succeed(())
        low = bytes.fromhex(prefix.ljust(64, "0"))
        high = bytes.fromhex(prefix.ljust(64, "f"))
        p = self.dialect.param

        def select(cursor: Any) -> tuple[str, ...]:
            cursor.execute(
                f"SELECT key FROM entries WHERE key >= {p} AND key <= {p} ORDER BY key LIMIT {p}",
                (low, high, limit),
            )
            return tuple(bytes(key).hex() for (key,) in cursor.fetchall())

        return self._writes.settled().addCallback(lambda _: self._read(select))

    def list_entries(
        self, where: EntryFilter = EVERY_ENTRY, limit: int = 100, cursor: str | None = None
    ) -> Deferred[Page]:
        try:
            query, parameters = page_query(where, limit, cursor, self.dialect.param)
        except StoreError:
            return fail()

        def select(db: Any) -> Page:
            db.execute(query, parameters)
            return page(db.fetchall(), limit)

        return self._writes.settled().addCallback(lambda _: self._read(select))

    def stats(self) -> Deferred[StoreStats]:
        def select(cursor: Any) -> StoreStats:
            cursor.execute(
                "SELECT COUNT(*), COALESCE(SUM(total_tokens * hit_count), 0), "
                f"MIN(created_at), MAX(created_at), COALESCE(SUM({SIZE_SQL}), 0) FROM entries"
            )
            count, saved, oldest, newest, stored = cursor.fetchone()
            return StoreStats(
                entries=count,
                # A SUM of integers is a Decimal on some engines (PostgreSQL's numeric).
                tokens_saved=int(saved),
                db_size_bytes=self.dialect.database_size(cursor),
                oldest=oldest,
                newest=newest,
                stored_bytes=int(stored),
            )

        return self._writes.settled().addCallback(lambda _: self._read(select))

    def scan_keys(self, visit: Callable[[bytes], None]) -> Deferred[None]:
        def scan(cursor: Any) -> None:
            cursor.execute("SELECT key FROM entries")
            while rows := cursor.fetchmany(SCAN_YIELD_EVERY):
                for (key,) in rows:
                    visit(bytes(key))
                # Let the reactor thread have the GIL: a million keys take
                # seconds, and requests must not wait behind them.
                time.sleep(0)

        return self._read(scan)

    # Writes, one transaction at a time, in the order asked for

    def _refused(self) -> StoreError | None:
        if self._writer is None or self._closing:
            return StoreError("the store is not open")
        if self._read_only:
            return StoreError(f"the cache database {self.location} is read-only")
        return None

    def _transaction(self, write: Write) -> Deferred[Any]:
        """Run ``write`` as one transaction on the writer's connection."""
        watcher = self._watcher
        if self._writer is None or watcher is None:
            return fail(StoreError("the store is not open"))
        begin = self.dialect.begin

        def outside(connection: Any) -> Any:
            cursor = connection.cursor()
            try:
                return write.statements(cursor, write.prepare())
            finally:
                cursor.close()

        def transaction(connection: Any) -> Any:
            prepared = write.prepare()
            cursor = connection.cursor()
            try:
                if begin:
                    cursor.execute(begin)
                mark = watcher.begin_write(cursor)
                result = write.statements(cursor, prepared)
                mark = watcher.end_write(cursor, mark)
            finally:
                cursor.close()
            # Committed here, not by adbapi after we return, so that the watcher
            # only ever counts a transaction that is in the database.
            connection.commit()
            watcher.committed(mark)
            return result

        d: Deferred[Any] = self._writer.runWithConnection(
            transaction if write.transaction else outside
        )
        return d

    def _noted(self, outcome: object) -> object:
        """
        Keep ``writable`` up to date with how the last write went, and warn
        that writes fail: once a minute while they do, however many fail (a
        busy daemon's counted hits, housekeeping) and whatever succeeds
        between two warnings.
        """
        if not isinstance(outcome, Failure):
            self._write_failed_at = None
            self._wrote = True
            return outcome
        self._write_failed_at = self.reactor.seconds()
        self._write_warning.warn(
            "cannot write the cache database {location} ({error}); answers are passed "
            "through uncached for the next {seconds:.0f}s",
            location=self.location,
            error=self._describe(outcome),
            seconds=WRITE_RETRY_SECONDS,
        )
        return self._failed(outcome, "write")

    def _write(
        self,
        statements: Callable[[Any], _T],
        change: Callable[[_T], Change | None],
    ) -> Deferred[_T]:
        """Queue one write transaction; publish ``change(result)`` once it is committed."""
        refused = self._refused()
        if refused is not None:
            return fail(refused)
        done: Deferred[_T] = Deferred()

        def settle(result: Any) -> None:
            published = change(result)
            if published is not None:
                self._changes.publish(published)
            done.callback(result)

        self._writes.add(
            Write(
                prepare=lambda: None,
                statements=lambda cursor, _: statements(cursor),
                settle=settle,
                fail=done.errback,
            )
        )
        return done

    def put(self, entry: Entry) -> Deferred[None]:
        """
        Store ``entry``, replacing any entry of the same key; fires once committed.

        Puts asked for while a transaction is under way are written together
        in the next one.
        """
        refused = self._refused()
        if refused is not None:
            return fail(refused)
        stored: Deferred[None] = Deferred()
        batch = self._writes.open_batch()
        if batch is not None:
            batch.append((entry, stored))
        else:
            self._writes.add(self._put_batch([(entry, stored)]))
        return stored

    def put_all(self, entries: Sequence[Entry]) -> Deferred[int]:
        """Store every one of ``entries`` in one transaction, or none of them."""
        refused = self._refused()
        if refused is not None:
            return fail(refused)
        upsert = self._upsert
        done: Deferred[int] = Deferred()

        def prepare() -> list[tuple[Any, ...]]:
            return [entry_row(entry) for entry in entries]

        def statements(cursor: Any, rows: list[tuple[Any, ...]]) -> int:
            cursor.executemany(upsert, rows)
            return len(rows)

        def settle(count: int) -> None:
            if entries:
                keys = tuple(dict.fromkeys(entry.key for entry in entries))
                self._changes.publish(Change(ChangeKind.PUT, keys))
            done.callback(count)

        self._writes.add(Write(prepare, statements, settle, done.errback))
        return done

    def _put_batch(self, puts: list[tuple[Entry, Deferred[None]]]) -> Write:
        upsert = self._upsert

        def prepare() -> list[tuple[Any, ...]]:
            return [entry_row(entry) for entry, _ in puts]

        def statements(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
            cursor.executemany(upsert, rows)

        def settle(_: object) -> None:
            keys = tuple(dict.fromkeys(entry.key for entry, _ in puts))
            self._changes.publish(Change(ChangeKind.PUT, keys))
            for _, stored in puts:
                stored.callback(None)

        def failed(failure: Failure) -> None:
            for _, stored in puts:
                stored.errback(failure)

        return Write(prepare, statements, settle, failed, puts=puts)

    def delete(self, key: str) -> Deferred[bool]:
        digest = bytes.fromhex(key)
        statement = f"DELETE FROM entries WHERE key = {self.dialect.param}"

        def statements(cursor: Any) -> bool:
            cursor.execute(statement, (digest,))
            return bool(cursor.rowcount > 0)

        return self._write(
            statements, lambda existed: Change(ChangeKind.DELETE, (key,)) if existed else None
        )

    def _remove(self, clause: str, parameters: list[Any]) -> Deferred[int]:
        """Delete the entries matching ``clause``; publish their keys as one PURGE."""

        def statements(cursor: Any) -> list[bytes]:
            # Read, then deleted, in one transaction under the write lock: the
            # same rows, so the change names exactly the keys removed.
            cursor.execute(f"SELECT key FROM entries{clause}", parameters)
            keys = [bytes(key) for (key,) in cursor.fetchall()]
            if keys:
                cursor.execute(f"DELETE FROM entries{clause}", parameters)
            return keys

        def change(keys: list[bytes]) -> Change | None:
            return Change(ChangeKind.PURGE, _keys(keys)) if keys else None

        return self._write(statements, change).addCallback(len)

    def purge(self, where: EntryFilter) -> Deferred[int]:
        clause, parameters = where_sql(where, self.dialect.param)
        return self._remove(clause, parameters)

    def prune(self, now: float) -> Deferred[int]:
        param = self.dialect.param
        return self._remove_in_batches(lambda cursor: prune_batch(cursor, param, now))

    def evict(self, max_bytes: int | None, max_entries: int | None) -> Deferred[int]:
        param = self.dialect.param
        return self._remove_in_batches(
            lambda cursor: evict_batch(cursor, param, max_bytes, max_entries)
        )

    def _remove_in_batches(self, batch: Callable[[Any], Batch]) -> Deferred[int]:
        """
        Run ``batch`` as one write transaction after another, each queued once
        the one before has committed (behind the writes asked for meanwhile),
        until it says there is no more; fire with how many entries they removed.

        Each transaction's keys are published as a PURGE when it commits.
        Cancelling stops it after the transaction under way (which ``close``
        waits for, as for any write); so does closing the store.
        """
        removed = 0
        done: Deferred[int] = Deferred(lambda _: None)  # cancelled: no batch after this one

        def change(result: Batch) -> Change | None:
            return Change(ChangeKind.PURGE, _keys(list(result.keys))) if result.keys else None

        def next_batch() -> None:
            self._write(batch, change).addCallbacks(committed, failed)

        def committed(result: Batch) -> None:
            nonlocal removed
            removed += len(result.keys)
            if done.called:
                return
            if result.more and not self._closing:
                next_batch()
            else:
                done.callback(removed)

        def failed(failure: Failure) -> None:
            if not done.called:
                done.errback(failure)

        next_batch()
        return done

    def claim(self, key: str, holder: str, seconds: float) -> Deferred[bool]:
        digest = bytes.fromhex(key)
        claim = self.dialect.claim
        return self._write(lambda cursor: claim(cursor, digest, holder, seconds), lambda _: None)

    def release(self, key: str, holder: str) -> Deferred[None]:
        digest = bytes.fromhex(key)
        p = self.dialect.param
        statement = f"DELETE FROM claims WHERE key = {p} AND holder = {p}"

        def statements(cursor: Any) -> None:
            cursor.execute(statement, (digest, holder))

        return self._write(statements, lambda _: None)

    def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> Deferred[None]:
        """
        Add hits to entries in one transaction; a key with no entry is ignored.

        Counting a hit changes no answer, so it publishes no change (and the
        SQLite change log's triggers leave it out). A read-only database keeps
        no count: the hits are dropped, not failed.
        """
        if not hits or self._read_only:
            return succeed(None)
        p = self.dialect.param
        statement = (
            f"UPDATE entries SET hit_count = hit_count + {p}, last_hit_at = {p} WHERE key = {p}"
        )
        rows = [(count, when, bytes.fromhex(key)) for key, (count, when) in hits.items()]

        def statements(cursor: Any) -> None:
            cursor.executemany(statement, rows)

        return self._write(statements, lambda _: None)

    # Every round of the loop (once a second, or as often as the dialect asks)

    async def _every_round(self) -> None:
        """
        What an open store does every round: notice other processes; and
        once a second, checkpoint.
        """
        await self._look_for_changes()
        self._rounds += 1
        if self._rounds >= self._rounds_per_checkpoint:
            self._rounds = 0
            await self._checkpoint()
            self._keep_the_log_small()

    async def _look_for_changes(self) -> None:
        watcher = self._watcher
        if self._writer is None or watcher is None:
            return
        now, writable = self.reactor.seconds(), self.writable
        try:
            noticed = await self._writer.runWithConnection(
                lambda connection: watcher.poll(connection, now, writable)
            )
        except Exception as e:
            log.debug(
                "cannot look for other processes' changes: {error}",
                error=self.dialect.describe(e),
            )
            return
        if noticed.committed:
            # Another process's commits are not checkpointed by it either.
            self._wrote = True
        for change in noticed.changes:
            self._changes.publish(change)

    async def _checkpoint(self) -> None:
        """
        Let the dialect tidy up after what was written since the last time
        (SQLite copies its WAL into the database): on a reader's connection,
        so that it never blocks the writer and no commit waits for it.
        """
        if not self._wrote or self._reader is None:
            return
        self._wrote = False
        try:
            await self._read(self.dialect.checkpoint)
        except Exception as e:
            log.debug(
                "cannot checkpoint the cache database: {error}", error=self.dialect.describe(e)
            )

    def _keep_the_log_small(self) -> None:
        """
        Checkpoint on the writer's connection, between two writes, when the
        dialect's log has outgrown its limit (SQLite's WAL under a steady
        stream of commits: see :meth:`SQLiteDialect.log_too_large
        <stasis.store._sqlite.SQLiteDialect.log_too_large>`). The writes asked
        for meanwhile wait for it: it copies what the last checkpoint on a
        reader left, a second's writes at most.
        """
        if self._log_checkpoint_queued or self._refused() is not None:
            return
        if not self.dialect.log_too_large():
            return
        checkpoint = self.dialect.checkpoint

        def statements(cursor: Any, _: object) -> None:
            try:
                checkpoint(cursor)
            except Exception as e:  # never a failed write: the store stays writable
                log.debug("cannot checkpoint the cache database: {error}", error=e)

        def settled(_: object) -> None:
            self._log_checkpoint_queued = False

        self._log_checkpoint_queued = True
        self._writes.add(Write(lambda: None, statements, settled, settled, transaction=False))
