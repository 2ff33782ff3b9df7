"""
The cache database's schema, versioned so that later releases can migrate it.

A ``meta`` table holds the schema version and the HMAC secret that credential
fingerprints are made with. The secret is created with the database and never
leaves it: whoever can read the file can already read every answer in it, but
cannot learn an API key from it.
"""

from __future__ import annotations

import secrets
import sqlite3

__all__ = ["SCHEMA_VERSION", "SchemaError", "migrate"]

SCHEMA_VERSION = 2

_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    key           BLOB PRIMARY KEY,
    namespace     TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL DEFAULT '',
    model         TEXT,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    headers       BLOB NOT NULL,
    body          BLOB NOT NULL,
    body_size     INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens  INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    expires_at    REAL,
    last_hit_at   REAL,
    hit_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_created_at ON entries (created_at);
"""

#: Version 2: streamed answers keep their timeline (event ends and arrival times).
_V2 = """
ALTER TABLE entries ADD COLUMN timeline BLOB
"""


class SchemaError(Exception):
    """The database cannot be used by this version of stasis."""


def schema_version(connection: sqlite3.Connection) -> int:
    """The version recorded in the database; 0 for an empty database."""
    has_meta = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(connection: sqlite3.Connection) -> None:
    """
    Bring the database to :data:`SCHEMA_VERSION` in one transaction.

    ``connection`` must be in autocommit mode (``isolation_level=None``).
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(connection)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the cache database has schema version {version}, newer than this "
                f"stasis understands ({SCHEMA_VERSION}); upgrade stasis"
            )
        if version < 1:
            for statement in _V1.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('secret', ?)",
                (secrets.token_bytes(32),),
            )
        if version < 2:
            connection.execute(_V2)
        # Written even when current: a read-only database must fail here, since
        # BEGIN IMMEDIATE alone succeeds on one.
        connection.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def check_version(connection: sqlite3.Connection) -> None:
    """Refuse a database that is not at :data:`SCHEMA_VERSION`, without writing to it."""
    version = schema_version(connection)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the cache database has schema version {version}, newer than this "
            f"stasis understands ({SCHEMA_VERSION}); upgrade stasis"
        )
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
