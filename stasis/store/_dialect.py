"""
What differs from one SQL engine to the next, under the one adbapi store.

:class:`~stasis.store._adbapi.AdbapiStore` holds everything that is the same
on every engine (group commit on one writer, lookups on readers, ordered
writes, the change feed, listings); a :class:`Dialect` says how to connect,
how to spell the few statements that differ, and how other processes'
changes are noticed (a :class:`ChangeWatcher`). SQLite is
:mod:`stasis.store._sqlite`; PostgreSQL is :mod:`stasis.store._postgres`
(psycopg, ``%s`` parameters, ``ON CONFLICT DO UPDATE``, LISTEN/NOTIFY).

Every method that takes a cursor or a connection runs in one of the store's
database threads, never on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from attrs import frozen

from stasis.model import Change

__all__ = ["ChangeWatcher", "Dialect", "Noticed", "Prepared"]


@frozen
class Noticed:
    """What one look for other processes' changes found."""

    #: Whether another process committed anything at all since the last look
    #: (even a change that names no entry, such as counting hits).
    committed: bool
    #: Their changes to entries, in commit order, each with ``local=False``.
    changes: tuple[Change, ...] = ()


class ChangeWatcher(Protocol):
    """
    How one engine learns which keys other processes changed.

    Every method but :meth:`close` runs on the store's single writer thread,
    one at a time, so a watcher keeps its state in plain attributes. The write
    hooks let it tell this process's changes from others' where the engine
    cannot (SQLite's change log holds everyone's); an engine that can
    (PostgreSQL's notifications name the sending backend) notes in
    :meth:`begin_write` which backend is this process's writer.
    """

    def begin_write(self, cursor: Any) -> object:
        """In a write transaction, before its statements; returns a mark for :meth:`end_write`."""

    def end_write(self, cursor: Any, mark: object) -> object:
        """Inside the transaction, after its statements; the result goes to :meth:`committed`."""

    def committed(self, mark: object) -> None:
        """The transaction ``mark`` came from is committed (never called if it failed)."""

    def poll(self, connection: Any, now: float, writable: bool) -> Noticed:
        """
        Look for other processes' changes since the last look; called every
        :attr:`Dialect.watch_seconds`. ``now`` is the reactor's time;
        ``writable`` says whether housekeeping writes (trimming a log) may be tried.
        """

    def close(self) -> None:
        """
        Let go of what the watcher holds of its own (a connection); called on
        the reactor thread once the store will call it no more.
        """


@frozen
class Prepared:
    """A database made ready to use by :meth:`Dialect.prepare`."""

    secret: bytes
    #: Hits can be served, nothing can be stored.
    read_only: bool
    watcher: ChangeWatcher
    #: What :meth:`Dialect.identity` said of the database just prepared.
    identity: object | None = None


class Dialect(Protocol):
    """One SQL engine, as the adbapi store needs to know it."""

    @property
    def location(self) -> str:
        """Where the database is, for log lines and errors: never a password."""

    @property
    def shared(self) -> bool:
        """Whether the database is a server other daemons use as well (see ``Store.shared``)."""

    @property
    def watch_seconds(self) -> float:
        """
        How often to look for other processes' changes (:meth:`ChangeWatcher.poll`);
        the store looks at least once a second whatever this says.
        """

    @property
    def param(self) -> str:
        """The DB-API placeholder for one parameter (``?`` or ``%s``)."""

    @property
    def find(self) -> str:
        """
        The SQL function giving where a string is found in another, from 1, 0
        when it is not, ``(haystack, needle)``: a text search's, literal, unlike ``LIKE``.
        """

    @property
    def begin(self) -> str:
        """
        The statement that starts a write transaction, taking the write lock at
        once where the engine has one, so that a transaction never fails
        half-way because another writer got there first; empty where the
        driver begins transactions itself.
        """

    def describe(self, error: BaseException) -> str:
        """
        ``error`` (the driver's) as one line for an error message or a log
        line: never a password, even if the driver's text quoted one.
        """

    def prepare(self, secret: bytes | None = None) -> Prepared:
        """
        Connect once, synchronously, and create or migrate the schema; raise
        :class:`~stasis.store.StoreError` saying why if the database cannot be used.

        A database created now is given ``secret`` when there is one (the
        secret of the file it replaces, so that the keys clients were given
        stay valid), else a new one. Logs nothing: it may run in a thread.
        """

    def identity(self) -> object | None:
        """
        Which database the location names now, cheaply, on the reactor thread
        (SQLite: the file's device and inode); None when there is none (the
        file deleted). The store compares it twice a second with what it was
        when the database was prepared, and opens the database again when it
        differs: a file deleted or replaced under an open connection goes on
        being used by it, unseen, and everything written to it is lost.
        Always None where the database cannot change under the store (a server).
        Raises :class:`OSError` when it cannot tell.
        """

    def locked(self, error: BaseException) -> bool:
        """
        Whether ``error`` says that another process holds the database's
        write lock (SQLite's busy timeout ran out, PostgreSQL's lock timeout):
        not a fault of the database, but a wait, which the store sits out.
        """

    def empty_log(self, cursor: Any) -> None:
        """
        Copy the log of writes into the database, and empty it; on the
        writer's connection, before a database that was replaced is left for
        the one now at its location. SQLite's WAL is named after the database
        path, not tied to the file: left with frames in it, it would be read
        as part of whatever file is at the path next. Nothing to do on a server.
        """

    def pool_arguments(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """
        ``adbapi.ConnectionPool``'s DB-API module name, connection arguments
        and keywords (``cp_openfun`` included; the store sets the pool's size
        and reactor).
        """

    def upsert(self, columns: Sequence[str]) -> str:
        """A statement storing one ``entries`` row of these columns, replacing its key's row."""

    def claim(self, cursor: Any, key: bytes, holder: str, seconds: float) -> bool:
        """
        In a write transaction: give ``holder`` the claim on ``key`` for
        ``seconds`` unless another holder's claim is live; whether it now has
        it. Time is the database's to keep where daemons on several machines
        share it (their clocks may disagree), else this machine's.
        """

    def database_size(self, cursor: Any) -> int:
        """The database's size in bytes, as ``/stats`` reports it."""

    def checkpoint(self, cursor: Any) -> None:
        """
        Housekeeping after writes, on a reader's connection about once a second
        when something was written (SQLite copies its WAL into the database
        file); must never wait for the writer.
        """

    def log_too_large(self) -> bool:
        """
        Whether the engine's log of writes has grown so large that
        :meth:`checkpoint` should also run on the writer's connection, between
        two writes (which it then holds up for a moment); False where there
        is no such log. Asked on the reactor thread once a second: cheap.
        """
