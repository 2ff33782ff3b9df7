"""
The SQLite dialect: a database file, its pragmas, and its change log.

Everyone using the file works side by side thanks to WAL: readers (the
store's lookups, management commands) never wait for the writer, and the
writer never waits for them. Other processes' changes are read from the log
that triggers keep (:mod:`stasis.store._changelog`).

Another process holding the write lock longer than the busy timeout makes a
write fail with SQLITE_BUSY; :meth:`SQLiteDialect.locked` tells the store,
which waits it out (see :mod:`stasis.store._writes`). The file is known by
its device and inode (:meth:`SQLiteDialect.identity`), so that one deleted
or replaced under the daemon is noticed and opened again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from stasis.store._changelog import ChangeLog
from stasis.store._dialect import Prepared
from stasis.store._protocol import StoreError
from stasis.store._schema import SchemaError
from stasis.store._schema_sqlite import check_version, migrate, read_secret

__all__ = ["SQLiteDialect"]

#: How long a statement waits for another process's lock before it fails
#: (a write is then tried again: see SQLiteDialect.locked).
BUSY_TIMEOUT_SECONDS = 5.0
#: SQLite's primary result codes for a lock held elsewhere: another
#: connection's (SQLITE_BUSY), or one in this connection's shared cache (SQLITE_LOCKED).
_LOCK_CODES = frozenset({5, 6})
#: The files SQLite keeps beside a database, named after it.
_BESIDE = ("-journal", "-wal", "-shm")
#: The WAL is emptied once it is larger than this (see SQLiteDialect.log_too_large),
#: and cut back to it when it starts over.
WAL_LIMIT_BYTES = 16 * 1024 * 1024


#: Inserts a claim, or takes over one that is the holder's own or has lapsed;
#: changes no row (rowcount 0) while another holder's claim is live.
_CLAIM = (
    "INSERT INTO claims (key, holder, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE claims.holder = excluded.holder OR claims.expires_at <= ?"
)


def configure(connection: sqlite3.Connection) -> None:
    """Every connection's settings (adbapi's ``cp_openfun``)."""
    # Rows are ~1 KB: 8 KiB pages leave far less of each page unused than the
    # default 4 KiB (~810 bytes an entry against ~890), and a commit writes half
    # the WAL bytes 16 KiB pages would (the same size on disk). Only takes effect
    # on a new, empty database.
    connection.execute("PRAGMA page_size=8192")
    connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    connection.execute("PRAGMA synchronous=NORMAL")
    # A commit that crosses SQLite's 1000-page mark copies the WAL back into
    # the database before it returns: ~10 ms, with every answer waiting on its
    # commit held behind it. The store checkpoints on a reader instead
    # (SQLiteDialect.checkpoint), beside the commits, not inside one.
    connection.execute("PRAGMA wal_autocheckpoint=0")
    # The WAL file keeps its largest size once it starts over from its
    # beginning, unless told otherwise: a burst of misses would leave it as
    # large as the burst for good.
    connection.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    _write_ahead(connection)


def _write_ahead(connection: sqlite3.Connection) -> None:
    """
    Put the database in WAL mode, waiting for the other processes opening it.

    Turning a new file's rollback journal into a WAL needs the file to itself,
    and SQLite reports a connection that finds another there "locked" at
    once, without its busy handler: the workers of a daemon opening a new
    file together failed to start (3 times in 40 with four processes). So it
    is tried again, for as long as a busy connection would wait.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            # A read-only database keeps its journal mode; prepare() finds it read-only.
            if "readonly" in str(e):
                return
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@frozen
class SQLiteDialect:
    """An SQLite database file at ``path``."""

    path: str

    @property
    def location(self) -> str:
        return self.path

    #: One file, on one machine: only workers sharing it write beside this daemon.
    shared = False
    #: Looking means reading ``PRAGMA data_version`` on the writer's
    #: connection, between two writes: once a second is the contract.
    watch_seconds = 1.0
    param = "?"
    find = "instr"
    #: Takes the write lock at once: a deferred transaction that reads first
    #: could fail with SQLITE_BUSY on its first write, whatever the busy timeout.
    begin = "BEGIN IMMEDIATE"

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: the store begins its transactions itself (``begin``).
        return sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)

    def _create(self) -> None:
        """
        Create the database file if there is none, and then remove the
        journal, WAL and shared memory found beside it: they are a deleted
        database's (a new one has none yet), and SQLite, which finds them by
        name, would read them as the new file's. The file is made with
        O_EXCL, so that of several processes making it again at once (the
        workers of a daemon whose file was deleted) only the one that made it
        removes them, before the others can open it. Any other trouble is
        left for ``connect`` to report.
        """
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError:
            return
        for suffix in _BESIDE:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    def describe(self, error: BaseException) -> str:
        return str(error)

    def prepare(self, secret: bytes | None = None) -> Prepared:
        """
        Open the file once, synchronously, and bring its schema up to date
        (a new file is given ``secret``, if there is one).

        A read-only file of the current version still serves its hits; an
        older one cannot be migrated, and is refused.
        """
        try:
            self._create()
            connection = self._connect()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the cache database {self.path!r}: {e}") from e
        try:
            read_only = False
            try:
                configure(connection)
                migrate(connection, secret=secret)
            except sqlite3.OperationalError as e:
                if "readonly" not in str(e):
                    raise
                read_only = True
                check_version(connection)
            return Prepared(
                read_secret(connection),
                read_only,
                ChangeLog.at_end(connection),
                # Taken with the connection open: the file it has.
                identity=self.identity(),
            )
        except (sqlite3.Error, SchemaError, OSError) as e:
            raise StoreError(f"cannot use the cache database {self.path!r}: {e}") from e
        finally:
            connection.close()

    def identity(self) -> tuple[int, int] | None:
        """
        The file's device and inode: a new file at the path (deleted and made
        again, or another moved onto it) has another, since the old one,
        still open here, keeps its inode number. One ``stat``: a few microseconds.
        """
        try:
            status = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (status.st_dev, status.st_ino)

    def locked(self, error: BaseException) -> bool:
        if not isinstance(error, sqlite3.OperationalError):
            return False
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _LOCK_CODES
        return "database is locked" in str(error)

    def empty_log(self, cursor: Any) -> None:
        # TRUNCATE: copies every frame, then cuts the WAL to nothing.
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def pool_arguments(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return (
            "sqlite3",
            (self.path,),
            {
                # adbapi closes connections from a thread other than theirs.
                "check_same_thread": False,
                "isolation_level": None,
                "timeout": BUSY_TIMEOUT_SECONDS,
                "cp_openfun": configure,
            },
        )

    def upsert(self, columns: Sequence[str]) -> str:
        # REPLACE deletes the old row without firing the delete trigger
        # (recursive_triggers is off): the insert trigger logs the one 'put'.
        marks = ", ".join("?" * len(columns))
        return f"INSERT OR REPLACE INTO entries ({', '.join(columns)}) VALUES ({marks})"

    def claim(self, cursor: Any, key: bytes, holder: str, seconds: float) -> bool:
        # Everyone using the file is on this machine, under one clock.
        now = time.time()
        cursor.execute(_CLAIM, (key, holder, now + seconds, now))
        return bool(cursor.rowcount > 0)

    def database_size(self, cursor: Any) -> int:
        return _file_size(self.path) + _file_size(self.path + "-wal")

    def checkpoint(self, cursor: Any) -> None:
        # PASSIVE: copies what it can without waiting for the writer or readers.
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def log_too_large(self) -> bool:
        """
        Whether the WAL has grown past :data:`WAL_LIMIT_BYTES`.

        The WAL starts over from its beginning only when a write begins with
        all of it copied into the database; under a steady stream of commits
        the checkpoints on a reader never quite catch up, and it grows with
        every commit. Checkpointed on the writer's connection, between two
        writes, it is all copied (unless a reader is still using an older
        part), and the next write starts it over, cut back to the limit.
        """
        return _file_size(self.path + "-wal") > WAL_LIMIT_BYTES
