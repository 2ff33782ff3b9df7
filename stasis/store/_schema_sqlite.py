"""
SQLite's schema runner: ``schema/sqlite/`` applied in one transaction.

A file is run statement by statement, each found with
:func:`sqlite3.complete_statement`: a trigger's body holds ``;`` of its own,
so splitting on ``;`` would cut it apart. (``executescript`` would not, but
it commits first, and migrating must be one transaction: a database is at
one version or the next, never between.)
"""

from __future__ import annotations

import sqlite3

from stasis.store._schema import (
    SCHEMA_VERSION,
    Migration,
    SchemaError,
    SchemaFiles,
    new_secret,
    packaged,
    refuse_newer,
)

__all__ = [
    "FILES",
    "check_version",
    "migrate",
    "migrations",
    "read_secret",
    "schema_version",
    "split_statements",
]


def split_statements(script: str) -> list[str]:
    """The SQL statements in ``script``, each ending at the ``;`` that completes it."""
    statements = []
    start = 0
    for end, character in enumerate(script, 1):
        if character == ";" and sqlite3.complete_statement(script[start:end]):
            statements.append(script[start:end].strip())
            start = end
    rest = [line for line in script[start:].splitlines() if line.strip()]
    if any(not line.strip().startswith("--") for line in rest):
        raise SchemaError(f"a statement without its final ';': {script[start:].strip()[:60]!r}")
    return statements


#: The package's SQLite schema, versions 1 to :data:`SCHEMA_VERSION`.
FILES = packaged("sqlite", split_statements)


def migrations() -> tuple[Migration, ...]:
    """Every SQLite schema file, in version order, checked to be complete."""
    return FILES.migrations()


def schema_version(connection: sqlite3.Connection) -> int:
    """The version recorded in the database; 0 for an empty database."""
    has_meta = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(
    connection: sqlite3.Connection, files: SchemaFiles = FILES, secret: bytes | None = None
) -> None:
    """
    Bring the database to ``files.newest`` in one transaction; a new one is
    given ``secret``, or a new secret when there is none.

    ``connection`` must be in autocommit mode (``isolation_level=None``).
    Raises :class:`sqlite3.OperationalError` ("readonly") on a database that
    cannot be written, even a current one, so the caller learns it here.
    """
    files.migrations()  # a broken installation fails before the database is touched
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(connection)
        for migration in files.pending(version):
            for statement in migration.statements:
                connection.execute(statement)
        if version == 0:
            connection.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('secret', ?)",
                (secret or new_secret(),),
            )
        # Written even when current: a read-only database must fail here, since
        # BEGIN IMMEDIATE alone succeeds on one.
        connection.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(files.newest),),
        )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def check_version(connection: sqlite3.Connection) -> None:
    """Refuse a database that is not at :data:`SCHEMA_VERSION`, without writing to it."""
    version = schema_version(connection)
    refuse_newer(version)
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"the cache database has schema version {version} and is read-only, "
            f"so it cannot be brought to version {SCHEMA_VERSION}"
        )


def read_secret(connection: sqlite3.Connection) -> bytes:
    row = connection.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
    if row is None:
        raise SchemaError("the cache database has no secret; it was not made by stasis")
    return bytes(row[0])
