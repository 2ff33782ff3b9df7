"""
The cache database's schema: versioned SQL files, a folder per engine, applied in order.

``schema/<engine>/NNNN-name.sql`` brings a database from version NNNN - 1 to
NNNN. A ``meta`` table holds the version reached and the HMAC secret that
credential fingerprints are made with. The secret is created with the
database and never leaves it: whoever can read the database can already read
every answer in it, but cannot learn an API key from it.

Every engine's files end at :data:`SCHEMA_VERSION`, contiguous. They need not
start at 1: an engine added after the schema had a history (PostgreSQL, at
version 6) begins with one file creating the whole schema of its version,
which an empty database applies, and carries on from there like the others.

What is the same on every engine lives here (which files there are, which a
database at some version still needs, refusing a newer one); how a file is
cut into statements and run in one transaction is each engine's own
(:mod:`stasis.store._schema_sqlite`, :mod:`stasis.store._schema_postgres`).
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Sequence
from importlib import resources
from importlib.resources.abc import Traversable

from attrs import frozen

__all__ = [
    "SCHEMA_VERSION",
    "Migration",
    "SchemaError",
    "SchemaFiles",
    "new_secret",
    "packaged",
    "refuse_newer",
]

#: The version this stasis writes; each engine's files go up to it.
SCHEMA_VERSION = 7

_FILE_NAME = re.compile(r"(\d{4})-[\w-]+\.sql")


class SchemaError(Exception):
    """The database cannot be used by this version of stasis."""


@frozen
class Migration:
    """One schema file: what brings a database to ``version``."""

    version: int
    name: str
    #: The file's statements, cut as its engine runs them.
    statements: tuple[str, ...]


def refuse_newer(version: int, newest: int = SCHEMA_VERSION) -> None:
    """Refuse a database whose schema is newer than ``newest`` (made by a newer stasis)."""
    if version > newest:
        raise SchemaError(
            f"the cache database has schema version {version}, newer than this "
            f"stasis understands ({newest}); upgrade stasis"
        )


@frozen
class SchemaFiles:
    """
    One engine's schema files: a folder of ``NNNN-name.sql`` going up to ``newest``.

    The package's own are :func:`packaged`; a test may point one at a folder of
    its own (a later version's file beside them) to show a migration.
    """

    engine: str
    folder: Traversable
    #: How a file is cut into the statements its engine runs one by one.
    split: Callable[[str], Sequence[str]]
    newest: int = SCHEMA_VERSION

    def migrations(self) -> tuple[Migration, ...]:
        """Every file, in version order, checked to be contiguous up to :attr:`newest`."""
        return _read(self)

    def pending(self, version: int) -> tuple[Migration, ...]:
        """
        The migrations that bring a database at ``version`` (0: empty) to
        :attr:`newest`, in order; :class:`SchemaError` for one no file can bring there.
        """
        refuse_newer(version, self.newest)
        steps = self.migrations()
        oldest = steps[0].version - 1
        if 0 < version < oldest:
            raise SchemaError(
                f"the cache database has schema version {version}, older than any "
                f"this stasis can migrate on {self.engine} (from {oldest})"
            )
        return tuple(migration for migration in steps if migration.version > version)


@functools.cache
def _read(files: SchemaFiles) -> tuple[Migration, ...]:
    found = []
    for item in files.folder.iterdir():
        match = _FILE_NAME.fullmatch(item.name)
        if match is not None:
            statements = tuple(files.split(item.read_text(encoding="utf-8")))
            found.append(Migration(int(match.group(1)), item.name, statements))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if not versions or versions != list(range(versions[0], files.newest + 1)):
        # A broken installation, not a broken database: say what is missing.
        raise SchemaError(
            f"this stasis installation has schema files for versions {versions} of "
            f"{files.engine}, not a contiguous run up to {files.newest}; reinstall stasis"
        )
    return tuple(found)


def packaged(engine: str, split: Callable[[str], Sequence[str]]) -> SchemaFiles:
    """The schema files the package holds for ``engine`` (``schema/<engine>/``)."""
    return SchemaFiles(engine, resources.files("stasis.store").joinpath("schema", engine), split)


def new_secret() -> bytes:
    """A database's HMAC secret, made once when its schema is created."""
    return secrets.token_bytes(32)
