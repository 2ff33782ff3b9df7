"""
The cache store over adbapi, the same on every SQL engine; a dialect says the rest.

The reactor thread never waits on the database: every query runs in adbapi's
thread pools. Writes go through one connection, because SQLite allows one
writer anyway and a single writer cannot deadlock against itself; reads have
connections of their own, so a lookup never queues behind a commit.

Writes are applied one transaction at a time, in the order they were asked
for, puts grouped (:mod:`stasis.store._writes`); a lock another process
holds is waited out, up to a minute, the writes asked for meanwhile kept in
line (at most :data:`MAX_WAITING_PUTS` puts). Each committed write is
published on :attr:`AdbapiStore.changes` before its caller hears of it; other
processes' changes are looked for as often as the dialect asks (at least once
a second), and once a second what was written is checkpointed.

A database file deleted or replaced under the store (``rm``, ``mv other.db``)
would go on being used through the open connections, unseen, everything
written to it lost: its identity is looked at every :data:`FILE_CHECK_SECONDS`,
and when it changes the store says so and opens the database again
(:meth:`AdbapiStore._reopen`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from attrs import define, field
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from stasis.log import RateLimitedWarning, logger
from stasis.model import Change, ChangeKind, Entry, EntryFilter, Page, Saving, StoreStats
from stasis.store._bounds import Batch, evict_batch, prune_batch
from stasis.store._dialect import ChangeWatcher, Dialect, Prepared
from stasis.store._feed import ChangeFeed
from stasis.store._listing import page, page_query, where_sql
from stasis.store._pool import connection_pool
from stasis.store._protocol import EVERY_ENTRY, SAVING_COLUMNS, SavingColumn, StoreError
from stasis.store._rows import (
    ENTRY_COLUMNS,
    REQUEST_COLUMNS,
    SIZE_SQL,
    WRITTEN_COLUMNS,
    entry_row,
    row_to_entry,
)
from stasis.store._search import fill_sql, unsearchable_batch
from stasis.store._writes import LOCK_PATIENCE_SECONDS, Write, WriteQueue

__all__ = [
    "FILE_CHECK_SECONDS",
    "MAX_WAITING_BYTES",
    "MAX_WAITING_PUTS",
    "WATCH_SECONDS",
    "WRITE_RETRY_SECONDS",
    "AdbapiStore",
]

_T = TypeVar("_T")

log = logger("stasis.store")

#: How long the store reports itself unwritable after a failed write, unless a
#: probe finds writes work again sooner; also how often, at most, it warns that
#: writes fail.
WRITE_RETRY_SECONDS = 60.0
#: How often, while writes fail, a harmless write tries whether they work again.
WRITE_PROBE_SECONDS = 2.0
#: How often to checkpoint, and to look for other processes' changes at the
#: least (a dialect may ask for more often: ``Dialect.watch_seconds``).
WATCH_SECONDS = 1.0
#: Keys handed to ``scan_keys``'s visitor between two chances for the reactor
#: thread to take the GIL.
SCAN_YIELD_EVERY = 256
#: Keys read by one query of ``get_many`` (SQLite allows 32766 parameters).
GET_MANY_BATCH = 500
#: Puts waiting to be committed, at most, and their bodies' bytes (each
#: counted with :data:`PUT_OVERHEAD_BYTES` more): an entry past either is
#: not stored, rather than held in memory while a lock is waited out. Ten
#: thousand answers is three minutes of misses at fifty a second, longer
#: than a lock is waited out (``LOCK_PATIENCE_SECONDS``).
MAX_WAITING_PUTS = 10_000
MAX_WAITING_BYTES = 128 * 1024 * 1024
PUT_OVERHEAD_BYTES = 1024
#: How long ``stats`` waits for the writes asked for before it, at most:
#: what they take when nothing holds them up, and short enough for ``/health``.
STATS_WAIT_SECONDS = 0.05
#: How often the database's identity is looked at (a ``stat``), to notice a
#: file deleted or replaced; ``stats`` looks as well, so that ``/health``
#: never reports a deleted file.
FILE_CHECK_SECONDS = 0.5
#: How often to try again to open a database that could not be opened again.
REOPEN_RETRY_SECONDS = 2.0


def _values_refused(error: BaseException) -> bool:
    """
    Whether ``error`` is a database refusing the values it was given (a number
    past its INTEGER, text it cannot encode: a DB-API ``DataError``), which
    says nothing about whether it can store anything else.
    """
    return isinstance(error, OverflowError | UnicodeError) or any(
        kind.__name__ == "DataError" for kind in type(error).__mro__
    )


def _fill(statement: str, texts: list[tuple[str, bytes]], cursor: Any) -> None:
    cursor.executemany(statement, texts)


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
    #: The claims this process holds (key: holder), as far as it knows.
    _claims: dict[str, str] = field(factory=dict, init=False)
    #: A write probe is under way (see _probe_writes), and when the last began.
    _probing: bool = field(default=False, init=False)
    _probed_at: float = field(default=0.0, init=False)
    _write_warning: RateLimitedWarning = field(init=False)
    _lock_warning: RateLimitedWarning = field(init=False)
    _full_warning: RateLimitedWarning = field(init=False)
    _writes: WriteQueue = field(init=False)
    #: Puts waiting to be committed, and their size (see MAX_WAITING_PUTS).
    _waiting_puts: int = field(default=0, init=False)
    _waiting_bytes: int = field(default=0, init=False)
    #: Jobs given to either pool and not yet over, and who waits for none to be.
    _jobs: int = field(default=0, init=False)
    _jobs_over: list[Deferred[None]] = field(factory=list, init=False)
    #: The database's identity when it was prepared (Dialect.identity).
    _identity: object | None = field(default=None, init=False)
    _file_loop: LoopingCall | None = field(default=None, init=False)
    #: A reopen is under way; the reads asked for meanwhile wait for it.
    _reopening: bool = field(default=False, init=False)
    _after_reopen: list[Deferred[None]] = field(factory=list, init=False)
    #: Why the database cannot be used, after it was deleted and could not be
    #: made again (None: it can); and when that was last tried.
    _lost: str | None = field(default=None, init=False)
    _lost_at: float = field(default=0.0, init=False)
    _is_open: bool = field(default=False, init=False)
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
    #: Whether every entry has its search text (see _fill_search_text); the
    #: searches asked for until then wait in _search_waiters. Counted up at
    #: each (re)open, so that a fill of a database let go of stops.
    _searchable_now: bool = field(default=True, init=False)
    _search_waiters: list[Deferred[None]] = field(factory=list, init=False)
    _fills: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._writes = WriteQueue(
            self._transaction,
            self._noted,
            self.reactor,
            locked=lambda failure: failure.value is not None and self.dialect.locked(failure.value),
            on_lock=self._locked,
            on_unlock=self._unlocked,
        )
        self._write_warning = RateLimitedWarning(log, self.reactor, WRITE_RETRY_SECONDS)
        self._lock_warning = RateLimitedWarning(log, self.reactor, WRITE_RETRY_SECONDS)
        self._full_warning = RateLimitedWarning(log, self.reactor, WRITE_RETRY_SECONDS)
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
        if self._read_only or self._lost is not None:
            return False
        if self._write_failed_at is None:
            return True
        return self.reactor.seconds() - self._write_failed_at >= WRITE_RETRY_SECONDS

    @property
    def held_up(self) -> bool:
        return self._writes.held_up

    # Opening and closing

    def open(self) -> None:
        if self._is_open:
            return
        self._use(self.dialect.prepare())
        self._is_open = True
        self._closing = False
        self._writes.patience = LOCK_PATIENCE_SECONDS
        interval = min(WATCH_SECONDS, self.dialect.watch_seconds)
        self._rounds, self._rounds_per_checkpoint = 0, max(1, round(WATCH_SECONDS / interval))
        self._loop = LoopingCall(lambda: ensureDeferred(self._every_round()))
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(interval, now=True).addErrback(
            lambda failure: log.failure("watching the cache database failed", failure)
        )
        if self._identity is not None:
            # Its own timer: the loop above waits for the writer's thread,
            # which a lock can hold for seconds.
            self._file_loop = LoopingCall(self._check_file)
            self._file_loop.clock = self.reactor
            self._file_loop.start(FILE_CHECK_SECONDS, now=False)

    def _use(self, prepared: Prepared) -> None:
        """Take a prepared database as the one to use, with pools of connections to it."""
        self._secret = prepared.secret
        self._read_only = prepared.read_only
        self._watcher = prepared.watcher
        self._identity = prepared.identity
        if prepared.read_only:
            log.warn(
                "the cache database {location} is read-only: serving hits, not storing",
                location=self.location,
            )
        module, args, keywords = self.dialect.pool_arguments()
        self._writer, self._reader = (
            connection_pool(module, args, keywords, size, self.reactor)
            for size in (1, self.readers)
        )
        self._fills += 1
        if prepared.read_only:
            self._search_filled()
        else:
            self._searchable_now = False
            ensureDeferred(self._fill_search_text(self._fills))

    async def close(self) -> None:
        """Wait for the writes asked for so far (later ones fail), then disconnect."""
        if not self._is_open or self._closing:
            return
        self._closing = True
        # A lock met now fails what waits at once: a stopping daemon does not
        # sit out another process's transaction.
        self._writes.patience = 0.0
        try:
            if self._file_loop is not None and self._file_loop.running:
                self._file_loop.stop()
            await self._reopened()
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            if self._loop_done is not None:
                await self._loop_done
            await self._writes.settled()
        finally:
            self._loop = self._loop_done = self._file_loop = None
            self._let_go(self._detach())
            self._is_open = False
            self._fills += 1  # a fill under way stops
            self._search_filled()

    def _detach(self) -> tuple[adbapi.ConnectionPool | None, ...]:
        """
        Take the pools and the watcher out of use (nothing new is given to
        them); they are closed by :meth:`_let_go`.
        """
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        pools = (self._writer, self._reader)
        self._writer = self._reader = None
        return pools

    def _let_go(self, pools: tuple[adbapi.ConnectionPool | None, ...]) -> None:
        """Close the connections (their threads are idle, or nearly: this joins them)."""
        for pool in pools:
            if pool is not None:
                pool.close()

    # A database file deleted or replaced under the store

    def _check_file(self) -> None:
        """
        Open the database again if the file at its path is no longer the one
        the connections have (see :meth:`Dialect.identity`); while it cannot
        be, try again every :data:`REOPEN_RETRY_SECONDS`.
        """
        if not self._is_open or self._closing or self._reopening:
            return
        if self._lost is not None:
            if self.reactor.seconds() - self._lost_at < REOPEN_RETRY_SECONDS:
                return
        else:
            try:
                found = self.dialect.identity()
            except OSError as e:
                log.debug("cannot look at the cache database file: {error}", error=e)
                return
            if found == self._identity:
                return
            log.warn(
                "the cache database {location} {what} while in use; {then}",
                location=self.location,
                what="was deleted" if found is None else "was replaced by another file",
                then=(
                    "making a new one at the same path (the entries in the deleted file are "
                    "gone; the secret that keys them is kept)"
                    if found is None
                    else "using the file now at that path"
                ),
            )
        self._reopening = True
        ensureDeferred(self._reopen()).addErrback(
            lambda failure: log.failure("opening the cache database again failed", failure)
        )

    def _reopened(self) -> Deferred[None]:
        """Fires once the reopen under way (if any) is over."""
        if not self._reopening:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._after_reopen.append(waiter)
        return waiter

    async def _reopen(self) -> None:
        """
        Let go of the database the connections have, and open the one at
        its location now, between two writes.

        The writes asked for meanwhile wait in line (the queue is paused),
        the reads for the reopen, so nothing fails for it. Every connection
        to the old file is closed before one is opened to the new: SQLite
        knows a WAL and its shared memory by the database's path, and two
        files open at once under one path in one process would share them.
        Its WAL is emptied first (:meth:`Dialect.empty_log`), for a file
        moved onto the path must not be read with it. A file made anew gets
        the old secret, so that the keys clients were given stay the same; a
        file moved there keeps its own. Then a RESET: everything in memory
        about the old file is forgotten.
        """
        self._writes.pause()
        try:
            await self._writes.idle()
            await self._no_jobs()
            pools = self._detach()
            writer = pools[0]
            if writer is not None:
                try:
                    await writer.runWithConnection(self._empty_log)
                except Exception as e:
                    log.debug("cannot empty the old database's log: {error}", error=e)
            self._let_go(pools)
            self._claims.clear()  # taken in the old file
            threads = cast(IReactorThreads, self.reactor)
            try:
                prepared = await deferToThreadPool(
                    threads,
                    threads.getThreadPool(),
                    self.dialect.prepare,
                    self._secret,
                )
            except StoreError as e:
                self._lost, self._lost_at = str(e), self.reactor.seconds()
                self._write_warning.warn(
                    "{error}; answers are passed through uncached until it can be opened "
                    "(tried every {retry:.0f}s)",
                    error=e,
                    retry=REOPEN_RETRY_SECONDS,
                )
                return
            if self._lost is not None:
                log.info("the cache database {location} is open again", location=self.location)
            self._lost = None
            self._write_failed_at = None
            self._wrote = False
            self._use(prepared)
            self._changes.publish(Change(ChangeKind.RESET, (), local=False))
        finally:
            self._reopening = False
            waiters, self._after_reopen = self._after_reopen, []
            for waiter in waiters:
                waiter.callback(None)
            self._writes.resume()

    def _empty_log(self, connection: Any) -> None:
        cursor = connection.cursor()
        try:
            self.dialect.empty_log(cursor)
        finally:
            cursor.close()

    # Jobs on the pools, counted so that a reopen can wait for none to be under way

    def _job(self, d: Deferred[_T]) -> Deferred[_T]:
        self._jobs += 1

        def over(result: _T | Failure) -> _T | Failure:
            self._jobs -= 1
            if self._jobs == 0:
                waiting, self._jobs_over = self._jobs_over, []
                for waiter in waiting:
                    waiter.callback(None)
            return result

        return d.addBoth(over)

    def _no_jobs(self) -> Deferred[None]:
        if self._jobs == 0:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._jobs_over.append(waiter)
        return waiter

    # Reads

    def _read(self, query: Callable[[Any], _T]) -> Deferred[_T]:
        """
        Run ``query(cursor)`` on a reader's connection; database errors become
        StoreError. Asked for while the database is being opened again, it
        waits for that.
        """
        if self._reopening:
            return self._reopened().addCallback(lambda _: self._read(query))
        if self._reader is None:
            return fail(StoreError(self._lost or "the store is not open"))
        d: Deferred[_T] = self._job(self._reader.runInteraction(query))
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

        return self._settled_soon().addCallback(lambda _: self._read(select))

    def list_entries(
        self, where: EntryFilter = EVERY_ENTRY, limit: int = 100, cursor: str | None = None
    ) -> Deferred[Page]:
        try:
            query, parameters = page_query(
                where, limit, cursor, self.dialect.param, self.dialect.find
            )
        except StoreError:
            return fail()

        def select(db: Any) -> Page:
            db.execute(query, parameters)
            return page(db.fetchall(), limit)

        ready = self._searchable() if where.text else self._settled_soon()
        return ready.addCallback(lambda _: self._read(select))

    def tokens_saved_by(self, column: SavingColumn, limit: int = 20) -> Deferred[list[Saving]]:
        if column not in SAVING_COLUMNS:
            return fail(ValueError(f"tokens are summed by model or namespace, not {column!r}"))
        query = (
            f"SELECT {column}, COUNT(*), COALESCE(SUM(total_tokens * hit_count), 0) AS saved "
            f"FROM entries GROUP BY {column} "
            f"ORDER BY saved DESC, COUNT(*) DESC, {column} IS NULL, {column} "
            f"LIMIT {self.dialect.param}"
        )

        def select(cursor: Any) -> list[Saving]:
            cursor.execute(query, (max(limit, 0),))
            # A SUM of integers is a Decimal on some engines (PostgreSQL's numeric).
            return [Saving(value, count, int(saved)) for value, count, saved in cursor.fetchall()]

        return self._settled_soon().addCallback(lambda _: self._read(select))

    def stats(self) -> Deferred[StoreStats]:
        # A file deleted since the last look is noticed now: never reported as empty.
        self._check_file()

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

        return self._settled_soon().addCallback(lambda _: self._read(select))

    # Search text for the entries stored before schema version 7

    async def _fill_search_text(self, fill: int) -> None:
        """
        Give every entry without one its search text, a batch at a time
        (:mod:`stasis.store._search`), then let the searches waiting go.
        Stops when the store closes, or opens the database again (which
        starts another fill); a failure leaves the rest unsearchable until
        the next open, and is logged, never raised.
        """
        param, statement = self.dialect.param, fill_sql(self.dialect.param)
        after: bytes | None = b""
        filled = 0
        try:
            while after is not None and fill == self._fills and not self._closing:
                batch = await self._read(partial(unsearchable_batch, param=param, after=after))
                if batch.texts and fill == self._fills and not self._closing:
                    await self._write(partial(_fill, statement, batch.texts), lambda _: None)
                    filled += len(batch.texts)
                after = batch.after
            if filled:
                log.info(
                    "gave {count} entries stored by an older stasis their search text",
                    count=filled,
                )
        except Exception as e:
            log.warn(
                "cannot give the entries stored by an older stasis their search text "
                "({error}); a search does not find them until the store opens again",
                error=e,
            )
        finally:
            if fill == self._fills:
                self._search_filled()

    def _search_filled(self) -> None:
        self._searchable_now = True
        waiters, self._search_waiters = self._search_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _searchable(self) -> Deferred[None]:
        """
        Fires once every entry has its search text and the writes asked for
        so far have settled (as for any listing): a search never misses an
        entry for being stored by an older stasis.
        """
        if self._searchable_now:
            return self._settled_soon()
        waiter: Deferred[None] = Deferred()
        self._search_waiters.append(waiter)
        return waiter.addCallback(lambda _: self._settled_soon())

    def _settled_soon(self) -> Deferred[None]:
        """
        Fires once the writes asked for so far have settled, or after
        :data:`STATS_WAIT_SECONDS`, or at once while a lock holds them up:
        a count never waits behind a lock.
        """
        if self._writes.held_up:
            return succeed(None)
        settled = self._writes.settled()
        if settled.called:
            return settled
        done: Deferred[None] = Deferred()
        timer = self.reactor.callLater(STATS_WAIT_SECONDS, done.callback, None)

        def fired(_: object) -> None:
            if timer.active():
                timer.cancel()
                done.callback(None)

        settled.addCallback(fired)
        return done

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
        if not self._is_open or self._closing:
            return StoreError("the store is not open")
        if self._lost is not None:
            return StoreError(self._lost)
        if self._read_only:
            return StoreError(f"the cache database {self.location} is read-only")
        return None

    def _transaction(self, write: Write) -> Deferred[Any]:
        """Run ``write`` as one transaction on the writer's connection."""
        watcher = self._watcher
        if self._writer is None or watcher is None:
            return fail(StoreError(self._lost or "the store is not open"))
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
        return self._job(d)

    def _locked(self, waiting: int) -> None:
        self._lock_warning.warn(
            "the cache database {location} is locked by another process; waiting up to "
            "{patience:.0f}s for it to be let go ({waiting} writes waiting), answering "
            "misses meanwhile without waiting for their commit",
            location=self.location,
            patience=self._writes.patience,
            waiting=waiting,
        )

    def _unlocked(self, seconds: float, let_go: bool) -> None:
        if let_go:
            log.info(
                "the cache database {location} is no longer locked (after {seconds:.1f}s); "
                "committing the {waiting} writes that waited",
                location=self.location,
                seconds=seconds,
                waiting=self._writes.waiting + 1,
            )

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
        if outcome.value is not None and _values_refused(outcome.value):
            # One entry's values, not the database: it fails alone (a batch
            # it was in is split, see WriteQueue), and misses go on being stored.
            log.warn("an entry could not be stored: {error}", error=outcome.value)
            return self._failed(outcome, "write")
        self._write_failed_at = self.reactor.seconds()
        self._write_warning.warn(
            "cannot write the cache database {location} ({error}); answers are passed "
            "through uncached until it takes writes again (tried every {probe:.0f}s)",
            location=self.location,
            error=self._describe(outcome),
            probe=WRITE_PROBE_SECONDS,
        )
        return self._failed(outcome, "write")

    def _write(
        self,
        statements: Callable[[Any], _T],
        change: Callable[[_T], Change | None],
        *,
        patient: bool = True,
    ) -> Deferred[_T]:
        """
        Queue one write transaction; publish ``change(result)`` once it is
        committed. An impatient write fails at once when the database is
        found locked (see ``Write.patient``).
        """
        refused = self._refused()
        if refused is None and not patient and self._writes.held_up:
            refused = StoreError(f"the cache database {self.location} is locked by another process")
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
                # An impatient write's failure is the driver's own error.
                fail=lambda failure: done.errback(self._failed(failure, "write")),
                patient=patient,
            )
        )
        return done

    def put(self, entry: Entry) -> Deferred[None]:
        """
        Store ``entry``, replacing any entry of the same key; fires once committed.

        Puts asked for while a transaction is under way are written together
        in the next one.
        """
        refused = self._refused() or self._too_many(entry)
        if refused is not None:
            return fail(refused)
        stored: Deferred[None] = Deferred()
        size = len(entry.body) + PUT_OVERHEAD_BYTES
        self._waiting_puts += 1
        self._waiting_bytes += size

        def settled(result: object) -> object:
            self._waiting_puts -= 1
            self._waiting_bytes -= size
            return result

        stored.addBoth(settled)
        batch = self._writes.open_batch()
        if batch is not None:
            batch.append((entry, stored))
        else:
            self._writes.add(self._put_batch([(entry, stored)]))
        return stored

    def _too_many(self, entry: Entry) -> StoreError | None:
        """
        Refuse a put past :data:`MAX_WAITING_PUTS` or :data:`MAX_WAITING_BYTES`
        (one entry alone is always taken): a lock waited out must not hold an
        unbounded queue in memory.
        """
        size = len(entry.body) + PUT_OVERHEAD_BYTES
        if self._waiting_puts < MAX_WAITING_PUTS and (
            self._waiting_puts == 0 or self._waiting_bytes + size <= MAX_WAITING_BYTES
        ):
            return None
        self._full_warning.warn(
            "{count} entries ({bytes} bytes) already wait to be written to the cache database "
            "{location}: answers are not stored until they are",
            count=self._waiting_puts,
            bytes=self._waiting_bytes,
            location=self.location,
        )
        return StoreError(
            f"not stored: {self._waiting_puts} entries already wait to be written to "
            f"the cache database {self.location}"
        )

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
        p = self.dialect.param
        release = f"DELETE FROM claims WHERE key = {p} AND holder = {p}"
        # This process's claims on the keys stored: given up in the same
        # transaction (the fetch they were taken for is over), so that the
        # release the engine asks for next has nothing left to write.
        claimed = [
            (entry.key, self._claims[entry.key]) for entry, _ in puts if entry.key in self._claims
        ]

        def prepare() -> list[tuple[Any, ...]]:
            return [entry_row(entry) for entry, _ in puts]

        def statements(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
            cursor.executemany(upsert, rows)
            if claimed:
                cursor.executemany(release, [(bytes.fromhex(k), h) for k, h in claimed])

        def settle(_: object) -> None:
            for key, holder in claimed:
                if self._claims.get(key) == holder:
                    del self._claims[key]
            keys = tuple(dict.fromkeys(entry.key for entry, _ in puts))
            self._changes.publish(Change(ChangeKind.PUT, keys))
            for _, stored in puts:
                stored.callback(None)

        def failed(failure: Failure) -> None:
            for _, stored in puts:
                stored.errback(failure)

        return Write(
            prepare,
            statements,
            settle,
            failed,
            puts=puts,
            split=lambda: [self._put_batch([put]) for put in puts],
        )

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
        clause, parameters = where_sql(where, self.dialect.param, self.dialect.find)
        if not where.text:
            return self._remove(clause, parameters)
        # Removes what a listing with the same text finds: every entry searchable first.
        return self._searchable().addCallback(lambda _: self._remove(clause, parameters))

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

        def taken(held: bool) -> bool:
            if held:
                self._claims[key] = holder
            return held

        # Impatient: a claim is only worth taking before the fetch it is for,
        # which goes ahead unclaimed rather than wait for a lock to be let go.
        return self._write(
            lambda cursor: claim(cursor, digest, holder, seconds), lambda _: None, patient=False
        ).addCallback(taken)

    def release(self, key: str, holder: str) -> Deferred[None]:
        if self._claims.get(key) != holder:
            # Released with the put of its entry, or never this process's.
            return succeed(None)
        del self._claims[key]
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
            self._probe_writes()

    def _probe_writes(self) -> None:
        """
        While writes fail, try a harmless one every :data:`WRITE_PROBE_SECONDS`,
        so that misses are stored again as soon as the database takes writes
        (a server back up, a lock let go, space freed), not a minute later.

        It rewrites one ``meta`` value with itself: a real write, through the
        same queue and lock as any other, so it fails where they would.
        """
        failed_at = self._write_failed_at
        if failed_at is None or self._probing or self._refused() is not None:
            return
        now = self.reactor.seconds()
        if now - max(failed_at, self._probed_at) < WRITE_PROBE_SECONDS:
            return
        self._probing, self._probed_at = True, now
        statement = f"UPDATE meta SET value = value WHERE name = {self.dialect.param}"

        def done(_: object) -> None:
            self._probing = False
            if self._write_failed_at is None:
                log.info("the cache database {location} takes writes again", location=self.location)

        self._write(
            lambda cursor: cursor.execute(statement, ("schema_version",)), lambda _: None
        ).addBoth(done)

    async def _look_for_changes(self) -> None:
        watcher = self._watcher
        if self._writer is None or watcher is None:
            return
        # No housekeeping write (trimming the log) while a lock holds the writes up.
        now, writable = self.reactor.seconds(), self.writable and not self.held_up
        try:
            noticed = await self._job(
                self._writer.runWithConnection(
                    lambda connection: watcher.poll(connection, now, writable)
                )
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
