"""
PostgreSQL's schema runner: ``schema/postgresql/`` applied in one transaction, under a lock.

A file is sent whole: psycopg runs a script of several statements when it
passes no parameters, and the PL/pgSQL bodies (``$$ … $$``) hold ``;`` that
SQLite's splitter would cut at. PostgreSQL's DDL is transactional, so a
migration that fails leaves the database as it was.

Several daemons may start at once on one database, empty or older. Each
migrates in a transaction whose first statement takes :data:`ADVISORY_LOCK`
(the lock every stasis write transaction takes, see ``PostgreSQLDialect.begin``):
the first creates the schema and the secret, the others wait for its commit,
then find the schema current. So every daemon sharing the database has the
same secret, and so computes the same keys.
"""

from __future__ import annotations

import contextlib
from typing import Any

from stasis.store._schema import (
    SchemaError,
    SchemaFiles,
    new_secret,
    packaged,
    refuse_newer,
)

__all__ = ["ADVISORY_LOCK", "FILES", "migrate", "schema_version"]

#: The advisory lock (a 64-bit key, the same in every stasis) that write
#: transactions and migrations take first: ``'stasis'`` in ASCII.
ADVISORY_LOCK = int.from_bytes(b"stasis", "big")


def _whole(script: str) -> list[str]:
    return [script] if script.strip() else []


#: The package's PostgreSQL schema: version 6 at once, then one file per version.
FILES = packaged("postgresql", _whole)


#: Whether ``meta`` is in the schema stasis creates its tables in. Read from
#: the catalog under the statement's snapshot, not with ``to_regclass``: that
#: one trusts the session's catalog cache, which may still say "no such table"
#: after waiting for the lock behind the daemon that just created it.
_HAS_META = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class "
    "WHERE relname = 'meta' AND relnamespace = current_schema()::regnamespace)"
)


def schema_version(cursor: Any) -> int:
    """The version recorded in the database; 0 for an empty one (no ``meta`` table)."""
    cursor.execute(_HAS_META)
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT value FROM meta WHERE name = 'schema_version'")
    row = cursor.fetchone()
    return int(bytes(row[0]).decode("ascii")) if row else 0


def _read_secret(cursor: Any) -> bytes:
    cursor.execute("SELECT value FROM meta WHERE name = 'secret'")
    row = cursor.fetchone()
    if row is None:
        raise SchemaError("the cache database has no secret; it was not made by stasis")
    return bytes(row[0])


def _check_read_only(version: int, newest: int) -> None:
    refuse_newer(version, newest)
    if version < newest:
        raise SchemaError(
            f"the cache database has schema version {version} and is read-only, "
            f"so it cannot be brought to version {newest}"
        )


def migrate(connection: Any, files: SchemaFiles = FILES) -> tuple[bytes, bool]:
    """
    Bring the database to ``files.newest`` in one transaction; its secret,
    and whether it is read-only (a read-only database of the current version
    serves hits; an older one cannot be migrated, and is refused).

    A database already at ``files.newest`` is only read, without the lock: a
    daemon starting beside others never waits for their writes.

    ``connection`` is a psycopg connection in autocommit mode.
    """
    files.migrations()  # a broken installation fails before the database is touched
    cursor = connection.cursor()
    try:
        if schema_version(cursor) == files.newest:
            return _read_secret(cursor), _read_only(cursor)
        cursor.execute("BEGIN")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        # Again, under the lock: another daemon may have migrated meanwhile.
        version = schema_version(cursor)
        read_only = _read_only(cursor)
        if read_only:
            _check_read_only(version, files.newest)
        else:
            for migration in files.pending(version):
                for statement in migration.statements:
                    cursor.execute(statement)
            if version == 0:
                cursor.execute(
                    "INSERT INTO meta (name, value) VALUES ('secret', %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (new_secret(),),
                )
            if version != files.newest:
                cursor.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    (str(files.newest).encode("ascii"),),
                )
        secret = _read_secret(cursor)
        cursor.execute("COMMIT")
        return secret, read_only
    except BaseException:
        with contextlib.suppress(Exception):  # a lost connection: its error is the one to tell
            connection.rollback()
        raise
    finally:
        cursor.close()


def _read_only(cursor: Any) -> bool:
    """Whether this session may not write (``default_transaction_read_only``, a standby)."""
    cursor.execute("SELECT current_setting('transaction_read_only') = 'on'")
    return bool(cursor.fetchone()[0])
