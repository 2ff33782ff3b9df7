"""
The PostgreSQL dialect: a database server that several daemons (and the management commands) share.

Connections are psycopg 3's, made from the ``--db`` URL as libpq reads it
(its query parameters, ``PGPASSWORD``, ``~/.pgpass`` and the other ``PG*``
variables included), every one in autocommit mode: a lookup is one round
trip, and the store begins its write transactions itself (:attr:`begin`).

Writes are serialized across every process by an advisory lock taken first
in each write transaction, as SQLite's ``BEGIN IMMEDIATE`` does on a file.
Other processes' changes arrive as notifications
(:mod:`stasis.store._notifications`); the schema is
:mod:`stasis.store._schema_postgres`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from attrs import frozen
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import StrDumperUnknown

from stasis.store._dialect import Prepared
from stasis.store._notifications import PostgresWatcher
from stasis.store._protocol import StoreError
from stasis.store._schema import SchemaError
from stasis.store._schema_postgres import ADVISORY_LOCK, migrate
from stasis.store._url import DatabaseURL

__all__ = ["LOCK_TIMEOUT_SECONDS", "PostgreSQLDialect"]

#: How long a statement waits for a lock (another process's write
#: transaction, a migration) before it fails: SQLite's busy timeout.
LOCK_TIMEOUT_SECONDS = 5.0

#: Connection parameters stasis gives unless the URL or the environment
#: (libpq's variable, named beside each) does: a server that does not answer
#: fails the start-up within seconds, the server's activity view names
#: stasis, and a peer gone silent (a network partition) is noticed in about
#: a minute rather than the system's two hours.
_DEFAULTS = {
    "connect_timeout": ("PGCONNECT_TIMEOUT", "5"),
    "application_name": ("PGAPPNAME", "stasis"),
    "keepalives_idle": (None, "30"),
    "keepalives_interval": (None, "10"),
    "keepalives_count": (None, "3"),
}

#: Inserts a claim, or takes over one that is the holder's own or has lapsed,
#: by the server's clock (daemons on several machines may disagree on the
#: time, never on the server's); changes no row while another holder's claim is live.
_CLAIM = (
    "INSERT INTO claims (key, holder, expires_at) "
    "VALUES (%s, %s, EXTRACT(EPOCH FROM clock_timestamp())::double precision + %s) "
    "ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
    "WHERE claims.holder = EXCLUDED.holder "
    "OR claims.expires_at <= EXTRACT(EPOCH FROM clock_timestamp())::double precision"
)

#: What stasis's tables take, indexes and out-of-line values included: not
#: the whole server, nor the rest of the database.
_SIZE = (
    "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(name))), 0) "
    "FROM unnest(ARRAY['meta', 'entries', 'claims', 'totals']) AS name"
)

_SPACES = re.compile(r"\s+")


class _Text(StrDumperUnknown):
    """
    Python text as PostgreSQL text, a NUL (which a text column cannot hold)
    as U+FFFD: an answer whose model name carried one (a JSON ``\\u0000``
    in the request) is then stored, where the driver would fail the whole
    batch of puts, and the store would stop storing for a minute.
    """

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(obj.replace("\x00", "\ufffd"))


def _configure(connection: psycopg.Connection[Any]) -> None:
    """Every pooled connection's settings (adbapi's ``cp_openfun``)."""
    connection.adapters.register_dumper(str, _Text)
    connection.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_SECONDS * 1000)}")


def _one_line(text: str) -> str:
    """libpq's message, hints and indented details and all, as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text.strip()
    # "Multiple connection attempts failed. All failures were:" heads a list.
    message = " ".join(lines) if lines[0].endswith(":") else lines[0]
    message = message.removeprefix("connection failed: ")
    return _SPACES.sub(" ", message)


@frozen
class PostgreSQLDialect:
    """The PostgreSQL database ``url`` names (``postgresql://`` or ``postgres://``)."""

    url: DatabaseURL

    @property
    def location(self) -> str:
        return self.url.location

    #: A server: other daemons may store into it at any moment.
    shared = True
    param = "%s"
    find = "strpos"
    #: Every write transaction takes the stasis advisory lock as its first
    #: statement, so that they are serialized across every process using the
    #: database, as SQLite's BEGIN IMMEDIATE serializes them on a file. Without
    #: it, two daemons could deadlock: each batch of upserts locks its rows in
    #: its own order, every insert and delete then updates the one ``totals``
    #: row, and hits update rows in yet another order; PostgreSQL would break
    #: such a deadlock by failing one of the writes. Held only until the commit,
    #: and waited for at most :data:`LOCK_TIMEOUT_SECONDS`.
    begin = f"BEGIN; SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"
    #: Looked for ten times a second, on the writer's thread between two
    #: writes, like SQLite's change log: notifications are already on the
    #: listening connection when they are looked for, so a look costs no round
    #: trip to the server, only a hop to the thread, and another process's
    #: delete reaches the subscribers within a tenth of a second plus the write
    #: under way (at most :data:`LOCK_TIMEOUT_SECONDS` when another process
    #: holds the lock). A listener of its own thread would save that wait, for
    #: a thread to start, stop and share the watcher's state with.
    watch_seconds = 0.1

    def describe(self, error: BaseException) -> str:
        return self.url.scrub(_one_line(str(error)))

    def _keywords(self) -> dict[str, Any]:
        """psycopg.connect's keywords beside the URL; :class:`StoreError` if libpq refuses it."""
        try:
            given = conninfo_to_dict(self.url.conninfo)
        except psycopg.Error as e:
            raise StoreError(
                f"cannot use the cache database {self.location}: {self.describe(e)}"
            ) from None
        keywords: dict[str, Any] = {
            name: value
            for name, (variable, value) in _DEFAULTS.items()
            if name not in given and (variable is None or variable not in os.environ)
        }
        keywords["autocommit"] = True
        return keywords

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url.conninfo, **self._keywords())

    def prepare(self, secret: bytes | None = None) -> Prepared:
        """
        Connect once, synchronously, bring the schema up to date, and start
        listening for other processes' changes.

        A read-only database (a session with ``default_transaction_read_only``)
        of the current version still serves its hits; an older one cannot be
        migrated, and is refused. ``secret`` is not used: a server's database
        is never made again under an open store (see :meth:`identity`).
        """
        keywords = self._keywords()
        try:
            connection = psycopg.connect(self.url.conninfo, **keywords)
        except psycopg.Error as e:
            raise StoreError(
                f"cannot connect to the cache database {self.location}: {self.describe(e)}"
            ) from None
        try:
            secret, read_only = migrate(connection)
            watcher = PostgresWatcher.listening(self._connect, self.describe)
        except (psycopg.Error, SchemaError) as e:
            raise StoreError(
                f"cannot use the cache database {self.location}: {self.describe(e)}"
            ) from None
        finally:
            connection.close()
        return Prepared(secret, read_only, watcher)

    def pool_arguments(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return (
            "psycopg",
            (self.url.conninfo,),
            {**self._keywords(), "cp_openfun": _configure, "cp_reconnect": True},
        )

    def upsert(self, columns: Sequence[str]) -> str:
        # Two daemons storing one key at once: the second replaces the first's
        # row (the update trigger keeps the totals), never a duplicate-key error.
        names = ", ".join(columns)
        marks = ", ".join(["%s"] * len(columns))
        replaced = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "key")
        return (
            f"INSERT INTO entries ({names}) VALUES ({marks}) "
            f"ON CONFLICT (key) DO UPDATE SET {replaced}"
        )

    def claim(self, cursor: Any, key: bytes, holder: str, seconds: float) -> bool:
        cursor.execute(_CLAIM, (key, holder, seconds))
        return bool(cursor.rowcount > 0)

    def database_size(self, cursor: Any) -> int:
        cursor.execute(_SIZE)
        return int(cursor.fetchone()[0])

    def checkpoint(self, cursor: Any) -> None:
        """Nothing to do: the server checkpoints by itself."""

    def identity(self) -> None:
        """None: a database on a server is not a file that can be deleted under the store."""
        return None

    def locked(self, error: BaseException) -> bool:
        # The advisory lock every write takes first, held past lock_timeout.
        return isinstance(error, psycopg.errors.LockNotAvailable)

    def empty_log(self, cursor: Any) -> None:
        """Nothing to do: never called, as :meth:`identity` never changes."""

    def log_too_large(self) -> bool:
        return False
