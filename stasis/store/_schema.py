"""
The cache database's schema: versioned SQL files in the package, applied in order.

``schema/<engine>/NNNN-name.sql`` brings a database from version NNNN - 1 to
NNNN. A ``meta`` table holds the version reached and the HMAC secret that
credential fingerprints are made with. The secret is created with the
database and never leaves it: whoever can read the file can already read
every answer in it, but cannot learn an API key from it.

A file is run statement by statement, each found with
:func:`sqlite3.complete_statement`: a trigger's body holds ``;`` of its own,
so splitting on ``;`` would cut it apart. (``executescript`` would not, but
it commits first, and migrating must be one transaction: a database is at
one version or the next, never between.)
"""

from __future__ import annotations

import functools
import re
import secrets
import sqlite3
from importlib import resources

from attrs import frozen

__all__ = [
    "SCHEMA_VERSION",
    "Migration",
    "SchemaError",
    "check_version",
    "migrate",
    "migrations",
    "read_secret",
    "schema_version",
    "split_statements",
]

#: The version this stasis writes; the package holds one file per version up to it.
SCHEMA_VERSION = 6

_FILE_NAME = re.compile(r"(\d{4})-[\w-]+\.sql")


class SchemaError(Exception):
    """The database cannot be used by this version of stasis."""


@frozen
class Migration:
    """One schema file: what brings a database to ``version``."""

    version: int
    name: str
    statements: tuple[str, ...]


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


@functools.cache
def migrations(engine: str = "sqlite") -> tuple[Migration, ...]:
    """Every schema file for ``engine``, in version order, checked to be complete."""
    folder = resources.files("stasis.store").joinpath("schema", engine)
    found = []
    for item in folder.iterdir():
        match = _FILE_NAME.fullmatch(item.name)
        if match is not None:
            statements = tuple(split_statements(item.read_text(encoding="utf-8")))
            found.append(Migration(int(match.group(1)), item.name, statements))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, SCHEMA_VERSION + 1)):
        # A broken installation, not a broken database: say what is missing.
        raise SchemaError(
            f"this stasis installation has schema files for versions {versions} of "
            f"{engine}, not 1 to {SCHEMA_VERSION}; reinstall stasis"
        )
    return tuple(found)


def schema_version(connection: sqlite3.Connection) -> int:
    """The version recorded in the database; 0 for an empty database."""
    has_meta = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the cache database has schema version {version}, newer than this "
            f"stasis understands ({SCHEMA_VERSION}); upgrade stasis"
        )


def migrate(connection: sqlite3.Connection) -> None:
    """
    Bring the database to :data:`SCHEMA_VERSION` in one transaction.

    ``connection`` must be in autocommit mode (``isolation_level=None``).
    Raises :class:`sqlite3.OperationalError` ("readonly") on a database that
    cannot be written, even a current one, so the caller learns it here.
    """
    steps = migrations()
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(connection)
        _refuse_newer(version)
        for migration in steps:
            if migration.version > version:
                for statement in migration.statements:
                    connection.execute(statement)
        if version == 0:
            connection.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('secret', ?)",
                (secrets.token_bytes(32),),
            )
        # Written even when current: a read-only database must fail here, since
        # BEGIN IMMEDIATE alone succeeds on one.
        connection.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def check_version(connection: sqlite3.Connection) -> None:
    """Refuse a database that is not at :data:`SCHEMA_VERSION`, without writing to it."""
    version = schema_version(connection)
    _refuse_newer(version)
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
