"""
How a process learns which keys other processes changed in a PostgreSQL database: LISTEN/NOTIFY.

Triggers on ``entries`` (``schema/postgresql/0006-schema.sql``) notify the
channel :data:`CHANNEL` of every entry stored (``p:<key>``) or removed
(``d:<key>``), whoever does it: another daemon, a management command, a raw
SQL client. Counting hits notifies nothing. PostgreSQL delivers a
transaction's notifications when it commits, in commit order, to every
connection listening, each naming the backend (``pid``) that sent it.

:class:`PostgresWatcher` listens on a connection of its own, in autocommit
mode. This process's own writes all come from the store's single writer
connection, and were published when they committed: the watcher notes that
connection's backend pid at the start of every write transaction (adbapi may
have reconnected it since the last one) and skips what it sent.

What one look drains is published in as few changes as order allows: each
run of one kind (a purge's thousands of removals) is one change naming all
its keys, and more keys than :data:`MAX_NAMED` at once are one RESET.

If the listening connection is lost, notifications may have been missed
meanwhile: it is made again (at most once every :data:`RECONNECT_SECONDS`),
and once listening again, a RESET is published, once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from attrs import define, field

from stasis.log import logger
from stasis.model import Change, ChangeKind
from stasis.store._dialect import Noticed

__all__ = ["CHANNEL", "MAX_NAMED", "RECONNECT_SECONDS", "PostgresWatcher"]

log = logger("stasis.store")

#: The channel the schema's triggers notify.
CHANNEL = "stasis_changes"
#: More keys than this in one look are published as one RESET instead: as
#: for SQLite's change log, forgetting everything costs less than being told of each.
MAX_NAMED = 10_000
#: How often, at most, to try to listen again after the connection was lost.
RECONNECT_SECONDS = 1.0

_KINDS = {"p": ChangeKind.PUT, "d": ChangeKind.DELETE}


def _grouped(payloads: Iterable[str]) -> tuple[Change, ...]:
    """One change per run of one kind, in order, each key named once."""
    changes = []
    for kind, run in itertools.groupby(payloads, key=lambda payload: payload[:2]):
        keys = tuple(dict.fromkeys(payload[2:] for payload in run))
        # An unknown kind still names a key whose entry may be stale: forget it.
        changes.append(Change(_KINDS.get(kind[:1], ChangeKind.DELETE), keys, local=False))
    return tuple(changes)


@define
class PostgresWatcher:
    """
    The :class:`~stasis.store._dialect.ChangeWatcher` of a PostgreSQL database.

    Used on the store's writer thread only (``close`` aside, once that is
    over), so its state needs no lock.
    """

    #: Opens a new connection in autocommit mode.
    connect: Callable[[], psycopg.Connection[Any]]
    #: A driver's error as one line, without a password (``Dialect.describe``).
    describe: Callable[[BaseException], str] = str
    _listener: psycopg.Connection[Any] | None = field(default=None, init=False)
    #: The backend pid of the store's writer connection, as of its last write.
    _writer_pid: int | None = field(default=None, init=False)
    _tried_at: float = field(default=-math.inf, init=False)

    @classmethod
    def listening(
        cls,
        connect: Callable[[], psycopg.Connection[Any]],
        describe: Callable[[BaseException], str] = str,
    ) -> PostgresWatcher:
        """A watcher already listening: it hears of every commit from now on."""
        watcher = cls(connect, describe)
        watcher._listen()
        return watcher

    def _listen(self) -> None:
        connection = self.connect()
        try:
            connection.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            connection.close()
            raise
        self._listener = connection

    def begin_write(self, cursor: Any) -> object:
        self._writer_pid = cursor.connection.info.backend_pid
        return None

    def end_write(self, cursor: Any, mark: object) -> object:
        return None

    def committed(self, mark: object) -> None:
        pass

    def poll(self, connection: Any, now: float, writable: bool) -> Noticed:
        """
        What other processes committed since the last look; ``connection``
        (the writer's) is not used. Reading notifications already received
        costs no round trip to the server.
        """
        if self._listener is None:
            return self._listen_again(now)
        try:
            payloads = self._drain(self._listener)
        except psycopg.Error as e:
            log.warn(
                "lost the connection that listens for other processes' changes ({error}); "
                "listening again",
                error=self.describe(e),
            )
            self.close()
            return self._listen_again(now)
        if not payloads:
            return Noticed(False)
        if len(payloads) > MAX_NAMED:
            return Noticed(True, (Change(ChangeKind.RESET, (), local=False),))
        return Noticed(True, _grouped(payloads))

    def _drain(self, listener: psycopg.Connection[Any]) -> list[str]:
        """The payloads of other backends' notifications received so far, in order."""
        payloads: list[str] = []
        while len(payloads) <= MAX_NAMED:
            batch = list(listener.notifies(timeout=0))
            if not batch:
                break
            payloads += [
                n.payload for n in batch if n.channel == CHANNEL and n.pid != self._writer_pid
            ]
        return payloads

    def _listen_again(self, now: float) -> Noticed:
        if now - self._tried_at < RECONNECT_SECONDS:
            return Noticed(False)
        self._tried_at = now
        try:
            self._listen()
        except psycopg.Error as e:
            log.debug("cannot listen for other processes' changes: {error}", error=self.describe(e))
            return Noticed(False)
        log.info("listening for other processes' changes again")
        # Whatever was committed while nobody listened is unknown: forget everything.
        return Noticed(True, (Change(ChangeKind.RESET, (), local=False),))

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
